// The master station's key store (pre-application mode): per terminal, a key pool holding the
// same keys the terminal's batch holds, under the same key ids. It runs the firmware's power-safe
// KeyPool on a file-backed flash image, so the station never serves a key twice either. A batch
// is inactive until its delivery is proven (a verified receipt, or the terminal's first use).
//
// One writer per pool (issue 9): several processes use one store (the KMD's exports and collects,
// a long-running `qkt station run`), so every operation on a terminal's pool image, its wear
// sidecar and its state.json is made holding the lock `<terminal>/pool.img.lock`, only for that
// operation. A process keeps its mount (the image in RAM) between operations, and checks first
// whether another process changed the image since: every operation that changes anything writes
// a fresh generation token to `<terminal>/pool.gen` before its first write (so a process killed
// mid-operation still leaves the others a token they have not seen) and again after its last,
// and a token other than the one this process saw last means remount. So no two processes ever hold one image in RAM and write it, and a
// running station serves batches exported after it started.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import type { BlockDevice } from '../../firmware/flash/block-device.js';
import { KeyPool } from '../../firmware/keypool/key-pool.js';
import type { ConsumedKey, PoolStatus, Purpose } from '../../firmware/keypool/key-pool.js';
import { poolBatchId } from '../../firmware/commands/inject.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { DamagedFileError, readJsonFile } from '../json-file.js';
import { withLockSync } from '../lock.js';
import { TERMINAL_ID_RE } from '../../firmware/crypto/_util.js';
import type { LockOptions } from '../lock.js';

/** Same layout as a terminal module's pool (secure area left unused), so capacities agree. */
const STATION_POOL = { secureSectors: 4 };

export interface StationState {
  /** poolId -> full batch id and activation. */
  batches: Record<string, { batchId: string; seq: number; bits: number; active: boolean; activatedBy?: 'receipt' | 'first-use' }>;
}

export class StationStoreError extends Error {
  constructor(
    message: string,
    readonly code: 'INACTIVE' | 'UNKNOWN_BATCH' | 'NO_TERMINAL' | 'NOT_STAGED',
  ) {
    super(message);
    this.name = 'StationStoreError';
  }
}

const DAY_MS = 86_400_000;
/** The latest time a Date can hold (ms since the epoch): a last uplink after it cannot be shown. */
const MAX_DATE_MS = 8.64e15;
/** A field of a last uplink (STATUS sends them as safe-uint): a whole number, not negative. */
const count = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
/** Days of key use the forecast looks back on (`station status`). */
export const USAGE_DAYS = 30;

/** A recorded last uplink as read back (any store), or null if it is not one: whole numbers, a date a Date holds, a mode. */
export function lastUplinkOf(u: unknown): LastUplink | null {
  const x = u as Partial<LastUplink> | undefined;
  const ok =
    x !== null &&
    typeof x === 'object' &&
    count(x.at) &&
    x.at! <= MAX_DATE_MS &&
    (x.mode === 'otp' || x.mode === 'aead') &&
    count(x.counter) &&
    count(x.bytes) &&
    count(x.keyBits);
  return ok ? { at: x.at!, mode: x.mode!, counter: x.counter!, bytes: x.bytes!, keyBits: x.keyBits! } : null;
}

/** The last uplink the station opened for a terminal (`<terminal>/last-uplink.json`). */
export interface LastUplink {
  /** When the station opened it, ms since the Unix epoch. */
  at: number;
  mode: 'otp' | 'aead';
  /** The service header's counter: the AEAD nonce counter or the OTP message number. */
  counter: number;
  /** Bytes of service data. */
  bytes: number;
  /** Key bits the station consumed for it. */
  keyBits: number;
}

/** One terminal's key account at the station (STATION STATUS, docs/protocol.md 3.12.3). */
export interface StationAccount {
  storedKeyBits: number;
  maxKeyBits: number;
  consumedKeyBits: number;
  activeBatches: number;
  inactiveBatches: number;
  /** Of storedKeyBits: in batches whose delivery is proven, and in batches still awaiting it. */
  activeKeyBits: number;
  inactiveKeyBits: number;
}

export interface StationBatchMeta {
  batchId: Uint8Array;
  seq: number;
  purpose: Purpose;
  bits: number;
}

