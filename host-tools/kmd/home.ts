// The KMD's home folder: configuration, the key supply, enrolled terminals (with their device
// keys), the outbox of sealed batches not yet on a carrier, and the station store. Folders are
// 0700 and files 0600 (secret-file.ts); every file is replaced atomically (fs-atomic.ts), so a
// crash leaves the old state or the new. Every change is made holding the home's lock
// (`kmd.lock` inside it, host-tools/lock.ts): one writer at a time, whatever the process.
import { DB_URL_FILE, checkDbUrl, openStationStore } from '../station/open-store.js';
import type { StationStoreKind } from '../station/open-store.js';
import { SQL_STORE_FILE, SqlStationStore } from '../station/sql-store.js';
import { existsSync, readdirSync, chmodSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../fs-atomic.js';
import { DamagedFileError, readJsonFile } from '../json-file.js';
import { lexists } from '../carrier/safe-file.js';
import { mkdirSecret, SECRET_DIR_MODE } from '../secret-file.js';
import { TERMINAL_ID_RE } from '../../firmware/crypto/_util.js';
import { FixedRateSupply } from './supply.js';
import type { KeySupply, SupplyLink } from './supply.js';
import { lock, lockSync, withLock, withLockSync } from '../lock.js';
import type { Lock, LockOptions } from '../lock.js';

export const KMD_FORMAT = 'qkt-kmd';

export interface KmdConfig {
  format: typeof KMD_FORMAT;
  version: 1;
  kmdId: string;
  createdAt: string;
  rateBitsPerSecond: number;
}

export interface TerminalRecord {
  terminalId: string;
  /** Hex of the 256-bit device key: the KMD's copy, as grid ESAM key systems keep theirs. */
  deviceKey: string;
  /** When this generation's device key was made. */
  enrolledAt: string;
  /**
   * Which device key the terminal holds: 1 at enrolment, one more at each re-enrolment of a
   * factory-reset module (`kmd enroll --again`); absent in records from before it (= 1).
   */
  generation?: number;
  flash?: string;
  /** Seq the next batch for this terminal gets (anti-rollback: strictly increasing). */
  nextSeq: number;
  /** Counter the next admin token gets. */
  nextAdminCounter: number;
  /** Full records: every batch not yet final, and the newest final ones (compact.ts). */
  batches: BatchRecord[];
  /** Final batches folded out of `batches` (compact.ts); absent until the first is. */
  pruned?: PrunedHistory;
}

/** What the record keeps of the final batches it no longer lists. */
export interface PrunedHistory {
  /** Voided batches folded out: how many, and their key bits. */
  void: { batches: number; bits: number };
  /** Collected batches folded out once the station retired them (keys used up). */
  collected: { batches: number; bits: number };
  /** Highest seq among them the terminal accepted (delivered): lower seqs are stale. */
  acceptedSeq: number;
  /** Highest seq among them: a receipt for a seq up to it may be for a folded batch. */
  maxSeq: number;
}

export interface BatchRecord {
  batchId: string;
  seq: number;
  bits: number;
  purpose: 'enc' | 'auth' | 'any';
  /** Where the key bits came from in the supply's output: never handed out twice. */
  supplyOffset: number;
  createdAt: string;
  /** Carrier the sealed batch went onto, once it did. */
  carrierId?: string;
  /** Set by `kmd collect` when a verified receipt came back: the station's keys are active. */
  deliveredAt?: string;
  /**
   * Set by `kmd void` (host-tools/kmd/void.ts): the batch will never be used. Written before its
   * outbox file and station keys go, so a cut part way is completed by the next void.
   */
  voidedAt?: string;
  /** Why, as given to `kmd void --reason` (lost-carrier, zeroized, stale, burned, reenrolled...). */
  voidReason?: string;
}

export class KmdError extends Error {
  constructor(
    message: string,
    readonly code: 'NO_HOME' | 'NO_FOLDER' | 'EXISTS' | 'NOT_ENROLLED' | 'ALREADY_ENROLLED' | 'BAD_ID' | 'BAD_INPUT' | 'NO_BATCH' | 'IN_USE' | 'LIVE_MODULE' | 'SUPPLY' | 'NO_ROOM' | 'CORRUPT',
  ) {
    super(message);
    this.name = 'KmdError';
  }
}

/**
 * A terminal or carrier id: the format's rule (1-32 of [A-Za-z0-9._-]), and never only dots, since
 * ids name files and folders in the KMD home, the station store and carriers.
 */
export function isId(id: unknown): id is string {
  return typeof id === 'string' && TERMINAL_ID_RE.test(id) && !/^\.+$/.test(id);
}

export function checkId(kind: string, id: string): string {
  if (!isId(id)) throw new KmdError(`${kind} id must be 1-32 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(id)}`, 'BAD_ID');
  return id;
}

/** Largest terminal record read (a decade of batches is far less: home.ts keeps it bounded). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

/** A JSON file of the home, read as json-file.ts reads (no link followed): KmdError CORRUPT naming it. */
function readHomeJson(file: string, maxBytes: number): unknown {
  try {
    return readJsonFile(file, maxBytes);
  } catch (e) {
    if (e instanceof DamagedFileError) throw new KmdError(e.message, 'CORRUPT');
    throw e;
  }
}

const isNat = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
const isStr = (v: unknown): boolean => typeof v === 'string';

/** What is wrong with `v` as the record of terminal `id` (a field name), or undefined. Never its values. */
function recordFault(v: unknown, id: string): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const r = v as Record<string, unknown>;
  if (r['terminalId'] !== id) return 'terminalId does not match its file name';
  if (typeof r['deviceKey'] !== 'string' || !/^[0-9a-f]{64}$/.test(r['deviceKey'])) return 'deviceKey';
  if (!isStr(r['enrolledAt'])) return 'enrolledAt';
  if (r['generation'] !== undefined && !isNat(r['generation'])) return 'generation';
  if (r['flash'] !== undefined && !isStr(r['flash'])) return 'flash';
  if (!isNat(r['nextSeq'])) return 'nextSeq';
  if (!isNat(r['nextAdminCounter'])) return 'nextAdminCounter';
  if (!Array.isArray(r['batches'])) return 'batches';
  if (r['pruned'] !== undefined) {
    const p = r['pruned'] as Record<string, unknown> | null;
    if (typeof p !== 'object' || p === null || !isNat(p['acceptedSeq']) || !isNat(p['maxSeq'])) return 'pruned';
    for (const k of ['void', 'collected']) {
      const c = p[k] as Record<string, unknown> | null;
      if (typeof c !== 'object' || c === null || !isNat(c['batches']) || !isNat(c['bits'])) return `pruned.${k}`;
    }
  }
  for (const [i, b] of (r['batches'] as unknown[]).entries()) {
    if (typeof b !== 'object' || b === null) return `batches[${i}]`;
    const x = b as Record<string, unknown>;
    if (typeof x['batchId'] !== 'string' || !/^[0-9a-f]{32}$/.test(x['batchId'])) return `batches[${i}].batchId`;
    for (const k of ['seq', 'bits', 'supplyOffset']) if (!isNat(x[k])) return `batches[${i}].${k}`;
    if (!isStr(x['createdAt'])) return `batches[${i}].createdAt`;
    for (const k of ['carrierId', 'deliveredAt', 'voidedAt', 'voidReason']) if (x[k] !== undefined && !isStr(x[k])) return `batches[${i}].${k}`;
  }
  return undefined;
}

