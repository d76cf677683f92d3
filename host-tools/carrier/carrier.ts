// The offline key carrier (DESIGN.md "The parts"; docs/carrier.md): a folder or a mounted USB drive
// that takes sealed batches from the KMD to terminals and brings their delivery receipts back.
//
// Layout (all under the carrier folder; docs/carrier.md has the crash-safety argument):
//   carrier.json                              manifest: { format: "qkt-carrier", version: 1, carrierId, kmdId, created }
//   batches/<terminalId>-<batchIdHex>.qkb     one sealed batch (docs/batch.md), exactly as the KMD sealed it
//   receipts/<terminalId>-<batchIdHex>.qkr    the delivery receipt the port returned for that batch (encodeReceipt form)
//   quarantine/<id>-<digest16>.qkr            receipts the KMD found false (kept for a human; never read again)
//   journal.jsonl                             append-only event log: created, loaded, injected, delivered, rejected, collected, wiped
//
// The files are the truth: a batch is pending while its .qkb is whole and it has no .qkr; it is
// delivered (unverified) once its .qkr exists. The carrier cannot check a receipt's MAC (it is
// under the terminal's device key), so the ciphertext stays until the KMD has verified the receipt
// (`qkt kmd collect`: markCollected wipes it) or found it false (rejectReceipt quarantines the
// receipt and the batch is offered again). The journal records history and the KMD's verdicts.
// Every write is write-temp, fsync, rename, fsync folder (host-tools/fs-atomic.ts), so a pulled
// drive holds each file whole or not at all.
import { closeSync, fsyncSync, lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, statSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { parseSealedHeader, BatchError, HEADER_FIXED_BYTES, MAX_BATCH_BITS, TAG_BYTES } from '../../firmware/crypto/batch.js';
import type { Purpose, SealedHeaderInfo } from '../../firmware/crypto/batch.js';
import { decodeReceipt, CryptoFormatError } from '../../firmware/crypto/receipt.js';
import type { Receipt } from '../../firmware/crypto/receipt.js';
import { fsyncDir, writeFileAtomic } from '../fs-atomic.js';
import { formatBits } from '../units.js';
import { isId } from '../kmd/home.js';
import { CarrierError } from './errors.js';
import { Journal } from './journal.js';
import { lexists, lstatRegular, openRegular, RDWR_FLAGS, readCapped, readHeadCapped, UnsafeFileError } from './safe-file.js';
import type { JournalRecord } from './journal.js';
import { InputError } from '../input-error.js';
import { printable } from '../peer-text.js';

export { CarrierError } from './errors.js';
export type { CarrierErrorCode } from './errors.js';
export type { JournalEvent, JournalRecord, JournalContents } from './journal.js';

export const CARRIER_FORMAT = 'qkt-carrier';
export const CARRIER_VERSION = 1;
export const MANIFEST_FILE = 'carrier.json';
export const BATCH_DIR = 'batches';
export const RECEIPT_DIR = 'receipts';
export const QUARANTINE_DIR = 'quarantine';
export const JOURNAL_FILE = 'journal.jsonl';
/** The lock of the one process writing this carrier (host-tools/cli/carrier-open.ts, host-tools/lock.ts). */
export const LOCK_FILE = '.qkt.lock';
export const BATCH_EXT = '.qkb';
export const RECEIPT_EXT = '.qkr';

const BATCH_ID_HEX_RE = /^[0-9a-f]{32}$/;
/** `<terminalId>-<batchIdHex>`: the terminal id may contain '-', the batch id is the last 32 hex digits. */
const FILE_ID_RE = /^([A-Za-z0-9._-]{1,32})-([0-9a-f]{32})$/;

/**
 * A file stem `<terminalId>-<batchIdHex>` split, or undefined: the terminal id must pass the KMD's
 * id rule (isId: never only dots), since the stem names files here and ids at the KMD.
 */
function parseFileId(id: string): { terminalId: string; batchId: string } | undefined {
  const m = FILE_ID_RE.exec(id);
  if (!m || !isId(m[1])) return undefined;
  return { terminalId: m[1], batchId: m[2]! };
}
/** fs-atomic's temporary names: `.<name>.tmp-<pid>`. */
const TMP_RE = /^\..+\.tmp-(\d+)$/;
/** The longest header plus its tag: enough to parse any header without reading the ciphertext. */
const HEAD_READ_BYTES = HEADER_FIXED_BYTES + 255 + TAG_BYTES;
// Size caps for what the carrier reads (docs/carrier.md "A hostile drive"): a bigger file is damaged
// and is never read whole.
/** The longest encoded receipt: 62 fixed + 32 terminal id + 1 count + 32 live ids of 16 + 32 MAC. */
export const RECEIPT_MAX_BYTES = 639;
/** The longest sealed batch: the longest header and its tag, the most key bytes, one tag per key byte (chunkSize 1). */
export const SEALED_MAX_BYTES = HEAD_READ_BYTES + (MAX_BATCH_BITS / 8) * (1 + TAG_BYTES);
/** carrier.json is a few short fields (about 150 bytes). */
export const MANIFEST_MAX_BYTES = 4096;
/**
 * Entries a formatted drive carries on its own; a fresh USB stick is still "empty" with them.
 * ext4 makes lost+found; Windows, macOS and desktop Linux drop the others on removable media.
 */
const FOREIGN_ENTRIES = new Set(['lost+found', 'System Volume Information', '$RECYCLE.BIN', '.Spotlight-V100', '.fseventsd', '.Trashes', '.DS_Store']);

export interface CarrierManifest {
  format: typeof CARRIER_FORMAT;
  version: typeof CARRIER_VERSION;
  carrierId: string;
  /** The KMD that initialised (loads) this carrier; `qkt kmd collect` checks it. */
  kmdId: string;
  /** ISO 8601, UTC. */
  created: string;
}

/** A whole, valid sealed batch waiting for its terminal. */
export interface BatchEntry {
  /** `<terminalId>-<batchIdHex>`: the file stem, shared with the receipt. */
  id: string;
  terminalId: string;
  /** 32 lowercase hex digits. */
  batchId: string;
  seq: number;
  bits: number;
  purpose: Purpose;
  /** Absolute path of the .qkb file. */
  file: string;
  /** File size in bytes (equal to the layout's totalLength). */
  bytes: number;
}

/** A file under batches/ or receipts/ that is not whole and valid: never offered, kept for a human to look at. */
export interface DamagedEntry {
  file: string;
  bytes: number;
  reason: string;
}

/**
 * A batch with a receipt on the carrier. `unverified`: the receipt is stored, the batch is not
 * offered again, and its ciphertext is kept until the KMD verifies the receipt (`qkt kmd collect`).
 * `collected`: the KMD verified it; the ciphertext is wiped.
 */
export interface DeliveredEntry {
  id: string;
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  state: 'unverified' | 'collected';
  /** True once the KMD took the receipt (markCollected). */
  collected: boolean;
  /** Sealed bytes of this batch still on the carrier (0 once wiped). */
  ciphertextBytes: number;
  /** Absolute path of the .qkr file. */
  receiptFile: string;
}

/** A receipt the KMD found false (rejectReceipt): moved aside, its batch offered again. */
export interface QuarantinedEntry {
  /** `<terminalId>-<batchIdHex>` of the batch it claimed. */
  id: string;
  file: string;
  /** Why the KMD rejected it (from the journal), when known. */
  reason?: string;
}

/** A receipt for the KMD (`qkt kmd collect`), as stored: decodeReceipt + verifyReceipt it there. */
export interface ReceiptEntry {
  id: string;
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  file: string;
  receipt: Uint8Array;
}

export interface ScanReport {
  pending: BatchEntry[];
  delivered: DeliveredEntry[];
  quarantined: QuarantinedEntry[];
  damaged: DamagedEntry[];
  /** What this scan finished or cleaned up after an interruption (human-readable, no secrets). */
  repaired: string[];
}

export interface CarrierStatus {
  carrierId: string;
  kmdId: string;
  created: string;
  formatVersion: number;
  path: string;
  /** Pending batches, lowest seq first per terminal. */
  batches: BatchEntry[];
  delivered: DeliveredEntry[];
  /** Receipts on the carrier that the KMD has not collected yet. */
  receiptsPending: number;
  /** Receipts the KMD rejected, moved to quarantine/ (their batches are pending again). */
  quarantined: QuarantinedEntry[];
  /** Sealed bytes the carrier holds: pending batches and delivered ones awaiting collect. */
  sealedBytes: number;
  damaged: DamagedEntry[];
  journal: { events: number; skippedLines: number };
  /** Free bytes for an unprivileged writer (statfs); absent where statfs fails. */
  bytesFree?: number;
}

export type AddOutcome =
  /** Written now. */
  | 'added'
  /** The same bytes were already there (a re-run of a load). */
  | 'present'
  /** A damaged file with this name was there (a non-atomic writer died): replaced. */
  | 'replaced-damaged'
  /** The batch was delivered already (its receipt is here): nothing written, it is never offered again. */
  | 'delivered';

export type AddBatchResult = BatchEntry & { outcome: AddOutcome };

export type RecordOutcome = 'recorded' | 'present';

export type RecordReceiptResult = DeliveredEntry & { outcome: RecordOutcome };

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function aid(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string`);
  if (!isId(value)) throw new InputError(`${name} must be 1-32 chars of [A-Za-z0-9._-], not only dots`);
  return value;
}

function abatchIdHex(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string`);
  const v = value.toLowerCase();
  if (!BATCH_ID_HEX_RE.test(v)) throw new InputError(`${name} must be 32 hex digits`);
  return v;
}

