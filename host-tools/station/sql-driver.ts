// The two databases the SQL station store runs on, behind one small synchronous interface: SQLite
// (better-sqlite3, in process) and PostgreSQL (the `pg` client). The store's rules are written once
// (sql-store.ts) and run on either; the tests run the same model test on both.
//
// PostgreSQL is asynchronous in Node, and the store is synchronous (the station, the KMD's
// exports and collects call it between flash and file operations that are). So the `pg` client
// runs in a worker thread, and each query blocks this thread on a shared word (Atomics.wait) until
// the worker posts the answer: hand-written because the pattern is a dozen lines (a library such as
// synckit wants the worker as a file, which a TypeScript source tree does not have at run time).
// A query then costs a round trip to the worker and to the server; group commit (one COMMIT for
// the uplinks of a turn) keeps the fsyncs shared as on SQLite.
import { redactUrl } from '../redact-url.js';
import { createRequire } from 'node:module';
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import Database from 'better-sqlite3';

export type Param = string | number | bigint | Buffer | null;

export interface SqlDriver {
  readonly kind: 'sqlite' | 'postgres';
  /** Run a statement (`?` placeholders); `rows` if it returns any (RETURNING). */
  run(sql: string, params?: readonly Param[]): { changes: number };
  get<T>(sql: string, params?: readonly Param[]): T | undefined;
  all<T>(sql: string, params?: readonly Param[]): T[];
  /** Statements without parameters (schema, BEGIN, COMMIT, SAVEPOINT...). */
  exec(sql: string): void;
  close(): void;
  readonly open: boolean;
}

export class SqliteDriver implements SqlDriver {
  readonly kind = 'sqlite' as const;
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  constructor(file: string) {
    this.db = new Database(file);
  }
  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }
  run(sql: string, params: readonly Param[] = []): { changes: number } {
    return { changes: this.stmt(sql).run(...params).changes };
  }
  get<T>(sql: string, params: readonly Param[] = []): T | undefined {
    return this.stmt(sql).get(...params) as T | undefined;
  }
  all<T>(sql: string, params: readonly Param[] = []): T[] {
    return this.stmt(sql).all(...params) as T[];
  }
  exec(sql: string): void {
    // BEGIN, COMMIT, SAVEPOINT and RELEASE come once or more per uplink: prepared once, not parsed
    // each time. A script of several statements (the schema) is run as a script.
    if (sql.includes(';')) this.db.exec(sql);
    else this.stmt(sql).run();
  }
  close(): void {
    this.db.close();
  }
  get open(): boolean {
    return this.db.open;
  }
}

/** An error the server gave, with its SQLSTATE (`code`), as the worker passed it on. */
export class PgQueryError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'PgQueryError';
  }
}

// The worker: one `pg` client; each request is answered on the port, then the shared word set and
// notified. BIGINT (int8) comes back as a number (the store's counts stay below 2^53).
const WORKER = `
const { workerData } = require('node:worker_threads');
const flag = new Int32Array(workerData.shared);
const port = workerData.port;
// The request being answered (its number goes back with its answer): none, no answer.
let current;
const answer = (msg) => {
  if (current === undefined) return;
  port.postMessage({ ...msg, id: current });
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
};
// Whatever goes wrong in here is an answer, never a dead worker the main thread waits on.
let client;
let ready;
const connect = () => {
  if (!ready) {
    const pg = require(workerData.pgPath);
    pg.types.setTypeParser(20, (v) => Number(v));
    client = new pg.Client({ connectionString: workerData.url, application_name: 'qkt station', connectionTimeoutMillis: workerData.connectMs });
    client.on('error', () => {});
    ready = client.connect();
  }
  return ready;
};
port.on('message', async (q) => {
  current = q.id;
  try {
    await connect();
    if (q.end) { await client.end(); answer({ ok: true }); return; }
    const values = q.params && q.params.map((p) => (p instanceof Uint8Array ? Buffer.from(p.buffer, p.byteOffset, p.byteLength) : p));
    const r = await client.query(values ? { text: q.sql, values } : q.sql);
    answer({ ok: true, rows: r.rows ?? [], changes: r.rowCount ?? 0 });
  } catch (e) {
    answer({ ok: false, message: String((e && e.message) || e), code: e && e.code });
  }
});
process.on('uncaughtException', (e) => answer({ ok: false, message: String((e && e.message) || e), code: e && e.code }));
process.on('unhandledRejection', (e) => answer({ ok: false, message: String((e && e.message) || e), code: e && e.code }));
`;