/** The lock on a KMD home: held by whatever changes its files, only for that change. */
export function homeLockOptions(dir: string): LockOptions {
  return { what: `KMD home ${dir}`, file: join(dir, 'kmd.lock') };
}

/**
 * The lock `qkt kmd serve` holds for its life: one KMD service per home, the one writer of the
 * ETSI 014 key store (sae-keys.json, kept in its RAM). Fails at once when another serve runs.
 */
export function serveLockOptions(dir: string): LockOptions {
  return { what: `KMD service of ${dir}`, file: join(dir, 'serve.lock'), waitMs: 0 };
}

export interface KmdInitOptions {
  rateBitsPerSecond: number;
  stockBits?: number;
  capacityBits?: number;
  link?: SupplyLink;
  stationStore?: StationStoreKind;
  /** The PostgreSQL database of a 'postgres' station store (postgres://user:password@host:port/db). */
  stationDb?: string;
  now?: () => number;
}

export class KmdHome {
  private constructor(
    readonly dir: string,
    readonly config: KmdConfig,
    private readonly now: () => number,
  ) {}

  /**
   * `stockBits`: key already accrued from the QKD link when the KMD starts (default none); `link`:
   * the QKD link model the rate comes from, recorded in supply.json (default a fixed rate).
   */
  /**
   * `capacityBits`: the supply's buffer (default 2^30 bits); a fleet's stock may need more.
   * `stationStore`: the kind of station store (default 'files', a pool image per terminal;
   * 'sqlite', one database file for a fleet; 'postgres', the database `stationDb` names).
   */
  static init(dir: string, o: KmdInitOptions): KmdHome {
    const abs = resolve(dir);
    if (existsSync(join(abs, 'kmd.json'))) throw new KmdError(`${abs} already holds a KMD`, 'EXISTS');
    // A PostgreSQL store's server must answer (and take its tables) before anything is made here.
    if (o.stationStore === 'postgres') new SqlStationStore(join(abs, 'station'), { url: checkDbUrl(o.stationDb ?? '') }).close();
    mkdirSecret(abs);
    chmodSync(abs, SECRET_DIR_MODE);
    return withLockSync(abs, homeLockOptions(abs), () => KmdHome.initLocked(abs, o));
  }