interface Mount {
  flash: NorFlash;
  pool: KeyPool;
  /** The generation token this process last saw or wrote. */
  gen: string;
  /** The current operation wrote its token before its first write already. */
  marked: boolean;
}

/** The lock on one terminal's pool in a station store (its image, wear sidecar and state.json). */
export function poolLockOptions(dir: string, terminalId: string): LockOptions {
  const img = join(dir, terminalId, 'pool.img');
  return { what: `station pool of terminal ${terminalId} (${img})`, file: `${img}.lock` };
}

/** The lock `qkt station run` holds for its life: one station service per store (it alone writes inbox.jsonl). */
export function stationServiceLockOptions(dir: string): LockOptions {
  return { what: `station store ${dir}`, file: join(dir, 'service.lock'), waitMs: 0 };
}

/**
 * Pools kept mounted between operations (each holds its 2 MiB image in RAM), the most recently
 * used: a station's memory does not grow with the terminals an operator's STATUS pages through.
 */
export const MAX_MOUNTED_POOLS = 16;

/**
 * What the station, the KMD and the CLI need of a station store. Two kinds implement it: the
 * folder of per-terminal pool images (StationStore, below) and the compact SQL store (SQLite or PostgreSQL) for
 * fleets (SqlStationStore, sql-store.ts); `openStationStore` picks by what the folder holds.
 */
export interface StationKeyStore {
  readonly dir: string;
  /** 'files' (a pool image per terminal), 'sqlite' (one database file) or 'postgres' (a PostgreSQL database). */
  readonly kind: 'files' | 'sqlite' | 'postgres';
  hasTerminal(terminalId: string): boolean;
  terminalsPage(after: string | undefined, max: number): { ids: string[]; more: boolean };
  terminals(): string[];
  state(terminalId: string): StationState;
  reserve(terminalId: string, h: StationBatchMeta): void;
  fill(terminalId: string, batchId: Uint8Array, keys: Uint8Array): void;
  cancel(terminalId: string, batchId: Uint8Array): void;
  addBatch(terminalId: string, h: StationBatchMeta, keys: Uint8Array): void;
  retireAbsent(terminalId: string, belowSeq: number, liveHex: ReadonlySet<string>): Array<{ batchId: string; bits: number }>;
  voidBatch(terminalId: string, batchIdHex: string): number;
  activate(terminalId: string, batchIdHex: string, by: 'receipt' | 'first-use'): boolean;
  batch(terminalId: string, batchId: Uint8Array): { active: boolean; poolId: number };
  holdsBatch(terminalId: string, batchId: Uint8Array): boolean;
  takeById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number, allowInactive?: boolean): ConsumedKey;
  peekById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number): Uint8Array;
  status(terminalId: string): PoolStatus & { active: string[]; inactive: string[] };
  account(terminalId: string): StationAccount;
  recordUplink(terminalId: string, u: LastUplink): void;
  usageDays(terminalId: string): Array<[number, number]>;
  lastUplink(terminalId: string): LastUplink | null;
  /**
   * Run `fn` (the store's operations for one message) so that its changes are durable when the
   * promise resolves. The file store syncs each operation as it goes (each is atomic); the
   * SQL stores undo all of `fn`'s changes if it throws, run every `fn` of one event-loop turn in
   * one transaction, and resolve them all after its one commit (group commit: one fsync for many
   * messages).
   */
  grouped<T>(fn: () => T): Promise<T>;
  /**
   * SQL stores only: opened uplinks recorded with their inbox lines in the transaction that took
   * their keys, so a message is filed exactly once and a retry after a lost answer gets the same
   * answer (sql-store.ts). The file store files after the fact: a crash in between loses the line.
   */
  openedBefore?(terminalId: string, digest: Uint8Array): { n: number; keyBits: number } | undefined;
  recordOpened?(terminalId: string, digest: Uint8Array, line: string, n: number, keyBits: number): number;
  unfiled?(max?: number): Array<{ id: number; line: string }>;
  markFiled?(ids: readonly number[]): void;
  /** SQL stores: a group's transaction is open (its changes not committed yet). */
  readonly groupOpen?: boolean;
  /** PostgreSQL store: hold the database's service lock for this process' life; false if another holds it. */
  claimService?(): boolean;
  /** Called when a group's commit failed and its changes were undone (SQL stores). */
  onGroupFailure?: ((e: Error) => void) | undefined;
  close(): void;
}

