// The station's compact key store (issue 13): one SQLite database for every terminal, in place of
// a 2 MiB pool image per terminal. A fleet of ten thousand terminals then needs the keys' bytes
// and a few rows each, not 20 GB of images, and a message costs a few indexed rows, not a lock
// file, a remount and an fsync of its own.
//
// It keeps every rule of the pool-image store (store.ts), with the same errors: a key is served
// once (a batch's frontier only moves forward, keys skipped before a named one are burned), a
// consumed key's bytes are gone from the database (its chunk row deleted, or its bytes zeroed in
// the one chunk still in use; `secure_delete` overwrites freed pages), batches are staged then
// committed, sequence numbers never go back, and a terminal holds at most POOL_MAX_BATCHES live
// batches and DEFAULT_MAX_KEY_BITS stored bits, as its module does.
//
// Who writes: SQLite's own locking (WAL: one writer at a time, readers never blocked). The station
// service, the KMD's exports and collects and `kmd void` may run at once in several processes; each
// change is one transaction, so the loser of a race waits (busy_timeout) and then sees the winner's
// commit. A crash (kill -9, power) loses at most transactions not yet committed, and no answer is
// sent before its commit: `grouped` commits the messages of one event-loop turn together, with
// one fsync (synchronous=FULL), and answers none of them before.
//
// Hand-written SQL on better-sqlite3 (synchronous, so the store keeps the pool-image store's
// synchronous interface); no ORM: the schema is five small tables.
import { chmodSync, existsSync, lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PgDriver, SqliteDriver } from './sql-driver.js';
import type { Param, SqlDriver } from './sql-driver.js';
import { DEFAULT_MAX_KEY_BITS, MAX_KEY_BYTES } from '../../firmware/keypool/key-pool.js';
import type { ConsumedKey, PoolStatus, Purpose } from '../../firmware/keypool/key-pool.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { poolBatchId } from '../../firmware/commands/inject.js';
import { TERMINAL_ID_RE } from '../../firmware/crypto/_util.js';
import { DamagedFileError } from '../json-file.js';
import { StationStoreError, USAGE_DAYS, lastUplinkOf } from './store.js';
import type { LastUplink, StationAccount, StationBatchMeta, StationKeyStore, StationState } from './store.js';

/** The database file in a station folder; its presence makes the folder a SQLite store. */
export const SQL_STORE_FILE = 'station.sqlite';
/** Key bytes per chunk row: a consumed key's bytes leave the database with their chunk. */
export const KEY_CHUNK = 1024;
/** Opened uplinks remembered per terminal, to answer a retry (more than a terminal's window). */
export const OPENED_KEPT = 16;
/** Live batches per terminal, as a module's pool holds (KeyPool's default maxBatches). */
export const POOL_MAX_BATCHES = 32;
const SCHEMA_VERSION = 1;
/** The advisory lock (PostgreSQL) under which the tables are made. */
const SCHEMA_LOCK = 0x716b74;
/** The advisory lock (PostgreSQL) a station service holds for its life. */
const SERVICE_LOCK = 0x716b75;
/** How often the write-ahead log is truncated when anything changed (see checkpoint()). */
export const CHECKPOINT_MS = 1000;
const DAY_MS = 86_400_000;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A damaged or foreign database file: named, as a damaged pool image is (exit 6), not a bare SQLite message. */
function damaged(file: string, e: unknown): unknown {
  const code = (e as { code?: unknown }).code;
  return code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT' ? new DamagedFileError(file, `not a readable station database (${code}: ${(e as Error).message})`) : e;
}