  private static initLocked(abs: string, o: KmdInitOptions): KmdHome {
    if (existsSync(join(abs, 'kmd.json'))) throw new KmdError(`${abs} already holds a KMD`, 'EXISTS');
    for (const d of ['terminals', 'carriers', 'outbox', 'station']) mkdirSecret(join(abs, d));
    if (o.stationStore === 'sqlite' || o.stationStore === 'postgres') openStationStore(join(abs, 'station'), { create: o.stationStore, ...(o.stationDb !== undefined ? { url: o.stationDb } : {}) }).close();
    const now = o.now ?? Date.now;
    const config: KmdConfig = {
      format: KMD_FORMAT,
      version: 1,
      kmdId: `kmd-${randomBytes(4).toString('hex')}`,
      createdAt: new Date(now()).toISOString(),
      rateBitsPerSecond: o.rateBitsPerSecond,
    };
    const stockMs = ((o.stockBits ?? 0) / o.rateBitsPerSecond) * 1000;
    FixedRateSupply.create(join(abs, 'supply.json'), { rateBitsPerSecond: o.rateBitsPerSecond, startedAtMs: now() - stockMs, ...(o.capacityBits ? { capacityBits: o.capacityBits } : {}), ...(o.link ? { link: o.link } : {}) });
    writeFileAtomic(join(abs, 'kmd.json'), JSON.stringify(config, null, 2) + '\n');
    return new KmdHome(abs, config, now);
  }

  static open(dir: string, o: { now?: () => number } = {}): KmdHome {
    const abs = resolve(dir);
    const file = join(abs, 'kmd.json');
    if (!existsSync(file)) throw new KmdError(`no KMD in ${abs} (run qkt kmd init --home ${dir})`, 'NO_HOME');
    const config = readHomeJson(file, 64 * 1024) as KmdConfig | undefined;
    if (typeof config !== 'object' || config === null || config.format !== KMD_FORMAT || typeof config.kmdId !== 'string') throw new KmdError(`${file} is not a qkt KMD configuration`, 'CORRUPT');
    return new KmdHome(abs, config, o.now ?? Date.now);
  }