/** How long connecting to the server may take before the store gives up (ms). */
export const PG_CONNECT_TIMEOUT_MS = 10_000;

/** How long one query may take before the store gives up on the server (ms). */
export const PG_QUERY_TIMEOUT_MS = 60_000;

export class PgDriver implements SqlDriver {
  readonly kind = 'postgres' as const;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag: Int32Array;
  private closed = false;
  private seq = 0;

  /** Connect to `url` (postgres://user:password@host:port/database); throws if the server refuses. */
  constructor(readonly url: string) {
    const shared = new SharedArrayBuffer(4);
    this.flag = new Int32Array(shared);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const pgPath = createRequire(import.meta.url).resolve('pg');
    this.worker = new Worker(WORKER, { eval: true, workerData: { url, shared, port: port2, pgPath, connectMs: PG_CONNECT_TIMEOUT_MS }, transferList: [port2] });
    this.worker.unref();
    this.port.unref();
    try {
      this.exec('SELECT 1');
    } catch (e) {
      void this.worker.terminate();
      this.closed = true;
      const err = e as PgQueryError;
      throw new PgQueryError(`the station database ${redactUrl(url)}: ${err.message}`, err.code);
    }
  }

  private call(msg: { sql?: string; params?: readonly Param[]; end?: boolean }): { rows: unknown[]; changes: number } {
    if (this.closed) throw new PgQueryError('the database connection is closed', undefined);
    // Each request carries its number and is answered with it: an answer that is not this
    // request's (a stray one, or a second one for an earlier request) is dropped, never taken as
    // this query's rows (every later query would get the one before's: seen as a worker on a
    // broker telling terminals it held no keys for them, and knowing a terminal that was not there).
    const id = ++this.seq;
    type Answer = { id?: number; ok: boolean; rows?: unknown[]; changes?: number; message?: string; code?: string };
    const take = (): Answer | undefined => {
      for (;;) {
        const m = receiveMessageOnPort(this.port)?.message as Answer | undefined;
        if (!m || m.id === id) return m;
      }
    };
    Atomics.store(this.flag, 0, 0);
    this.port.postMessage({ ...msg, id });
    const deadline = Date.now() + PG_QUERY_TIMEOUT_MS;
    let r: Answer | undefined;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || Atomics.wait(this.flag, 0, 0, left) === 'timed-out') {
        this.closed = true;
        void this.worker.terminate();
        throw new PgQueryError(`the database did not answer in ${PG_QUERY_TIMEOUT_MS / 1000} s`, undefined);
      }
      r = take();
      if (r) break;
      // Woken by a stray answer: wait again (re-checked after clearing, so a wake-up is not lost).
      Atomics.store(this.flag, 0, 0);
      r = take();
      if (r) break;
    }
    if (!r.ok) throw new PgQueryError(r.message ?? 'query failed', r.code);
    // bytea comes through the port as Uint8Array: Buffers again, as better-sqlite3 gives them.
    const rows = (r.rows ?? []).map((row) => {
      const o = row as Record<string, unknown>;
      for (const k of Object.keys(o)) if (o[k] instanceof Uint8Array) o[k] = Buffer.from((o[k] as Uint8Array).buffer, (o[k] as Uint8Array).byteOffset, (o[k] as Uint8Array).byteLength);
      return o;
    });
    return { rows, changes: r.changes ?? 0 };
  }

  /** `?` placeholders as PostgreSQL's `$1, $2...` (the store's SQL has no `?` in strings). */
  private static numbered(sql: string): string {
    let i = 0;
    return sql.replace(/\?/g, () => `$${++i}`);
  }

  run(sql: string, params: readonly Param[] = []): { changes: number } {
    return { changes: this.call({ sql: PgDriver.numbered(sql), params }).changes };
  }
  get<T>(sql: string, params: readonly Param[] = []): T | undefined {
    return this.call({ sql: PgDriver.numbered(sql), params }).rows[0] as T | undefined;
  }
  all<T>(sql: string, params: readonly Param[] = []): T[] {
    return this.call({ sql: PgDriver.numbered(sql), params }).rows as T[];
  }
  exec(sql: string): void {
    this.call({ sql });
  }
  close(): void {
    if (this.closed) return;
    try {
      this.call({ end: true });
    } finally {
      this.closed = true;
      void this.worker.terminate();
    }
  }
  get open(): boolean {
    return !this.closed;
  }
}