export class StationStore implements StationKeyStore {
  readonly kind = 'files' as const;
  /** Mounted pools, least recently used first. */
  private readonly pools = new Map<string, Mount>();
  /** Terminals with an operation running (nested ones counted): never unmounted to make room. */
  private readonly busy = new Map<string, number>();
  /** Set by an operation that wrote state.json; the generation moves on. */
  private wroteState = false;
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Whether the store holds keys for `terminalId` (its pool image exists): one stat, not a listing. */
  hasTerminal(terminalId: string): boolean {
    return TERMINAL_ID_RE.test(terminalId) && !/^\.+$/.test(terminalId) && existsSync(join(this.dir, terminalId, 'pool.img'));
  }

  /**
   * Up to `max` terminals after `after` in id order, and whether more follow: a page of
   * terminals() that costs a stat per row, not per terminal. The folder's listing is kept while
   * its mtime stays (a terminal's folder made or removed changes it), for a second at most, so
   * paging through N terminals costs a listing a second and N stats, not N^2 / page stats.
   */
  terminalsPage(after: string | undefined, max: number): { ids: string[]; more: boolean } {
    // The folder's mtime and link count (a subfolder made or removed changes both, on a
    // filesystem with coarse times at least the count) key the listing.
    // And at most a second old: a folder added and another removed within one timestamp tick
    // (coarse mtimes; btrfs keeps nlink at 1) would otherwise be missed until the next change.
    const st = statSync(this.dir);
    const mtime = `${st.mtimeMs}:${st.nlink}`;
    const now = Date.now();
    if (!this.listing || this.listing.mtime !== mtime || now - this.listing.at > 1000) {
      this.listing = { mtime, at: now, names: readdirSync(this.dir).filter((d) => TERMINAL_ID_RE.test(d) && !/^\.+$/.test(d)).sort() };
    }
    const names = this.listing.names;
    // The first name above `after` (binary search), then the ones that hold a pool image.
    let lo = 0;
    let hi = names.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (after !== undefined && names[mid]! <= after) lo = mid + 1;
      else hi = mid;
    }
    const ids: string[] = [];
    for (let i = lo; i < names.length; i++) {
      if (!existsSync(join(this.dir, names[i]!, 'pool.img'))) continue;
      if (ids.length === max) return { ids, more: true };
      ids.push(names[i]!);
    }
    return { ids, more: false };
  }
  private listing: { mtime: string; at: number; names: string[] } | undefined;

  terminals(): string[] {
    // Only folders named as terminal ids (what exports make): a stray folder of another name is no
    // terminal's, and must neither reach a terminal's screen nor make STATUS rows a client refuses.
    return readdirSync(this.dir)
      .filter((d) => TERMINAL_ID_RE.test(d) && !/^\.+$/.test(d) && existsSync(join(this.dir, d, 'pool.img')))
      .sort();
  }

  private statePath(terminalId: string): string {
    return join(this.dir, terminalId, 'state.json');
  }

  private genPath(terminalId: string): string {
    return join(this.dir, terminalId, 'pool.gen');
  }

  private readGen(terminalId: string): string {
    try {
      return readFileSync(this.genPath(terminalId), 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * The names and activation of the terminal's batches (state.json is replaced atomically: readable
   * any time). DamagedFileError, naming the file, if it is not a regular file holding a state.
   */
  state(terminalId: string): StationState {
    const p = this.statePath(terminalId);
    const s = readJsonFile(p, 16 * 1024 * 1024) as StationState | undefined;
    if (s === undefined) return { batches: {} };
    if (typeof s !== 'object' || s === null || typeof s.batches !== 'object' || s.batches === null) throw new DamagedFileError(p, 'not a station state (batches)');
    for (const b of Object.values(s.batches)) {
      if (typeof b !== 'object' || b === null || typeof b.batchId !== 'string' || typeof b.seq !== 'number') throw new DamagedFileError(p, 'not a station state (a batch)');
    }
    return s;
  }

  private saveState(terminalId: string, s: StationState): void {
    const m = this.pools.get(terminalId);
    if (m) this.markWrite(terminalId, m);
    writeFileAtomic(this.statePath(terminalId), JSON.stringify(s, null, 2) + '\n');
    this.wroteState = true;
  }

  /**
   * Run `fn` on the terminal's pool holding its lock, on a mount that is current: remounted when
   * another process changed the image since this one last saw it. Before the first change (flash
   * written, state.json replaced) a new generation token is written, and after the change the wear
   * sidecar is flushed and another token written, so the next process to take the lock remounts,
   * also when this one is killed in between. Re-entrant (nested operations share the lock).
   */
  private withPool<T>(terminalId: string, create: boolean, fn: (pool: KeyPool) => T): T {
    const dir = join(this.dir, terminalId);
    const img = join(dir, 'pool.img');
    if (!existsSync(img)) {
      if (!create) throw new StationStoreError(`the station holds no keys for terminal ${terminalId}`, 'NO_TERMINAL');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    this.busy.set(terminalId, (this.busy.get(terminalId) ?? 0) + 1);
    try {
      return withLockSync(img, poolLockOptions(this.dir, terminalId), () => this.operate(terminalId, img, fn));
    } finally {
      const n = this.busy.get(terminalId)! - 1;
      if (n > 0) this.busy.set(terminalId, n);
      else this.busy.delete(terminalId);
      this.trim();
    }
  }

  /** Unmount the least recently used pools beyond MAX_MOUNTED_POOLS (none with an operation running). */
  private trim(): void {
    for (const id of [...this.pools.keys()]) {
      if (this.pools.size <= MAX_MOUNTED_POOLS) return;
      if (!this.busy.has(id)) this.unmount(id);
    }
  }

  private operate<T>(terminalId: string, img: string, fn: (pool: KeyPool) => T): T {
    {
      const m = this.mount(terminalId, img);
      const ops = (): number => m.flash.stats.programs + m.flash.stats.erases;
      const before = ops();
      const erasesBefore = m.flash.stats.erases;
      const wroteBefore = this.wroteState;
      this.wroteState = false;
      try {
        return fn(m.pool);
      } catch (e) {
        if (e instanceof PoolError && (e.code === 'IO' || e.code === 'UNMOUNTED')) this.unmount(terminalId);
        throw e;
      } finally {
        const changed = ops() !== before || this.wroteState || m.marked;
        this.wroteState = wroteBefore || this.wroteState; // an enclosing operation changed things too
        if (changed) {
          const current = this.pools.get(terminalId) === m;
          // Wear counts on disk before the next writer reads them.
          if (current && m.flash.stats.erases !== erasesBefore && !m.flash.powerLost) m.flash.sync();
          const gen = this.bumpGen(terminalId);
          if (current) m.gen = gen;
        }
        m.marked = false; // the next operation (or the rest of an enclosing one) marks again
      }
    }
  }

  /** A new generation token: every other process' mount of this pool is out of date now. */
  private bumpGen(terminalId: string): string {
    const gen = `${process.pid}-${randomBytes(8).toString('hex')}`;
    writeFileSync(this.genPath(terminalId), gen, { mode: 0o600 });
    return gen;
  }

  /** Before an operation's first write: a new token, so a process killed mid-way still moves the generation on. */
  private markWrite(terminalId: string, m: Mount): void {
    if (m.marked) return;
    m.gen = this.bumpGen(terminalId);
    m.marked = true;
  }

  /** The flash as the pool sees it: its first program or erase in an operation marks the write. */
  private guarded(terminalId: string, m: Mount): BlockDevice {
    const f = m.flash;
    return {
      geometry: f.geometry,
      read: (addr, len) => f.read(addr, len),
      program: (addr, bytes) => {
        this.markWrite(terminalId, m);
        f.program(addr, bytes);
      },
      erase: (sector) => {
        this.markWrite(terminalId, m);
        f.erase(sector);
      },
      sync: () => f.sync(),
    };
  }

  /** Under the pool's lock: this process' mount, remounted if the image changed under it. */
  private mount(terminalId: string, img: string): Mount {
    const gen = this.readGen(terminalId);
    const open = this.pools.get(terminalId);
    if (open && open.gen === gen && !open.flash.powerLost) {
      // The most recently used last (trim unmounts from the front).
      this.pools.delete(terminalId);
      this.pools.set(terminalId, open);
      return open;
    }
    if (open) this.unmount(terminalId);
    const fresh = !existsSync(img);
    const flash = NorFlash.open(img);
    try {
      const m: Mount = { flash, pool: undefined as unknown as KeyPool, gen, marked: false };
      const dev = this.guarded(terminalId, m);
      m.pool = fresh ? KeyPool.format(dev, STATION_POOL) : KeyPool.mount(dev, STATION_POOL);
      if (flash.stats.erases > 0) flash.sync();
      // Formatting, or a mount that finished an interrupted operation, changed the image.
      if (fresh || flash.stats.programs + flash.stats.erases > 0) m.gen = this.bumpGen(terminalId);
      m.marked = false;
      this.pools.set(terminalId, m);
      return m;
    } catch (e) {
      flash.close();
      throw e;
    }
  }

  private unmount(terminalId: string): void {
    const m = this.pools.get(terminalId);
    if (!m) return;
    this.pools.delete(terminalId);
    try {
      m.flash.close();
    } catch {
      // a dead device: nothing to flush
    }
  }

  /**
   * The terminal's pool as mounted now (formatted on first use with `create`), for inspection
   * when no other process uses the store (tests). Operations go through the methods below.
   */
  pool(terminalId: string, create = false): KeyPool {
    return this.withPool(terminalId, create, (p) => p);
  }

  /**
   * Pre-application, step 1: reserve room for a batch in the terminal's pool (stage it, empty,
   * and name it in state.json), refusing with the pool's error (NO_SPACE, TOO_MANY_BATCHES,
   * ROLLBACK...) and nothing changed when it does not fit. A batch left staged by an export that
   * never finished (a crash) is dropped first: its keys were never handed out.
   */
  reserve(terminalId: string, h: StationBatchMeta): void {
    this.withPool(terminalId, true, (pool) => {
      const poolId = poolBatchId(h.batchId);
      const left = pool.staging();
      if (left) {
        left.abort();
        this.forget(terminalId, [String(left.batchId)]);
      }
      pool.stage({ batchId: poolId, seq: h.seq, purpose: h.purpose, bits: h.bits });
      const st = this.state(terminalId);
      st.batches[String(poolId)] = { batchId: Buffer.from(h.batchId).toString('hex'), seq: h.seq, bits: h.bits, active: false };
      this.saveState(terminalId, st); // a batch in the pool is always named
    });
  }

  /** Step 2: the batch's keys into the reserved room, committed atomically (inactive). */
  fill(terminalId: string, batchId: Uint8Array, keys: Uint8Array): void {
    this.withPool(terminalId, false, (pool) => {
      const poolId = poolBatchId(batchId);
      const stage = pool.staging();
      if (!stage || stage.batchId !== poolId || stage.bits !== keys.length * 8) {
        throw new StationStoreError(`batch ${Buffer.from(batchId).toString('hex')} of terminal ${terminalId} is not reserved in the station store`, 'NOT_STAGED');
      }
      for (let off = stage.durableOffset; off < keys.length; off += 4096) stage.write(off, keys.subarray(off, Math.min(keys.length, off + 4096)));
      stage.commit();
      this.prune(terminalId);
    });
  }

  /** Undo reserve(): drop the staged batch and its name (an export that did not go ahead). */
  cancel(terminalId: string, batchId: Uint8Array): void {
    if (!existsSync(join(this.dir, terminalId, 'pool.img'))) return;
    this.withPool(terminalId, false, (pool) => {
      const poolId = poolBatchId(batchId);
      const stage = pool.staging();
      if (stage && stage.batchId === poolId) stage.abort();
      this.prune(terminalId);
    });
  }

  /** Pre-application in one step: put a batch's keys in, inactive. Atomic like the terminal's own append. */
  addBatch(terminalId: string, h: StationBatchMeta, keys: Uint8Array): void {
    this.reserve(terminalId, h);
    try {
      this.fill(terminalId, h.batchId, keys);
    } catch (e) {
      this.cancel(terminalId, h.batchId);
      throw e;
    }
  }

  private forget(terminalId: string, poolIds: string[]): void {
    const s = this.state(terminalId);
    const gone = poolIds.filter((k) => k in s.batches);
    if (gone.length === 0) return;
    for (const k of gone) delete s.batches[k];
    this.saveState(terminalId, s);
  }

  /**
   * Forget the names of batches the pool no longer holds (retired at their last key, or
   * voided): state.json stays as small as the pool's live batches, over any service life.
   */
  private prune(terminalId: string): void {
    this.withPool(terminalId, false, (pool) => {
      const st = pool.status();
      const live = new Set([...st.batches.map((b) => String(b.batchId)), ...(st.staging ? [String(st.staging.batchId)] : [])]);
      this.forget(
        terminalId,
        Object.keys(this.state(terminalId).batches).filter((k) => !live.has(k)),
      );
    });
  }

  /**
   * A verified version 2 receipt lists every batch the terminal still holds. A batch the station
   * holds for it with a lower seq that is not listed is gone from the terminal for good (used up,
   * its crumbs or a lost last message burned, or never delivered and now stale): void it here.
   * Returns what was voided.
   */
  retireAbsent(terminalId: string, belowSeq: number, liveHex: ReadonlySet<string>): Array<{ batchId: string; bits: number }> {
    if (!existsSync(join(this.dir, terminalId, 'pool.img'))) return [];
    return this.withPool(terminalId, false, () => {
      const out: Array<{ batchId: string; bits: number }> = [];
      for (const b of Object.values(this.state(terminalId).batches).sort((x, y) => x.seq - y.seq)) {
        if (b.seq >= belowSeq || liveHex.has(b.batchId)) continue;
        out.push({ batchId: b.batchId, bits: this.voidBatch(terminalId, b.batchId) });
      }
      return out;
    });
  }

  /**
   * Retire a batch whose keys will never be used (a lost carrier, a zeroized terminal, a last
   * message lost to a power cut): its remaining keys are wiped and its slot comes back. Returns
   * the bits wiped. The library side of `qkt kmd void`.
   */
  voidBatch(terminalId: string, batchIdHex: string): number {
    return this.withPool(terminalId, false, (pool) => {
      const e = Object.entries(this.state(terminalId).batches).find(([, b]) => b.batchId === batchIdHex);
      if (!e) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
      let bits = 0;
      try {
        const stage = pool.staging();
        if (stage && String(stage.batchId) === e[0]) {
          bits = stage.bits;
          stage.abort();
        } else {
          bits = pool.discardBatch(Number(e[0]));
        }
      } catch (err) {
        if (!(err instanceof PoolError && err.code === 'NOT_PRESENT')) throw err; // already retired: only its name is left
      }
      this.prune(terminalId);
      return bits;
    });
  }

  activate(terminalId: string, batchIdHex: string, by: 'receipt' | 'first-use'): boolean {
    return this.withPool(terminalId, false, () => {
      const st = this.state(terminalId);
      const e = Object.values(st.batches).find((b) => b.batchId === batchIdHex);
      if (!e) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
      if (e.active) return false;
      e.active = true;
      e.activatedBy = by;
      this.saveState(terminalId, st);
      return true;
    });
  }

  /** Full 16-byte batch id and activation for the pool's u32 id. */
  batch(terminalId: string, batchId: Uint8Array): { active: boolean; poolId: number } {
    const poolId = poolBatchId(batchId);
    const e = this.state(terminalId).batches[String(poolId)];
    if (!e || e.batchId !== Buffer.from(batchId).toString('hex')) {
      throw new StationStoreError(`batch ${Buffer.from(batchId).toString('hex')} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
    }
    return { active: e.active, poolId };
  }

  /**
   * Whether the store still names the batch as one of the terminal's live batches (not voided,
   * not retired and pruned). Reads state.json, which is replaced atomically: no lock needed.
   */
  holdsBatch(terminalId: string, batchId: Uint8Array): boolean {
    return this.state(terminalId).batches[String(poolBatchId(batchId))]?.batchId === Buffer.from(batchId).toString('hex');
  }

  /** Take exactly the named key (never twice), from an active batch or, with `allowInactive`, any. */
  takeById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number, allowInactive = false): ConsumedKey {
    return this.withPool(terminalId, false, (pool) => {
      const b = this.batch(terminalId, batchId);
      if (!b.active && !allowInactive) throw new StationStoreError(`batch ${Buffer.from(batchId).toString('hex')} is not active yet (no receipt)`, 'INACTIVE');
      return pool.consumeById({ batchId: b.poolId, bitOffset }, bytes);
    });
  }

  /** Read the named key without consuming it (checking a message before spending its keys). */
  peekById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number): Uint8Array {
    return this.withPool(terminalId, false, (pool) => pool.peekById({ batchId: this.batch(terminalId, batchId).poolId, bitOffset }, bytes));
  }

  status(terminalId: string): PoolStatus & { active: string[]; inactive: string[] } {
    return this.withPool(terminalId, false, (pool) => {
      const s = pool.status();
      const st = this.state(terminalId);
      const list = Object.values(st.batches);
      return { ...s, active: list.filter((b) => b.active).map((b) => b.batchId), inactive: list.filter((b) => !b.active).map((b) => b.batchId) };
    });
  }

  /** The terminal's key account: what the pool holds, split by activation, and what it used. */
  account(terminalId: string): StationAccount {
    return this.withPool(terminalId, false, (pool) => {
      const s = pool.status();
      const st = this.state(terminalId);
      let activeKeyBits = 0;
      let inactiveKeyBits = 0;
      for (const b of s.batches) {
        const left = b.bits - b.consumedBits;
        if (st.batches[String(b.batchId)]?.active) activeKeyBits += left;
        else inactiveKeyBits += left;
      }
      const list = Object.values(st.batches);
      const activeBatches = list.filter((b) => b.active).length;
      return {
        storedKeyBits: s.storedKeyBits,
        maxKeyBits: s.maxKeyBits,
        consumedKeyBits: s.consumedKeyBits,
        activeBatches,
        inactiveBatches: list.length - activeBatches,
        activeKeyBits,
        inactiveKeyBits,
      };
    });
  }

  private lastUplinkPath(terminalId: string): string {
    return join(this.dir, terminalId, 'last-uplink.json');
  }

  /**
   * Record the last uplink opened for the terminal. Its one writer is the station service (it
   * holds the store's service lock); replaced by rename, not synced: informational, so after a
   * power loss it may name an earlier uplink (inbox.jsonl has them all).
   */
  recordUplink(terminalId: string, u: LastUplink): void {
    const p = this.lastUplinkPath(terminalId);
    // The key bits used per UTC day, the last USAGE_DAYS days only: what the forecast reads
    // (accounts.ts). Bounded: a decade of uplinks keeps 30 pairs.
    const day = Math.floor(u.at / DAY_MS);
    const days = this.usageDays(terminalId).filter(([d]) => d > day - USAGE_DAYS && d <= day);
    const today = days.find(([d]) => d === day);
    if (today) today[1] += u.keyBits;
    else days.push([day, u.keyBits]);
    const tmp = `${p}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ ...u, days }) + '\n', { mode: 0o600 });
    renameSync(tmp, p);
  }

  /** Key bits used per UTC day (`[day since the epoch, bits]`, oldest first), as recordUplink kept them; [] if none or damaged. */
  usageDays(terminalId: string): Array<[number, number]> {
    let u: unknown;
    try {
      u = readJsonFile(this.lastUplinkPath(terminalId), 4096);
    } catch (e) {
      if (e instanceof DamagedFileError) return [];
      throw e;
    }
    const days = (u as { days?: unknown } | null | undefined)?.days;
    if (!Array.isArray(days) || days.length > USAGE_DAYS) return [];
    const ok = days.every((x) => Array.isArray(x) && x.length === 2 && Number.isSafeInteger(x[0]) && Number.isSafeInteger(x[1]) && x[1] >= 0);
    return ok ? (days as Array<[number, number]>).map(([d, b]): [number, number] => [d, b]).sort((a, b) => a[0] - b[0]) : [];
  }

  /** The last uplink recorded for the terminal, or null (none yet, or the file is not one). */
  lastUplink(terminalId: string): LastUplink | null {
    let u: unknown;
    try {
      u = readJsonFile(this.lastUplinkPath(terminalId), 4096);
    } catch (e) {
      if (e instanceof DamagedFileError) return null;
      throw e;
    }
    return lastUplinkOf(u);
  }

  /** Each operation of the file store is synced as it runs: `fn`'s changes are durable when it returns. */
  grouped<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  close(): void {
    for (const id of [...this.pools.keys()]) this.unmount(id);
  }
}