  /** Hold the home's lock for a synchronous change (re-entrant: nested changes share it). */
  lockedSync<T>(fn: () => T): T {
    return withLockSync(this.dir, homeLockOptions(this.dir), fn);
  }

  /** Hold the home's lock across an asynchronous change (a CLI command: one change per process). */
  locked<T>(fn: () => T | Promise<T>): Promise<T> {
    return withLock(this.dir, homeLockOptions(this.dir), fn);
  }

  /** Take the home's lock (async wait); the caller releases it. */
  lock(): Promise<Lock> {
    return lock(this.dir, homeLockOptions(this.dir));
  }

  /** Take the home's lock (blocking wait); the caller releases it. */
  lockSync(): Lock {
    return lockSync(this.dir, homeLockOptions(this.dir));
  }

  supply(): KeySupply & FixedRateSupply {
    return new FixedRateSupply(join(this.dir, 'supply.json'), this.now);
  }

  nowIso(): string {
    return new Date(this.now()).toISOString();
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  terminalIds(): string[] {
    return readdirSync(this.path('terminals'))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -5))
      .sort();
  }

  hasTerminal(id: string): boolean {
    // lstat: a link or anything else by that name counts (terminal() then says it is damaged).
    return lexists(this.path('terminals', `${checkId('terminal', id)}.json`));
  }

  /** The terminal's record: KmdError CORRUPT, naming the file, if it is not a regular file holding one. */
  terminal(id: string): TerminalRecord {
    const file = this.path('terminals', `${checkId('terminal', id)}.json`);
    const v = readHomeJson(file, MAX_RECORD_BYTES);
    if (v === undefined) throw new KmdError(`terminal ${id} is not enrolled at this KMD (qkt kmd enroll --home ${this.dir} --terminal ${id} --flash FILE enrols it; qkt kmd status --home ${this.dir} lists those enrolled)`, 'NOT_ENROLLED');
    const bad = recordFault(v, id);
    if (bad !== undefined) throw new KmdError(`${file}: not a terminal record (${bad})`, 'CORRUPT');
    return v as TerminalRecord;
  }

  saveTerminal(t: TerminalRecord): void {
    writeFileAtomic(this.path('terminals', `${checkId('terminal', t.terminalId)}.json`), JSON.stringify(t, null, 2) + '\n');
  }

  /**
   * The files of this home that hold secrets, as they are now: terminal records (device keys),
   * carrier records (carrier keys), sealed batches in the outbox, the station's key pools and
   * inbox, the ETSI 014 key store and the private keys of the PKI. Certificates, kmd.json and
   * the supply account are not secret.
   */
  secretFiles(): string[] {
    const list = (...parts: string[]): string[] => {
      try {
        return readdirSync(this.path(...parts)).map((f) => this.path(...parts, f));
      } catch {
        return [];
      }
    };
    const files = [
      ...list('terminals').filter((f) => f.endsWith('.json')),
      ...list('carriers').filter((f) => f.endsWith('.json')),
      ...list('outbox').filter((f) => f.endsWith('.qkb')),
      ...list('station').map((d) => join(d, 'pool.img')),
      ...[SQL_STORE_FILE, `${SQL_STORE_FILE}-wal`, `${SQL_STORE_FILE}-shm`, DB_URL_FILE].map((f) => this.path('station', f)),
      this.path('station', 'inbox.jsonl'),
      this.path('sae-keys.json'),
      ...list('pki').filter((f) => f.endsWith('.key')),
      ...list('pki', 'sae').filter((f) => f.endsWith('.key')),
      ...list('pki', 'station').filter((f) => f.endsWith('.key')),
    ];
    return files.filter((f) => existsSync(f));
  }

  /** The device key as bytes; the caller wipes it after use. */
  deviceKey(id: string): Uint8Array {
    return new Uint8Array(Buffer.from(this.terminal(id).deviceKey, 'hex'));
  }
}