function abytes(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  return value;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** A process id that still runs here: its temporary file may be a write in progress. */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Overwrite with zeros, fsync, unlink, fsync the folder: the ciphertext does not outlive delivery. */
function wipeFile(path: string): void {
  // O_NOFOLLOW and an fstat of the open fd: a link or FIFO swapped in after scan()'s lstat is refused.
  const { fd, size } = openRegular(path, RDWR_FLAGS, SEALED_MAX_BYTES);
  try {
    const zeros = new Uint8Array(Math.min(size, 1 << 16));
    let off = 0;
    while (off < size) off += writeSync(fd, zeros, 0, Math.min(zeros.length, size - off), off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  unlinkSync(path);
  fsyncDir(resolve(path, '..'));
}

/** Check a sealed batch's header and whole length; the reason names what is wrong. */
function checkSealed(bytes: Uint8Array, size: number): { info: SealedHeaderInfo } | { reason: string } {
  let info: SealedHeaderInfo;
  try {
    info = parseSealedHeader(bytes);
  } catch (e) {
    if (e instanceof BatchError) return { reason: `header does not parse (${e.code}: ${e.message})` };
    throw e;
  }
  // A file cut short (or padded) would pass the header check: the layout fixes the whole length.
  if (size !== info.totalLength) return { reason: `${size} bytes, but its header says ${info.totalLength}` };
  return { info };
}

function entryOf(info: SealedHeaderInfo, file: string): BatchEntry {
  const batchId = hex(info.header.batchId);
  return {
    id: `${info.header.terminalId}-${batchId}`,
    terminalId: info.header.terminalId,
    batchId,
    seq: info.header.seq,
    bits: info.header.bits,
    purpose: info.header.purpose,
    file,
    bytes: info.totalLength,
  };
}

function byTerminalThenSeq(a: { terminalId: string; seq: number; batchId: string }, b: typeof a): number {
  if (a.terminalId !== b.terminalId) return a.terminalId < b.terminalId ? -1 : 1;
  if (a.seq !== b.seq) return a.seq - b.seq;
  return a.batchId < b.batchId ? -1 : a.batchId > b.batchId ? 1 : 0;
}

function readManifest(dir: string): CarrierManifest {
  const path = join(dir, MANIFEST_FILE);
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new CarrierError('NOT_FOUND', `${dir}: no such folder; is the drive mounted?`);
  }
  if (!st.isDirectory()) throw new CarrierError('NOT_A_CARRIER', `${dir}: not a folder`);
  let text: Uint8Array | undefined;
  try {
    text = readCapped(path, MANIFEST_MAX_BYTES);
  } catch (e) {
    if (e instanceof UnsafeFileError) throw new CarrierError('UNSAFE_FILE', `${path}: ${e.reason}; refusing to open this carrier`);
    throw e;
  }
  if (text === undefined) throw new CarrierError('NOT_A_CARRIER', `${dir}: not a carrier (no ${MANIFEST_FILE}); is the drive mounted?`);
  let m: unknown;
  try {
    m = JSON.parse(Buffer.from(text).toString('utf8'));
  } catch {
    throw new CarrierError('CORRUPT', `${path}: manifest is not valid JSON`);
  }
  if (m === null || typeof m !== 'object') throw new CarrierError('CORRUPT', `${path}: manifest is not an object`);
  const o = m as Record<string, unknown>;
  if (o['format'] !== CARRIER_FORMAT) throw new CarrierError('CORRUPT', `${path}: format is not "${CARRIER_FORMAT}"`);
  if (o['version'] !== CARRIER_VERSION) {
    throw new CarrierError('UNSUPPORTED_VERSION', `${path}: carrier format version ${String(o['version'])} not supported (this qkt reads ${CARRIER_VERSION})`);
  }
  for (const k of ['carrierId', 'kmdId'] as const) {
    if (typeof o[k] !== 'string' || !isId(o[k])) throw new CarrierError('CORRUPT', `${path}: ${k} missing or malformed`);
  }
  if (typeof o['created'] !== 'string') throw new CarrierError('CORRUPT', `${path}: created missing`);
  return { format: CARRIER_FORMAT, version: CARRIER_VERSION, carrierId: o['carrierId'] as string, kmdId: o['kmdId'] as string, created: o['created'] };
}

/**
 * What the journal says happened to each id; scan() uses it to write only the missing lines. Read
 * in order: a `rejected` line clears the id's delivery, so a later true receipt is journalled anew.
 * Ids from the journal are only looked up, never made into paths (the journal is a carrier file).
 */
interface JournalState {
  loaded: Set<string>;
  injected: Set<string>;
  delivered: Set<string>;
  wiped: Set<string>;
  collected: Set<string>;
  /** Per id, the receipts (hex) the KMD rejected, with the quarantine file and reason. */
  rejected: Map<string, Array<{ receipt: string; file: string; reason: string }>>;
}

function journalState(records: JournalRecord[]): JournalState {
  const s: JournalState = { loaded: new Set(), injected: new Set(), delivered: new Set(), wiped: new Set(), collected: new Set(), rejected: new Map() };
  for (const r of records) {
    if (r.event === 'collected') {
      if (Array.isArray(r.ids)) for (const id of r.ids) s.collected.add(String(id));
    } else if (r.event === 'rejected') {
      if (typeof r.id !== 'string' || typeof r.receipt !== 'string') continue;
      s.injected.delete(r.id);
      s.delivered.delete(r.id);
      const list = s.rejected.get(r.id) ?? [];
      list.push({ receipt: r.receipt, file: String(r.file), reason: String(r.reason) });
      s.rejected.set(r.id, list);
    } else if ((r.event === 'loaded' || r.event === 'injected' || r.event === 'delivered' || r.event === 'wiped') && typeof r.id === 'string') {
      s[r.event].add(r.id);
    }
  }
  return s;
}

/** The quarantine name of a rejected receipt: fixed by its bytes, so a re-run move lands on the same name. */
function quarantineName(id: string, receipt: Uint8Array): string {
  return `${id}-${hex(sha256(receipt).subarray(0, 8))}${RECEIPT_EXT}`;
}

/**
 * Undo a carrier made by a load that then failed before it held anything (docs/carrier.md "Made
 * only when told"): the manifest first (what makes the folder a carrier), then the journal and the
 * empty batches/ and receipts/ (temporaries included), and the folder itself if `folder` is set
 * (the load made it) and nothing else is left in it. Anything else on it (a batch, a receipt, a
 * token, a key) keeps the carrier as it is: returns false. Also cleans up after an init that
 * failed part way (no manifest yet).
 */
export function removeNewCarrier(dir: string, o: { folder: boolean }): boolean {
  const path = resolve(dir);
  const ours = new Set([MANIFEST_FILE, JOURNAL_FILE, BATCH_DIR, RECEIPT_DIR]);
  let names: string[];
  try {
    names = readdirSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw e;
  }
  // What a formatted drive carries and the lock of the running command stay; they are not ours.
  const kept = (name: string) => FOREIGN_ENTRIES.has(name) || name.startsWith('.Trash-') || name === LOCK_FILE;
  for (const name of names) {
    if (!ours.has(name) && !TMP_RE.test(name) && !kept(name)) return false;
    if ((name === BATCH_DIR || name === RECEIPT_DIR) && lstatSync(join(path, name)).isDirectory()) {
      if (!readdirSync(join(path, name)).every((n) => TMP_RE.test(n))) return false;
    }
  }
  if (lexists(join(path, MANIFEST_FILE))) {
    unlinkSync(join(path, MANIFEST_FILE));
    fsyncDir(path);
  }
  for (const name of names) {
    if (name === MANIFEST_FILE || kept(name)) continue;
    const p = join(path, name);
    if (lstatSync(p).isDirectory()) {
      for (const n of readdirSync(p)) unlinkSync(join(p, n));
      rmdirSync(p);
    } else {
      unlinkSync(p);
    }
  }
  if (o.folder && !names.some(kept)) rmdirSync(path);
  return true;
}

export class Carrier {
  /** Absolute path of the carrier folder. */
  readonly path: string;
  readonly manifest: CarrierManifest;
  private readonly journal: Journal;

  private constructor(path: string, manifest: CarrierManifest) {
    this.path = path;
    this.manifest = manifest;
    this.journal = new Journal(join(path, JOURNAL_FILE));
  }

  get carrierId(): string {
    return this.manifest.carrierId;
  }

  get kmdId(): string {
    return this.manifest.kmdId;
  }

  /**
   * Make `dir` a carrier (created if missing). Refuses a folder holding anything but what a
   * freshly formatted drive or an interrupted init leaves. On an existing carrier with the same ids
   * it just opens it, so a killed init can be re-run; other ids are EXISTS.
   */
  static init(dir: string, options: { carrierId: string; kmdId: string }): Carrier {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a non-empty string');
    if (options === null || typeof options !== 'object') throw new TypeError('options must be { carrierId, kmdId }');
    const carrierId = aid(options.carrierId, 'carrierId');
    const kmdId = aid(options.kmdId, 'kmdId');
    const path = resolve(dir);
    mkdirSync(path, { recursive: true });
    if (lexists(join(path, MANIFEST_FILE))) {
      const c = Carrier.open(path);
      if (c.carrierId !== carrierId || c.kmdId !== kmdId) {
        throw new CarrierError('EXISTS', `${path} is already carrier ${c.carrierId} of KMD ${c.kmdId}`);
      }
      return c;
    }
    for (const name of readdirSync(path)) {
      if (FOREIGN_ENTRIES.has(name) || name.startsWith('.Trash-') || name === JOURNAL_FILE || name === LOCK_FILE || name.startsWith(`${LOCK_FILE}.takeover-`) || TMP_RE.test(name)) continue;
      // An init killed after mkdir leaves these, empty: take them over.
      if ((name === BATCH_DIR || name === RECEIPT_DIR) && lstatSync(join(path, name)).isDirectory()) {
        if (readdirSync(join(path, name)).every((n) => TMP_RE.test(n))) continue;
      }
      throw new CarrierError('NOT_EMPTY', `${path} is not empty and not a carrier (found ${JSON.stringify(name)})`);
    }
    mkdirSync(join(path, BATCH_DIR), { recursive: true });
    mkdirSync(join(path, RECEIPT_DIR), { recursive: true });
    fsyncDir(path);
    const journal = new Journal(join(path, JOURNAL_FILE));
    journal.repair();
    journal.append({ event: 'created', carrierId, kmdId });
    const manifest: CarrierManifest = { format: CARRIER_FORMAT, version: CARRIER_VERSION, carrierId, kmdId, created: new Date().toISOString() };
    // The manifest goes last: its presence is what makes the folder a carrier.
    writeFileAtomic(join(path, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, 0o644);
    return new Carrier(path, manifest);
  }

  /** Open an existing carrier and finish whatever an interruption left half done (see scan()). */
  static open(dir: string): Carrier {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a non-empty string');
    const path = resolve(dir);
    const c = new Carrier(path, readManifest(path));
    for (const sub of [BATCH_DIR, RECEIPT_DIR]) {
      const p = join(path, sub);
      let st;
      try {
        st = lstatSync(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        mkdirSync(p);
        fsyncDir(path);
        continue;
      }
      // A symlinked batches/ would make the wipe zero files outside the carrier.
      if (!st.isDirectory()) {
        throw new CarrierError('UNSAFE_FILE', `${p}: ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder'}; refusing to open this carrier`);
      }
    }
    c.checkQuarantineDir();
    c.scan();
    return c;
  }

  private batchPath(id: string): string {
    return join(this.path, BATCH_DIR, id + BATCH_EXT);
  }

  private receiptPath(id: string): string {
    return join(this.path, RECEIPT_DIR, id + RECEIPT_EXT);
  }

  /**
   * Store one sealed batch. Checks the header and the whole length against its layout, writes
   * crash-safely, journals `loaded`. Idempotent: the same bytes again are `present`; a batch whose
   * receipt is already here is `delivered` and not written back.
   */
  addBatch(sealed: Uint8Array): AddBatchResult {
    abytes(sealed, 'sealed');
    const check = checkSealed(sealed, sealed.length);
    if ('reason' in check) throw new CarrierError('BAD_BATCH', `not a whole sealed batch: ${check.reason}`);
    // The id rule allows a leading '.', but scan() skips hidden names (temporaries, macOS ._ files):
    // such a batch would be stored and never offered. Refused up front instead (property test, issue 8).
    if (check.info.header.terminalId.startsWith('.')) {
      throw new CarrierError('BAD_BATCH', `terminal id ${check.info.header.terminalId} starts with ".": a carrier cannot hold its batches (hidden file names)`);
    }
    const file = this.batchPath(entryOf(check.info, '').id);
    const entry = entryOf(check.info, file);
    const state = journalState(this.journal.read().records);
    if (lexists(this.receiptPath(entry.id))) {
      // Delivered before: make sure the ciphertext is gone and say so; never offer it again.
      this.scan();
      return { ...entry, outcome: 'delivered' };
    }
    let outcome: AddOutcome = 'added';
    let old: Uint8Array | undefined;
    let unsafe = false;
    try {
      old = readCapped(file, SEALED_MAX_BYTES);
    } catch (e) {
      // A symlink, FIFO or oversize file under the name: never read, replaced by the rename below
      // (which replaces the link itself, not its target).
      if (!(e instanceof UnsafeFileError)) throw e;
      unsafe = true;
    }
    if (unsafe) {
      outcome = 'replaced-damaged';
    } else if (old !== undefined) {
      if (equalBytes(old, sealed)) {
        outcome = 'present';
      } else {
        const oldCheck = checkSealed(old, old.length);
        if ('info' in oldCheck && entryOf(oldCheck.info, file).id === entry.id) {
          // Two valid batches with one batch id: the KMD must draw a new id per seal (docs/batch.md, nonces).
          throw new CarrierError('CONFLICT', `${entry.id}: a different batch with this terminal and batch id is already on the carrier`);
        }
        outcome = 'replaced-damaged';
      }
    }
    if (outcome !== 'present') writeFileAtomic(file, sealed);
    // Journal after the file: a crash in between leaves a whole file and no line, and the re-run
    // (outcome 'present') writes the line.
    if (outcome !== 'present' || !state.loaded.has(entry.id)) {
      this.journal.append({ event: 'loaded', id: entry.id, terminalId: entry.terminalId, batchId: entry.batchId, seq: entry.seq, bits: entry.bits, bytes: entry.bytes });
    }
    return { ...entry, outcome };
  }

  /** Whole, valid, undelivered batches (all, or one terminal's), lowest seq first per terminal. */
  pending(terminalId?: string): BatchEntry[] {
    if (terminalId !== undefined) aid(terminalId, 'terminalId');
    const all = this.scan().pending;
    return terminalId === undefined ? all : all.filter((b) => b.terminalId === terminalId);
  }

  /** The batch to inject next into this terminal: its lowest-seq pending one. */
  batchFor(terminalId: string): BatchEntry | undefined {
    return this.pending(terminalId)[0];
  }

  /** The sealed bytes of a pending batch, checked again (the drive may have changed since scan()). */
  readBatch(entry: Pick<BatchEntry, 'id'>): Uint8Array {
    if (entry === null || typeof entry !== 'object' || typeof entry.id !== 'string' || !parseFileId(entry.id)) {
      throw new TypeError('entry must be a BatchEntry from pending()');
    }
    if (lexists(this.receiptPath(entry.id))) throw new CarrierError('UNKNOWN_BATCH', `${entry.id} was delivered already`);
    const file = this.batchPath(entry.id);
    let bytes: Uint8Array | undefined;
    try {
      bytes = readCapped(file, SEALED_MAX_BYTES);
    } catch (e) {
      if (e instanceof UnsafeFileError) throw new CarrierError('DAMAGED_BATCH', `${entry.id} is damaged: ${e.reason}`);
      throw e;
    }
    if (bytes === undefined) throw new CarrierError('UNKNOWN_BATCH', `${entry.id} is not on the carrier`);
    const check = checkSealed(bytes, bytes.length);
    if ('reason' in check || entryOf(check.info, file).id !== entry.id) {
      throw new CarrierError('DAMAGED_BATCH', `${entry.id} is damaged: ${'reason' in check ? check.reason : 'its header names another batch'}`);
    }
    return bytes;
  }

  /**
   * The port returned a receipt for a batch: store it and journal `injected` and `delivered`. The
   * batch is not offered again, but its ciphertext stays: the receipt's MAC is under the terminal's
   * device key, which only the KMD holds, so anything on the port could have made it up. The KMD
   * verifies it at collect and then wipes (markCollected) or brings the batch back (rejectReceipt).
   * The receipt must name this batch (terminal, id, seq, bits, header digest). Re-recording the
   * same receipt finishes an interrupted call; a different one is ALREADY_DELIVERED; one the KMD
   * already rejected is BAD_RECEIPT.
   */
  recordReceipt(terminalId: string, batchIdHex: string, receiptBytes: Uint8Array): RecordReceiptResult {
    aid(terminalId, 'terminalId');
    const batchId = abatchIdHex(batchIdHex, 'batchIdHex');
    abytes(receiptBytes, 'receiptBytes');
    const id = `${terminalId}-${batchId}`;
    let receipt: Receipt;
    try {
      receipt = decodeReceipt(receiptBytes);
    } catch (e) {
      if (e instanceof CryptoFormatError) throw new CarrierError('BAD_RECEIPT', `${id}: ${e.message}`);
      throw e;
    }
    if (receipt.terminalId !== terminalId || hex(receipt.batchId) !== batchId) {
      throw new CarrierError('BAD_RECEIPT', `${id}: the receipt is for ${receipt.terminalId}-${hex(receipt.batchId)}`);
    }
    const rfile = this.receiptPath(id);
    if (lexists(rfile)) {
      let stored: Uint8Array | undefined;
      try {
        stored = readCapped(rfile, RECEIPT_MAX_BYTES);
      } catch (e) {
        if (e instanceof UnsafeFileError) throw new CarrierError('ALREADY_DELIVERED', `${id} has a damaged receipt on the carrier (${e.reason})`);
        throw e;
      }
      if (stored === undefined || !equalBytes(stored, receiptBytes)) {
        const collected = journalState(this.journal.read().records).collected.has(id);
        throw new CarrierError(
          'ALREADY_DELIVERED',
          collected
            ? `${id} was delivered already (the KMD verified its receipt)`
            : `${id} holds another receipt, not yet verified: run qkt kmd collect --carrier ${this.path}; if the KMD rejects it, the batch is offered again`,
        );
      }
      this.scan();
      return { ...this.deliveredEntry(id, receipt, journalState(this.journal.read().records)), outcome: 'present' };
    }
    const before = journalState(this.journal.read().records);
    const rx = hex(receiptBytes);
    if (before.rejected.get(id)?.some((r) => r.receipt === rx)) {
      throw new CarrierError('BAD_RECEIPT', `${id}: the KMD rejected this very receipt before; the batch stays on offer`);
    }
    const batch = this.readBatch({ id });
    const info = parseSealedHeader(batch);
    if (receipt.seq !== info.header.seq || receipt.bits !== info.header.bits || !equalBytes(receipt.headerDigest, info.headerDigest)) {
      throw new CarrierError('BAD_RECEIPT', `${id}: the receipt's seq, bits or header digest do not match the batch`);
    }
    writeFileAtomic(rfile, receiptBytes);
    const state = journalState(this.journal.read().records);
    this.finishDelivery(id, receipt, receiptBytes, state);
    return { ...this.deliveredEntry(id, receipt, state), outcome: 'recorded' };
  }

  /**
   * The journal lines after a receipt is stored, each skipped if already there: `injected` and
   * `delivered`. recordReceipt runs it; scan() re-runs it for every receipt, which is how a crash
   * between the steps gets finished.
   */
  private finishDelivery(id: string, receipt: Receipt, receiptBytes: Uint8Array, state: JournalState): boolean {
    let did = false;
    if (!state.injected.has(id)) {
      const { terminalId, seq, bits } = receipt;
      this.journal.append({ event: 'injected', id, terminalId, batchId: hex(receipt.batchId), seq, bits, receipt: hex(receiptBytes) });
      state.injected.add(id);
      did = true;
    }
    if (!state.delivered.has(id)) {
      this.journal.append({ event: 'delivered', id });
      state.delivered.add(id);
      did = true;
    }
    return did;
  }

  /**
   * Wipe a collected batch's ciphertext if it is still here and journal `wiped` once. `id` comes
   * from a receipt file name that parseFileId accepted, never from the journal.
   */
  private finishWipe(id: string, state: JournalState, recovered: boolean): boolean {
    const file = this.batchPath(id);
    let present: boolean;
    try {
      present = lstatRegular(file, SEALED_MAX_BYTES) !== undefined;
    } catch (e) {
      // A symlink, FIFO, device, folder or oversize file under the batch name: never opened,
      // zeroed or unlinked; scan() reports it as damaged.
      if (e instanceof UnsafeFileError) return false;
      throw e;
    }
    if (present) wipeFile(file);
    if (present || !state.wiped.has(id)) {
      this.journal.append(recovered ? { event: 'wiped', id, recovered } : { event: 'wiped', id });
      state.wiped.add(id);
      return true;
    }
    return false;
  }

  private deliveredEntry(id: string, r: Receipt, state: JournalState): DeliveredEntry {
    const collected = state.collected.has(id);
    let ciphertextBytes = 0;
    try {
      ciphertextBytes = lstatRegular(this.batchPath(id), SEALED_MAX_BYTES)?.size ?? 0;
    } catch (e) {
      if (!(e instanceof UnsafeFileError)) throw e; // not a batch file: holds no ciphertext of ours
    }
    return {
      id,
      terminalId: r.terminalId,
      batchId: hex(r.batchId),
      seq: r.seq,
      bits: r.bits,
      state: collected ? 'collected' : 'unverified',
      collected,
      ciphertextBytes,
      receiptFile: this.receiptPath(id),
    };
  }

  /** Receipts the KMD has not collected yet, per terminal by seq. */
  receipts(): ReceiptEntry[] {
    const out: ReceiptEntry[] = [];
    const state = journalState(this.journal.read().records);
    for (const { id, receipt, bytes } of this.readReceipts().valid) {
      if (state.collected.has(id)) continue;
      out.push({ id, terminalId: receipt.terminalId, batchId: hex(receipt.batchId), seq: receipt.seq, bits: receipt.bits, file: this.receiptPath(id), receipt: bytes });
    }
    return out.sort(byTerminalThenSeq);
  }

  /**
   * The KMD verified these receipts (ids from receipts()): journal `collected`, then wipe each
   * batch's ciphertext and journal `wiped`. Ids already collected are fine. A crash after the
   * `collected` line is finished by open()/scan(), which wipes every collected batch still here.
   */
  markCollected(ids: readonly string[]): void {
    if (!Array.isArray(ids)) throw new TypeError('ids must be an array of receipt ids');
    const known = new Set(this.readReceipts().valid.map((r) => r.id));
    for (const id of ids) {
      if (typeof id !== 'string') throw new TypeError('ids must be an array of receipt ids');
      if (!known.has(id)) throw new CarrierError('UNKNOWN_RECEIPT', `no receipt ${JSON.stringify(id)} on the carrier`);
    }
    const state = journalState(this.journal.read().records);
    const fresh = [...new Set(ids)].filter((id) => !state.collected.has(id));
    if (fresh.length > 0) this.journal.append({ event: 'collected', ids: fresh });
    for (const id of new Set(ids)) {
      state.collected.add(id);
      this.finishWipe(id, state, false);
    }
  }

  /**
   * The KMD found a stored receipt false (its MAC does not verify, or it names a terminal the KMD
   * does not know): journal `rejected` with the receipt, then move it to quarantine/. The batch,
   * whose ciphertext was kept, is pending again. `id` from receipts(); a collected receipt cannot
   * be rejected. Idempotent: a move the crash interrupted is finished by open()/scan().
   */
  rejectReceipt(id: string, reason: string): QuarantinedEntry {
    if (typeof id !== 'string') throw new TypeError('id must be a receipt id');
    if (typeof reason !== 'string') throw new TypeError('reason must be a string');
    const found = this.readReceipts().valid.find((r) => r.id === id);
    if (!found) throw new CarrierError('UNKNOWN_RECEIPT', `no receipt ${JSON.stringify(id)} on the carrier`);
    const state = journalState(this.journal.read().records);
    if (state.collected.has(id)) throw new CarrierError('ALREADY_DELIVERED', `${id}: the KMD verified this receipt already`);
    const name = quarantineName(id, found.bytes);
    const why = reason.slice(0, 200);
    this.journal.append({ event: 'rejected', id, receipt: hex(found.bytes), reason: why, file: join(QUARANTINE_DIR, name) });
    this.quarantine(id, name);
    return { id, file: join(this.path, QUARANTINE_DIR, name), reason: why };
  }

  /** quarantine/ is made when first needed; if it is there, it must be a real folder (a link would move receipts off the carrier). */
  private checkQuarantineDir(): void {
    const qdir = join(this.path, QUARANTINE_DIR);
    let st;
    try {
      st = lstatSync(qdir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    if (!st.isDirectory()) {
      throw new CarrierError('UNSAFE_FILE', `${qdir}: ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder'}; refusing to use this carrier`);
    }
  }

  /** Move receipts/<id>.qkr to quarantine/<name> (same drive: an atomic rename), syncing both folders. */
  private quarantine(id: string, name: string): void {
    const qdir = join(this.path, QUARANTINE_DIR);
    this.checkQuarantineDir();
    mkdirSync(qdir, { recursive: true });
    renameSync(this.receiptPath(id), join(qdir, name));
    fsyncDir(qdir);
    fsyncDir(join(this.path, RECEIPT_DIR));
  }

  /** The journal as recorded (a torn last line ignored). */
  history(): JournalRecord[] {
    return this.journal.read().records;
  }

  private readReceipts(): { valid: { id: string; receipt: Receipt; bytes: Uint8Array }[]; damaged: DamagedEntry[]; damagedIds: Set<string> } {
    const valid: { id: string; receipt: Receipt; bytes: Uint8Array }[] = [];
    const damaged: DamagedEntry[] = [];
    const damagedIds = new Set<string>();
    const dir = join(this.path, RECEIPT_DIR);
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.') || !name.endsWith(RECEIPT_EXT)) continue;
      const file = join(dir, name);
      const id = name.slice(0, -RECEIPT_EXT.length);
      let bytes: Uint8Array | undefined;
      try {
        bytes = readCapped(file, RECEIPT_MAX_BYTES);
      } catch (e) {
        if (e instanceof UnsafeFileError) damaged.push({ file, bytes: e.bytes, reason: e.reason });
        else damaged.push({ file, bytes: 0, reason: `unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
        if (parseFileId(id)) damagedIds.add(id);
        continue;
      }
      if (bytes === undefined) continue; // gone since readdir
      const m = parseFileId(id);
      if (!m) {
        damaged.push({ file, bytes: bytes.length, reason: 'name is not <terminalId>-<batchIdHex>.qkr' });
        continue;
      }
      try {
        const receipt = decodeReceipt(bytes);
        if (receipt.terminalId !== m.terminalId || hex(receipt.batchId) !== m.batchId) {
          damaged.push({ file, bytes: bytes.length, reason: 'receipt names another batch than its file name' });
          damagedIds.add(id);
          continue;
        }
        valid.push({ id, receipt, bytes });
      } catch (e) {
        if (!(e instanceof CryptoFormatError)) throw e;
        damaged.push({ file, bytes: bytes.length, reason: `receipt does not parse (${e.message})` });
        damagedIds.add(id);
      }
    }
    return { valid, damaged, damagedIds };
  }

  /** Remove fs-atomic temporaries whose writer is dead: a pulled drive or a killed load leaves them. */
  private removeStaleTemporaries(repaired: string[]): void {
    for (const sub of ['', BATCH_DIR, RECEIPT_DIR]) {
      const dir = join(this.path, sub);
      for (const name of readdirSync(dir)) {
        const m = TMP_RE.exec(name);
        if (!m || pidAlive(Number(m[1]))) continue;
        // Only regular files: anything else was not written by fs-atomic.
        if (!lstatSync(join(dir, name)).isFile()) continue;
        unlinkSync(join(dir, name));
        repaired.push(`removed the unfinished write ${join(sub, name)}`);
      }
    }
  }

  /**
   * Look at everything on the carrier and finish interrupted work: cut a torn journal line, drop
   * dead temporaries, move a receipt the KMD rejected to quarantine/, complete every stored
   * receipt's journal lines, and wipe the ciphertext of every collected batch still here. Then
   * classify batches: pending (whole and valid, no receipt), delivered (receipt stored) or damaged
   * (never offered).
   */
  scan(): ScanReport {
    const repaired: string[] = [];
    if (this.journal.repair()) repaired.push('cut a torn last line off the journal');
    this.removeStaleTemporaries(repaired);
    let receipts = this.readReceipts();
    const state = journalState(this.journal.read().records);
    // A `rejected` line whose receipt is still under receipts/: the move was cut. Matched by bytes,
    // so a true receipt recorded later for the same batch is never moved.
    let moved = false;
    for (const { id, bytes } of receipts.valid) {
      const rx = hex(bytes);
      if (state.collected.has(id) || !state.rejected.get(id)?.some((r) => r.receipt === rx)) continue;
      this.quarantine(id, quarantineName(id, bytes));
      repaired.push(`moved the rejected receipt of ${id} to ${QUARANTINE_DIR}/`);
      moved = true;
    }
    if (moved) receipts = this.readReceipts();
    const damaged = [...receipts.damaged];

    const delivered: DeliveredEntry[] = [];
    const withReceipt = new Set<string>();
    for (const { id, receipt, bytes } of receipts.valid) {
      if (this.finishDelivery(id, receipt, bytes, state)) repaired.push(`finished recording the receipt of ${id}`);
      if (state.collected.has(id) && this.finishWipe(id, state, true)) repaired.push(`finished wiping the collected batch ${id}`);
      withReceipt.add(id);
      delivered.push(this.deliveredEntry(id, receipt, state));
    }

    const pending: BatchEntry[] = [];
    const dir = join(this.path, BATCH_DIR);
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.') || !name.endsWith(BATCH_EXT)) continue;
      const file = join(dir, name);
      const id = name.slice(0, -BATCH_EXT.length);
      if (!parseFileId(id)) {
        damaged.push({ file, bytes: lstatSync(file).size, reason: 'name is not <terminalId>-<batchIdHex>.qkb' });
        continue;
      }
      let head: Uint8Array;
      let size: number;
      try {
        const r = readHeadCapped(file, HEAD_READ_BYTES, SEALED_MAX_BYTES);
        if (r === undefined) continue; // gone since readdir
        ({ head, size } = r);
      } catch (e) {
        if (e instanceof UnsafeFileError) {
          damaged.push({ file, bytes: e.bytes, reason: e.reason });
          continue;
        }
        // A directory under a batch name, or a failing stick returning EIO: report, never crash.
        damaged.push({ file, bytes: 0, reason: `unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
        continue;
      }
      if (receipts.damagedIds.has(id)) {
        // The terminal may have accepted it, but the proof is unreadable: keep the file, offer nothing.
        damaged.push({ file, bytes: size, reason: 'its receipt is damaged' });
        continue;
      }
      // Delivered, its receipt awaiting the KMD's verdict: kept, not offered (listed in delivered).
      if (withReceipt.has(id)) continue;
      const check = checkSealed(head, size);
      if ('reason' in check) {
        damaged.push({ file, bytes: size, reason: check.reason });
        continue;
      }
      const entry = entryOf(check.info, file);
      if (entry.id !== id) {
        damaged.push({ file, bytes: size, reason: `header names batch ${entry.id}` });
        continue;
      }
      pending.push(entry);
    }
    return { pending: pending.sort(byTerminalThenSeq), delivered: delivered.sort(byTerminalThenSeq), quarantined: this.quarantined(state), damaged, repaired };
  }

  /** Receipts under quarantine/, with the KMD's reason from the journal. */
  private quarantined(state: JournalState): QuarantinedEntry[] {
    const dir = join(this.path, QUARANTINE_DIR);
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const reasons = new Map<string, string>();
    for (const list of state.rejected.values()) for (const r of list) reasons.set(r.file, r.reason);
    const out: QuarantinedEntry[] = [];
    for (const name of names) {
      const m = /^(.+)-[0-9a-f]{16}\.qkr$/.exec(name);
      if (!m) continue;
      const reason = reasons.get(join(QUARANTINE_DIR, name));
      out.push({ id: m[1]!, file: join(dir, name), ...(reason === undefined ? {} : { reason }) });
    }
    return out;
  }

  /** What the carrier holds and has delivered: `qkt carrier status --carrier DIR` (JSON-able). */
  status(): CarrierStatus {
    const s = this.scan();
    const j = this.journal.read();
    const status: CarrierStatus = {
      carrierId: this.carrierId,
      kmdId: this.kmdId,
      created: this.manifest.created,
      formatVersion: this.manifest.version,
      path: this.path,
      batches: s.pending,
      delivered: s.delivered,
      receiptsPending: s.delivered.filter((d) => !d.collected).length,
      quarantined: s.quarantined,
      sealedBytes: s.pending.reduce((a, b) => a + b.bytes, 0) + s.delivered.reduce((a, d) => a + d.ciphertextBytes, 0),
      damaged: s.damaged,
      journal: { events: j.records.length, skippedLines: j.skipped },
    };
    try {
      const fs = statfsSync(this.path);
      status.bytesFree = Number(fs.bavail) * Number(fs.bsize);
    } catch {
      // statfs is a nicety (a network share may refuse it); the status stands without it.
    }
    return status;
  }
}

/** A byte count for a person: `385.1 KiB`. */
export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

/** The human form of status(): one block per section, one line per batch, receipt or damaged file. */
export function formatCarrierStatus(status: CarrierStatus): string {
  const lines: string[] = [];
  lines.push(`carrier ${status.carrierId} (KMD ${status.kmdId}) at ${status.path}`);
  lines.push(`  created ${status.created}${status.bytesFree === undefined ? '' : `, ${formatBytes(status.bytesFree)} free`}`);
  const bits = status.batches.reduce((a, b) => a + b.bits, 0);
  const bytes = status.batches.reduce((a, b) => a + b.bytes, 0);
  lines.push(`pending batches: ${status.batches.length}${status.batches.length ? ` (${formatBits(bits)} of key, ${formatBytes(bytes)} sealed)` : ''}`);
  for (const b of status.batches) {
    lines.push(`  ${b.terminalId}  seq ${b.seq}  ${formatBits(b.bits)}  ${b.purpose}  batch ${b.batchId}  ${formatBytes(b.bytes)}`);
  }
  lines.push(`delivered: ${status.delivered.length} (${status.receiptsPending} receipt${status.receiptsPending === 1 ? '' : 's'} to collect)`);
  for (const d of status.delivered) {
    const what = d.collected ? 'collected, wiped' : `receipt to collect (unverified; ${formatBytes(d.ciphertextBytes)} sealed kept until qkt kmd collect)`;
    lines.push(`  ${d.terminalId}  seq ${d.seq}  ${formatBits(d.bits)}  batch ${d.batchId}  ${what}`);
  }
  if (status.quarantined.length > 0) {
    lines.push(`receipts the KMD rejected (quarantined; their batches are offered again): ${status.quarantined.length}`);
    // Names and reasons read off the drive: a hostile drive's file names cannot drive the terminal.
    for (const q of status.quarantined) lines.push(`  ${printable(q.id)}: ${printable(q.reason ?? 'reason not in the journal')}`);
  }
  lines.push(`sealed bytes held: ${formatBytes(status.sealedBytes)}`);
  if (status.damaged.length > 0) {
    lines.push(`damaged (never offered): ${status.damaged.length}`);
    for (const d of status.damaged) lines.push(`  ${printable(d.file)} (${d.bytes} bytes): ${printable(d.reason)}`);
  }
  if (status.journal.skippedLines > 0) lines.push(`journal: ${status.journal.skippedLines} unreadable line(s) skipped`);
  return lines.join('\n');
}