/** The schema, in SQLite's words; PostgreSQL's differ in types only (pgSchema). */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS terminal (
  id TEXT PRIMARY KEY,
  last_seq INTEGER,                         -- the last committed batch seq (anti-rollback); NULL: none yet
  retired_bits INTEGER NOT NULL DEFAULT 0,  -- consumed bits of batches no longer held
  last_uplink TEXT                          -- JSON of LastUplink, informational
);
CREATE TABLE IF NOT EXISTS batch (
  terminal TEXT NOT NULL REFERENCES terminal(id),
  pool_id INTEGER NOT NULL,                 -- poolBatchId(batch_id): the id keys are named by
  batch_id BLOB NOT NULL,                   -- the 16-byte batch id
  seq INTEGER NOT NULL,
  purpose TEXT NOT NULL,
  bits INTEGER NOT NULL,
  staged INTEGER NOT NULL,                  -- 1: reserved, keys not all in yet; 0: committed
  active INTEGER NOT NULL DEFAULT 0,
  activated_by TEXT,
  frontier INTEGER NOT NULL DEFAULT 0,      -- bytes from the start consumed or burned
  PRIMARY KEY (terminal, pool_id)
);
CREATE TABLE IF NOT EXISTS chunk (
  terminal TEXT NOT NULL,
  pool_id INTEGER NOT NULL,
  n INTEGER NOT NULL,                       -- bytes n*KEY_CHUNK .. of the batch
  bytes BLOB NOT NULL,
  PRIMARY KEY (terminal, pool_id, n)
);
CREATE TABLE IF NOT EXISTS opened (
  id INTEGER PRIMARY KEY AUTOINCREMENT,     -- the inbox line's id: increasing, never reused
  terminal TEXT NOT NULL,
  digest BLOB NOT NULL,                     -- SHA-256 of the uplink's bytes
  line TEXT,                                -- its inbox line (JSON, without the id) until filed; then NULL
  n INTEGER NOT NULL,
  key_bits INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS opened_by_digest ON opened (terminal, digest);
CREATE INDEX IF NOT EXISTS opened_unfiled ON opened (id) WHERE line IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage (
  terminal TEXT NOT NULL,
  day INTEGER NOT NULL,
  bits INTEGER NOT NULL,
  PRIMARY KEY (terminal, day)
);
`;

/** PostgreSQL: BLOB is BYTEA, counts of bits BIGINT, the id a BIGSERIAL. */
const pgSchema = (): string =>
  SCHEMA.replace(/\bBLOB\b/g, 'BYTEA')
    .replace('id INTEGER PRIMARY KEY AUTOINCREMENT', 'id BIGSERIAL PRIMARY KEY')
    .replace(/\b(retired_bits|bits|frontier|key_bits|last_seq|pool_id|seq|day|n) INTEGER\b/g, '$1 BIGINT');

interface BatchRow {
  terminal: string;
  pool_id: number;
  batch_id: Buffer;
  seq: number;
  purpose: Purpose;
  bits: number;
  staged: number;
  active: number;
  activated_by: 'receipt' | 'first-use' | null;
  frontier: number;
}

/** A committed batch with every key used: kept (named) until the next change prunes it, as the file store does. */
const retired = (b: BatchRow): boolean => b.staged === 0 && b.frontier * 8 >= b.bits;

export interface SqlStoreStats {
  /** Commits of grouped work, and the messages they carried. */
  groups: number;
  groupedOps: number;
}

export class SqlStationStore implements StationKeyStore {
  readonly kind: 'sqlite' | 'postgres' = 'sqlite';
  /** The database under the store (SQLite in process, or PostgreSQL through a worker). */
  readonly d: SqlDriver;
  readonly stats: SqlStoreStats = { groups: 0, groupedOps: 0 };
  /** Called when a group's commit failed (its work was rolled back): the station drops what it kept in memory of it. */
  onGroupFailure: ((e: Error) => void) | undefined;
  private waiters: Array<{ ok: () => void; fail: (e: Error) => void }> = [];
  /** Consumed and voided keys' pages linger in the write-ahead log until it is truncated: at most CHECKPOINT_MS. */
  private readonly checkpointTimer: NodeJS.Timeout;
  /** -1: the first checkpoint runs whatever this connection did (a crash may have left a log). */
  private lastChanges = -1;
  /** Transactions open inside this one's (savepoints). */
  private depth = 0;
  /** Uplinks recorded per terminal since its `opened` rows were last trimmed (one number per terminal). */
  private readonly sinceTrim = new Map<string, number>();
  private inGroup = false;
  /** A group's transaction is open: its changes are not committed yet. */
  get groupOpen(): boolean {
    return this.inGroup;
  }
  private readonly q;

  /** Open the store in `dir`; with `create`, make it (and the folder) if it is not there. */
  /**
   * Open the store in `dir`: SQLite in `dir/station.sqlite` (with `create`, made if it is not
   * there), or with `url` the PostgreSQL database it names (its tables made if they are not
   * there); `dir` keeps the inbox and the service lock either way.
   */
  constructor(
    readonly dir: string,
    o: { create?: boolean; url?: string } = {},
  ) {
    if (o.url !== undefined) {
      this.kind = 'postgres';
      this.d = new PgDriver(o.url);
    } else {
      const file = join(dir, SQL_STORE_FILE);
      if (!existsSync(file)) {
        if (!o.create) throw new StationStoreError(`no station database at ${file}`, 'NO_TERMINAL');
        mkdirSync(dir, { recursive: true, mode: 0o700 });
      } else if (!lstatSync(file).isFile()) {
        // A link (or anything else) put in the database's place is not followed: not opened, not chmodded.
        throw new DamagedFileError(file, 'not a regular file (a link or a device in its place)');
      }
      const d = new SqliteDriver(file);
      this.d = d;
      try {
        // The journal files take the database file's mode (SQLite's unix VFS), so this covers them.
        chmodSync(file, 0o600);
        d.db.pragma('journal_mode = WAL');
        d.db.pragma('synchronous = FULL');
        d.db.pragma('secure_delete = ON');
        d.db.pragma('foreign_keys = ON');
        d.db.pragma('busy_timeout = 10000');
      } catch (e) {
        d.close();
        throw damaged(file, e);
      }
    }
    try {
      this.tx(() => {
        // Two processes making the tables at once: one at a time (SQLite's BEGIN IMMEDIATE is one).
        if (this.d.kind === 'postgres') this.d.run('SELECT pg_advisory_xact_lock(?)', [SCHEMA_LOCK]);
        // A database that already holds another program's tables is not taken over.
        const hadMeta = this.tableExists('meta');
        if (!hadMeta && this.foreignTables()) {
          throw new DamagedFileError(this.d.kind === 'sqlite' ? join(dir, SQL_STORE_FILE) : 'the station database', 'it holds tables of another program (no qkt schema): not a station database');
        }
        this.d.exec(this.d.kind === 'postgres' ? pgSchema() : SCHEMA);
        const v = this.d.get<{ v: number }>('SELECT v FROM meta WHERE k = ?', ['schema']);
        if (v === undefined) this.d.run('INSERT INTO meta (k, v) VALUES (?, ?)', ['schema', SCHEMA_VERSION]);
        else if (v.v !== SCHEMA_VERSION) throw new Error(`the station database has schema ${v.v}; this qkt reads schema ${SCHEMA_VERSION}`);
      });
    } catch (e) {
      this.d.close();
      throw this.d.kind === 'sqlite' ? damaged(join(dir, SQL_STORE_FILE), e) : e;
      throw e;
    }
    this.checkpointTimer = setInterval(() => this.checkpoint(), CHECKPOINT_MS).unref();
    const st = <R = unknown>(sql: string) => ({
      run: (...p: Param[]) => this.d.run(sql, p),
      get: (...p: Param[]) => this.d.get<R>(sql, p),
      all: (...p: Param[]) => this.d.all<R>(sql, p),
    });
    this.q = {
      terminal: st('SELECT id, last_seq, retired_bits, last_uplink FROM terminal WHERE id = ?'),
      addTerminal: st('INSERT INTO terminal (id) VALUES (?) ON CONFLICT DO NOTHING'),
      page: st<{ id: string }>('SELECT id FROM terminal WHERE id > ? ORDER BY id LIMIT ?'),
      all: st<{ id: string }>('SELECT id FROM terminal ORDER BY id'),
      batches: st('SELECT * FROM batch WHERE terminal = ? ORDER BY seq'),
      batchByPool: st('SELECT * FROM batch WHERE terminal = ? AND pool_id = ?'),
      batchById: st('SELECT * FROM batch WHERE terminal = ? AND batch_id = ?'),
      insertBatch: st('INSERT INTO batch (terminal, pool_id, batch_id, seq, purpose, bits, staged) VALUES (?, ?, ?, ?, ?, ?, 1)'),
      deleteBatch: st('DELETE FROM batch WHERE terminal = ? AND pool_id = ?'),
      deleteChunks: st('DELETE FROM chunk WHERE terminal = ? AND pool_id = ?'),
      deleteChunksBelow: st('DELETE FROM chunk WHERE terminal = ? AND pool_id = ? AND n < ?'),
      insertChunk: st('INSERT INTO chunk (terminal, pool_id, n, bytes) VALUES (?, ?, ?, ?)'),
      chunks: st('SELECT n, bytes FROM chunk WHERE terminal = ? AND pool_id = ? AND n BETWEEN ? AND ? ORDER BY n'),
      setChunk: st('UPDATE chunk SET bytes = ? WHERE terminal = ? AND pool_id = ? AND n = ?'),
      commitBatch: st('UPDATE batch SET staged = 0 WHERE terminal = ? AND pool_id = ?'),
      setLastSeq: st('UPDATE terminal SET last_seq = ? WHERE id = ?'),
      setFrontier: st('UPDATE batch SET frontier = ? WHERE terminal = ? AND pool_id = ?'),
      addRetired: st('UPDATE terminal SET retired_bits = retired_bits + ? WHERE id = ?'),
      activate: st('UPDATE batch SET active = 1, activated_by = ? WHERE terminal = ? AND pool_id = ?'),
      setLastUplink: st('UPDATE terminal SET last_uplink = ? WHERE id = ?'),
      addUsage: st<{ bits: number }>('INSERT INTO usage (terminal, day, bits) VALUES (?, ?, ?) ON CONFLICT (terminal, day) DO UPDATE SET bits = usage.bits + excluded.bits RETURNING bits'),
      isActive: st('SELECT 1 AS a FROM batch WHERE terminal = ? AND batch_id = ? AND active = 1'),
      trimUsage: st('DELETE FROM usage WHERE terminal = ? AND (day <= ? OR day > ?)'),
      usage: st<{ day: number; bits: number }>('SELECT day, bits FROM usage WHERE terminal = ? ORDER BY day'),
      openedBefore: st('SELECT n, key_bits AS "keyBits" FROM opened WHERE terminal = ? AND digest = ?'),
      recordOpened: st<{ id: number }>('INSERT INTO opened (terminal, digest, line, n, key_bits) VALUES (?, ?, ?, ?, ?) RETURNING id'),
      trimOpened: st('DELETE FROM opened WHERE terminal = ? AND line IS NULL AND id <= (SELECT id FROM opened WHERE terminal = ? ORDER BY id DESC LIMIT 1 OFFSET ?)'),
      unfiled: st('SELECT id, line FROM opened WHERE line IS NOT NULL ORDER BY id LIMIT ?'),
      markFiled: st('UPDATE opened SET line = NULL WHERE id = ?'),
    };
  }

  private tableExists(name: string): boolean {
    return this.d.kind === 'sqlite'
      ? this.d.get("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", [name]) !== undefined
      : this.d.get('SELECT 1 AS x FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?', [name]) !== undefined;
  }

  /** Any table in the database (its default schema) at all: in one without qkt's `meta`, another program's. */
  private foreignTables(): boolean {
    return this.d.kind === 'sqlite'
      ? this.d.get("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") !== undefined
      : this.d.get("SELECT 1 AS x FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'") !== undefined;
  }

  // ------------------------------------------------------------------ terminals

  private static valid(terminalId: string): boolean {
    return TERMINAL_ID_RE.test(terminalId) && !/^\.+$/.test(terminalId);
  }

  hasTerminal(terminalId: string): boolean {
    return SqlStationStore.valid(terminalId) && this.q.terminal.get(terminalId) !== undefined;
  }

  terminalsPage(after: string | undefined, max: number): { ids: string[]; more: boolean } {
    const ids = this.q.page.all(after ?? '', max + 1).map((r) => r.id);
    const more = ids.length > max;
    return { ids: more ? ids.slice(0, max) : ids, more };
  }

  terminals(): string[] {
    return this.q.all.all().map((r) => r.id);
  }

  private terminalRow(terminalId: string): { id: string; last_seq: number | null; retired_bits: number; last_uplink: string | null } {
    const t = SqlStationStore.valid(terminalId) ? this.q.terminal.get(terminalId) : undefined;
    if (!t) throw new StationStoreError(`the station holds no keys for terminal ${terminalId}`, 'NO_TERMINAL');
    return t as { id: string; last_seq: number | null; retired_bits: number; last_uplink: string | null };
  }

  private rows(terminalId: string): BatchRow[] {
    return this.q.batches.all(terminalId) as BatchRow[];
  }

  /**
   * Run `fn` as one transaction, or a savepoint inside one (a group's, or an enclosing call's):
   * if it throws, its changes are undone. On PostgreSQL, a transaction about one terminal first
   * takes that terminal's lock (pg_advisory_xact_lock), so two processes' read-check-write of one
   * terminal's rows (taking a key, staging a batch) do not interleave; SQLite's BEGIN IMMEDIATE
   * makes writers one at a time anyway.
   */
  private tx<T>(fn: () => T, terminalId?: string): T {
    const outer = this.depth === 0 && !this.groupOpen;
    const sp = `qkt_sp${this.depth}`;
    this.d.exec(outer ? (this.d.kind === 'sqlite' ? 'BEGIN IMMEDIATE' : 'BEGIN') : `SAVEPOINT ${sp}`);
    this.depth++;
    let v: T;
    try {
      if (terminalId !== undefined && this.d.kind === 'postgres') this.d.run('SELECT pg_advisory_xact_lock(hashtext(?))', [terminalId]);
      v = fn();
    } catch (e) {
      this.depth--;
      try {
        this.d.exec(outer ? 'ROLLBACK' : `ROLLBACK TO ${sp}; RELEASE ${sp}`);
      } catch {
        // the connection is gone: nothing of it was committed
      }
      throw e;
    }
    this.depth--;
    this.d.exec(outer ? 'COMMIT' : `RELEASE ${sp}`);
    return v;
  }

  state(terminalId: string): StationState {
    const batches: StationState['batches'] = {};
    if (!SqlStationStore.valid(terminalId)) return { batches };
    for (const b of this.rows(terminalId)) {
      batches[String(b.pool_id)] = { batchId: hex(b.batch_id), seq: b.seq, bits: b.bits, active: b.active === 1, ...(b.activated_by ? { activatedBy: b.activated_by } : {}) };
    }
    return { batches };
  }

  // ------------------------------------------------------------------ batches in

  /** Delete a batch row and its keys; its used bits join the terminal's retired count. */
  private drop(terminalId: string, b: BatchRow): void {
    if (b.staged === 0 && b.frontier > 0) this.q.addRetired.run(b.frontier * 8, terminalId);
    this.q.deleteChunks.run(terminalId, b.pool_id);
    this.q.deleteBatch.run(terminalId, b.pool_id);
  }

  /** Forget batches with every key used (the file store's prune: names live as long as the pool's batches). */
  private prune(terminalId: string): void {
    for (const b of this.rows(terminalId)) if (retired(b)) this.drop(terminalId, b);
  }

  reserve(terminalId: string, h: StationBatchMeta): void {
    if (!SqlStationStore.valid(terminalId)) throw new TypeError(`not a terminal id: ${JSON.stringify(terminalId).slice(0, 40)}`);
    const poolId = poolBatchId(h.batchId);
    if (h.batchId.length !== 16) throw new TypeError('batch id must be 16 bytes');
    if (!Number.isSafeInteger(h.bits) || h.bits <= 0 || h.bits % 8 !== 0) throw new TypeError('bits must be a positive multiple of 8');
    if (!Number.isInteger(h.seq) || h.seq < 0 || h.seq > 0xffffffff) throw new TypeError('seq must be a u32');
    this.tx(() => {
      this.q.addTerminal.run(terminalId);
      // A batch left staged by an export that never finished: its keys were never handed out.
      // Dropped whether or not the new one fits (as the pool-image store does).
      for (const b of this.rows(terminalId)) if (b.staged === 1) this.drop(terminalId, b);
    }, terminalId);
    this.tx(() => {
      this.prune(terminalId);
      const t = this.terminalRow(terminalId);
      if (t.last_seq !== null && h.seq <= t.last_seq) throw new PoolError('ROLLBACK', `batch seq ${h.seq} is not above the last committed seq ${t.last_seq}`);
      const live = this.rows(terminalId);
      if (live.some((b) => b.pool_id === poolId)) throw new PoolError('DUPLICATE_BATCH', `batch ${poolId} is already in the pool`);
      if (live.length >= POOL_MAX_BATCHES) throw new PoolError('TOO_MANY_BATCHES', `the pool holds its maximum of ${POOL_MAX_BATCHES} batches`);
      const stored = live.reduce((s, b) => s + b.bits - b.frontier * 8, 0);
      if (stored + h.bits > DEFAULT_MAX_KEY_BITS) throw new PoolError('NO_SPACE', `batch of ${h.bits} bits does not fit: ${stored} stored, max ${DEFAULT_MAX_KEY_BITS}`);
      this.q.insertBatch.run(terminalId, poolId, Buffer.from(h.batchId), h.seq, h.purpose, h.bits);
    }, terminalId);
  }

  fill(terminalId: string, batchId: Uint8Array, keys: Uint8Array): void {
    this.tx(() => {
      this.terminalRow(terminalId);
      const poolId = poolBatchId(batchId);
      const b = this.q.batchByPool.get(terminalId, poolId) as BatchRow | undefined;
      if (!b || b.staged !== 1 || !Buffer.from(batchId).equals(b.batch_id) || b.bits !== keys.length * 8) {
        throw new StationStoreError(`batch ${hex(batchId)} of terminal ${terminalId} is not reserved in the station store`, 'NOT_STAGED');
      }
      const t = this.terminalRow(terminalId);
      if (t.last_seq !== null && b.seq <= t.last_seq) throw new PoolError('ROLLBACK', `batch seq ${b.seq} is not above the last committed seq ${t.last_seq}`);
      for (let off = 0, n = 0; off < keys.length; off += KEY_CHUNK, n++) {
        this.q.insertChunk.run(terminalId, poolId, n, Buffer.from(keys.subarray(off, Math.min(keys.length, off + KEY_CHUNK))));
      }
      this.q.commitBatch.run(terminalId, poolId);
      this.q.setLastSeq.run(b.seq, terminalId);
      this.prune(terminalId);
    }, terminalId);
  }

  cancel(terminalId: string, batchId: Uint8Array): void {
    if (!this.hasTerminal(terminalId)) return;
    this.tx(() => {
      const b = this.q.batchByPool.get(terminalId, poolBatchId(batchId)) as BatchRow | undefined;
      if (b && b.staged === 1 && Buffer.from(batchId).equals(b.batch_id)) this.drop(terminalId, b);
      this.prune(terminalId);
    }, terminalId);
  }

  addBatch(terminalId: string, h: StationBatchMeta, keys: Uint8Array): void {
    this.reserve(terminalId, h);
    try {
      this.fill(terminalId, h.batchId, keys);
    } catch (e) {
      this.cancel(terminalId, h.batchId);
      throw e;
    }
  }

  retireAbsent(terminalId: string, belowSeq: number, liveHex: ReadonlySet<string>): Array<{ batchId: string; bits: number }> {
    if (!this.hasTerminal(terminalId)) return [];
    return this.tx(() => {
      const out: Array<{ batchId: string; bits: number }> = [];
      for (const b of this.rows(terminalId)) {
        const id = hex(b.batch_id);
        if (b.seq >= belowSeq || liveHex.has(id)) continue;
        out.push({ batchId: id, bits: this.voidBatch(terminalId, id) });
      }
      return out;
    }, terminalId);
  }

  voidBatch(terminalId: string, batchIdHex: string): number {
    return this.tx(() => {
      this.terminalRow(terminalId);
      const b = /^[0-9a-f]{32}$/.test(batchIdHex) ? (this.q.batchById.get(terminalId, Buffer.from(batchIdHex, 'hex')) as BatchRow | undefined) : undefined;
      if (!b) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
      const bits = b.staged === 1 ? b.bits : b.bits - b.frontier * 8;
      this.drop(terminalId, b);
      this.prune(terminalId);
      return bits;
    }, terminalId);
  }

  activate(terminalId: string, batchIdHex: string, by: 'receipt' | 'first-use'): boolean {
    // Every uplink activates its batch: an active one is answered with one read, no transaction.
    if (/^[0-9a-f]{32}$/.test(batchIdHex) && this.q.isActive.get(terminalId, Buffer.from(batchIdHex, 'hex')) !== undefined) return false;
    return this.tx(() => {
      this.terminalRow(terminalId);
      const b = /^[0-9a-f]{32}$/.test(batchIdHex) ? (this.q.batchById.get(terminalId, Buffer.from(batchIdHex, 'hex')) as BatchRow | undefined) : undefined;
      if (!b) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
      if (b.active === 1) return false;
      this.q.activate.run(by, terminalId, b.pool_id);
      return true;
    }, terminalId);
  }

  // ------------------------------------------------------------------ keys out

  private named(terminalId: string, batchId: Uint8Array, known = true): BatchRow {
    if (known) this.terminalRow(terminalId);
    const b = this.q.batchByPool.get(terminalId, poolBatchId(batchId)) as BatchRow | undefined;
    if (!b || !Buffer.from(batchId).equals(b.batch_id)) {
      throw new StationStoreError(`batch ${hex(batchId)} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
    }
    return b;
  }

  batch(terminalId: string, batchId: Uint8Array): { active: boolean; poolId: number } {
    // As the file store: an unknown terminal's batch is an unknown batch here.
    const b = this.named(terminalId, batchId, false);
    return { active: b.active === 1, poolId: b.pool_id };
  }

  holdsBatch(terminalId: string, batchId: Uint8Array): boolean {
    if (!SqlStationStore.valid(terminalId)) return false;
    const b = this.q.batchByPool.get(terminalId, poolBatchId(batchId)) as BatchRow | undefined;
    return b !== undefined && Buffer.from(batchId).equals(b.batch_id);
  }

  /** The key's byte offset in its batch, or the refusal the pool would give (same codes). */
  private locate(b: BatchRow, bitOffset: number, bytes: number): number {
    if (!Number.isSafeInteger(bitOffset)) throw new TypeError('keyId must be {batchId: u32, bitOffset: integer}');
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > MAX_KEY_BYTES) throw new RangeError(`bytes must be an integer in 1..${MAX_KEY_BYTES}`);
    if (b.staged === 1 || bitOffset < 0 || bitOffset % 8 !== 0 || bitOffset / 8 + bytes > b.bits / 8 || retired(b)) {
      throw new PoolError('NOT_PRESENT', `no key of ${bytes} bytes at batch ${b.pool_id} bit ${bitOffset}`);
    }
    if (bitOffset / 8 < b.frontier) throw new PoolError('ALREADY_CONSUMED', `key at batch ${b.pool_id} bit ${bitOffset} was already consumed`);
    return bitOffset / 8;
  }

  /** Bytes [o, o+len) of the batch's keys. */
  private read(terminalId: string, b: BatchRow, o: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const rows = this.q.chunks.all(terminalId, b.pool_id, Math.floor(o / KEY_CHUNK), Math.floor((o + len - 1) / KEY_CHUNK)) as Array<{ n: number; bytes: Buffer }>;
    let got = 0;
    for (const r of rows) {
      const start = r.n * KEY_CHUNK;
      const from = Math.max(o, start);
      const to = Math.min(o + len, start + r.bytes.length);
      if (to > from) {
        out.set(r.bytes.subarray(from - start, to - start), from - o);
        got += to - from;
      }
      r.bytes.fill(0);
    }
    if (got !== len) {
      out.fill(0);
      throw new PoolError('CORRUPT', `the station database lacks key bytes of batch ${b.pool_id} (${got} of ${len})`);
    }
    return out;
  }

  takeById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number, allowInactive = false): ConsumedKey {
    return this.tx(() => {
      const b = this.named(terminalId, batchId);
      if (b.active !== 1 && !allowInactive) throw new StationStoreError(`batch ${hex(batchId)} is not active yet (no receipt)`, 'INACTIVE');
      const o = this.locate(b, bitOffset, bytes);
      const key = this.read(terminalId, b, o, bytes);
      const end = o + bytes;
      // The used bytes leave the database: whole chunks below the new frontier go, and the used
      // head of the chunk it falls in is zeroed (its remaining keys stay).
      this.q.deleteChunksBelow.run(terminalId, b.pool_id, Math.floor(end / KEY_CHUNK));
      const partial = end % KEY_CHUNK;
      if (partial !== 0 && end < b.bits / 8) {
        const n = Math.floor(end / KEY_CHUNK);
        const row = (this.q.chunks.all(terminalId, b.pool_id, n, n) as Array<{ bytes: Buffer }>)[0];
        if (row) {
          row.bytes.fill(0, 0, partial);
          this.q.setChunk.run(row.bytes, terminalId, b.pool_id, n);
          row.bytes.fill(0);
        }
      }
      if (end >= b.bits / 8) this.q.deleteChunks.run(terminalId, b.pool_id);
      this.q.setFrontier.run(end, terminalId, b.pool_id);
      return { keyId: { batchId: b.pool_id, bitOffset }, key, skippedBits: (o - b.frontier) * 8 };
    }, terminalId);
  }

  peekById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number): Uint8Array {
    const b = this.named(terminalId, batchId);
    return this.read(terminalId, b, this.locate(b, bitOffset, bytes), bytes);
  }

  // ------------------------------------------------------------------ accounts

  status(terminalId: string): PoolStatus & { active: string[]; inactive: string[] } {
    const t = this.terminalRow(terminalId);
    const rows = this.rows(terminalId);
    const committed = rows.filter((b) => b.staged === 0 && !retired(b));
    const st = rows.find((b) => b.staged === 1);
    return {
      storedKeyBits: committed.reduce((s, b) => s + b.bits - b.frontier * 8, 0),
      maxKeyBits: DEFAULT_MAX_KEY_BITS,
      consumedKeyBits: t.retired_bits + rows.reduce((s, b) => s + (b.staged === 0 ? b.frontier * 8 : 0), 0),
      batches: committed.map((b) => ({ batchId: b.pool_id, seq: b.seq, purpose: b.purpose, bits: b.bits, consumedBits: b.frontier * 8, firstKeyOffset: 0 })),
      staging: st ? { batchId: st.pool_id, seq: st.seq, purpose: st.purpose, bits: st.bits, durableBits: 0 } : null,
      lastSeq: t.last_seq,
      // No flash under this store: no sectors to count.
      sectors: { data: 0, free: 0, inUse: 0, releasable: 0, bad: 0 },
      lowWatermarkBits: 0,
      active: rows.filter((b) => b.active === 1).map((b) => hex(b.batch_id)),
      inactive: rows.filter((b) => b.active !== 1).map((b) => hex(b.batch_id)),
    };
  }

  account(terminalId: string): StationAccount {
    const t = this.terminalRow(terminalId);
    const rows = this.rows(terminalId);
    let activeKeyBits = 0;
    let inactiveKeyBits = 0;
    for (const b of rows) {
      if (b.staged === 1 || retired(b)) continue;
      if (b.active === 1) activeKeyBits += b.bits - b.frontier * 8;
      else inactiveKeyBits += b.bits - b.frontier * 8;
    }
    const activeBatches = rows.filter((b) => b.active === 1).length;
    return {
      storedKeyBits: activeKeyBits + inactiveKeyBits,
      maxKeyBits: DEFAULT_MAX_KEY_BITS,
      consumedKeyBits: t.retired_bits + rows.reduce((s, b) => s + (b.staged === 0 ? b.frontier * 8 : 0), 0),
      activeBatches,
      inactiveBatches: rows.length - activeBatches,
      activeKeyBits,
      inactiveKeyBits,
    };
  }

  recordUplink(terminalId: string, u: LastUplink): void {
    this.tx(() => {
      this.terminalRow(terminalId);
      const day = Math.floor(u.at / DAY_MS);
      this.q.setLastUplink.run(JSON.stringify(u), terminalId);
      // A new day's row: the days out of the window go (USAGE_DAYS rows at most per terminal).
      if (this.q.addUsage.get(terminalId, day, u.keyBits)?.bits === u.keyBits) this.q.trimUsage.run(terminalId, day - USAGE_DAYS, day);
    }, terminalId);
  }

  usageDays(terminalId: string): Array<[number, number]> {
    if (!SqlStationStore.valid(terminalId)) return [];
    return this.q.usage.all(terminalId).map((r): [number, number] => [r.day, r.bits]);
  }

  lastUplink(terminalId: string): LastUplink | null {
    const raw = SqlStationStore.valid(terminalId) ? (this.q.terminal.get(terminalId) as { last_uplink: string | null } | undefined)?.last_uplink : null;
    if (!raw) return null;
    try {
      return lastUplinkOf(JSON.parse(raw));
    } catch {
      return null;
    }
  }

  // ------------------------------------------------------------------ opened uplinks (exactly once)

  /**
   * The answer the station gave an uplink of these bytes (SHA-256 `digest`) that this store
   * opened: a terminal sending it again after a lost answer (the station died between its commit
   * and the answer) gets that answer, and nothing is opened or filed twice. The last
   * OPENED_KEPT per terminal are known; an older one is refused as a replay (its keys are used).
   */
  openedBefore(terminalId: string, digest: Uint8Array): { n: number; keyBits: number } | undefined {
    // In a transaction (a group) on PostgreSQL: the terminal's lock first, as the taking of its
    // keys will. Another worker opening the same message now (a resend that reached two workers)
    // has committed by the time this reads, so the message is known here, not refused as a
    // replay of keys already taken.
    if (this.d.kind === 'postgres' && (this.groupOpen || this.depth > 0)) this.d.run('SELECT pg_advisory_xact_lock(hashtext(?))', [terminalId]);
    return this.q.openedBefore.get(terminalId, Buffer.from(digest)) as { n: number; keyBits: number } | undefined;
  }

  /**
   * Record an opened uplink with its inbox line, in the caller's transaction (the one that took
   * its keys): the line is filed from here, so a crash after the commit files it at the next
   * start. Returns the line's id.
   */
  recordOpened(terminalId: string, digest: Uint8Array, line: string, n: number, keyBits: number): number {
    const id = this.q.recordOpened.get(terminalId, Buffer.from(digest), line, n, keyBits)!.id;
    // Trimmed at a terminal's every OPENED_KEPT-th uplink in this process (and at its first): the
    // filed rows beyond its last OPENED_KEPT go. Rows not filed yet stay (their lines are the
    // inbox's), so a terminal holds about 2 x OPENED_KEPT rows plus those of one group still being
    // filed; while the inbox cannot be written, unfiled rows wait here (the backlog) until it can.
    const since = this.sinceTrim.get(terminalId) ?? OPENED_KEPT;
    if (since >= OPENED_KEPT) {
      this.q.trimOpened.run(terminalId, terminalId, OPENED_KEPT);
      this.sinceTrim.set(terminalId, 1);
    } else {
      this.sinceTrim.set(terminalId, since + 1);
    }
    return id;
  }

  /** Lines recorded and not marked filed yet, oldest first, at most `max`. */
  unfiled(max = 10_000): Array<{ id: number; line: string }> {
    return this.q.unfiled.all(max) as Array<{ id: number; line: string }>;
  }

  /** The lines are in the inbox file: their text leaves the database. */
  markFiled(ids: readonly number[]): void {
    if (ids.length === 0) return;
    this.tx(() => {
      for (const id of ids) this.q.markFiled.run(id);
    });
  }

  /**
   * PostgreSQL: take the database's station-service lock (a session advisory lock, held while
   * this connection lives: a killed service's lock goes with its connection); false if another
   * connection holds it. SQLite: always true (the folder's service lock covers its one file).
   */
  claimService(): boolean {
    if (this.d.kind !== 'postgres') return true;
    return this.d.get<{ ok: boolean }>('SELECT pg_try_advisory_lock(?) AS ok', [SERVICE_LOCK])?.ok === true;
  }

  // ------------------------------------------------------------------ group commit

  /**
   * Run `fn` in the open group's transaction (as a savepoint: if `fn` throws, its changes alone
   * are undone), opening one if none is; the group commits once the event loop has run what came
   * in this turn, and only then does the promise resolve. A failed commit rejects every member.
   */
  grouped<T>(fn: () => T): Promise<T> {
    if (!this.groupOpen) {
      this.d.exec(this.d.kind === 'sqlite' ? 'BEGIN IMMEDIATE' : 'BEGIN');
      this.inGroup = true;
      setImmediate(() => this.commitGroup());
    }
    let v: T;
    try {
      v = this.tx(fn);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    this.stats.groupedOps++;
    return new Promise<T>((resolve, reject) => this.waiters.push({ ok: () => resolve(v), fail: reject }));
  }

  private commitGroup(): void {
    if (!this.groupOpen) return;
    const ws = this.waiters;
    this.waiters = [];
    this.inGroup = false;
    try {
      this.d.exec('COMMIT');
    } catch (e) {
      try {
        this.d.exec('ROLLBACK');
      } catch {
        // the connection is gone: nothing was committed
      }
      this.onGroupFailure?.(e as Error);
      for (const w of ws) w.fail(e as Error);
      return;
    }
    this.stats.groups++;
    for (const w of ws) w.ok();
  }

  /**
   * Copy the log into the database and truncate it, when anything changed since the last time:
   * the pages that held a key before it was used (and secure_delete zeroed it in the database)
   * leave the log's file. Skipped while a group is open, and if readers hold the log (next time).
   */
  checkpoint(): void {
    if (!(this.d instanceof SqliteDriver) || !this.d.open || this.groupOpen || this.depth > 0) return;
    const changes = this.d.get<{ c: number }>('SELECT total_changes() AS c')?.c ?? 0;
    if (changes === this.lastChanges) return;
    try {
      const r = this.d.db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>;
      if (r[0]?.busy === 0) this.lastChanges = changes;
    } catch {
      // busy with another process' write: the next tick tries again
    }
  }

  close(): void {
    if (!this.d.open) return;
    clearInterval(this.checkpointTimer);
    this.commitGroup();
    this.checkpoint();
    this.d.close();
  }
}
