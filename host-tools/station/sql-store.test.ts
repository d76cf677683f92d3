// The SQLite station store against the pool-image store as its reference: the same random
// sequences of exports, cancels, uses, voids, activations and reopenings give the same answers,
// the same refusals (error codes) and the same accounts on both (fast-check model-based test).
// Then what only the SQLite store has: group commit, rollback of one member, a failed commit,
// used keys gone from its files, and durability across a SIGKILL.
import t from 'tap';
import fc from 'fast-check';
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { StationStore } from './store.js';
import type { StationKeyStore } from './store.js';
import { KEY_CHUNK, SQL_STORE_FILE, SqlStationStore } from './sql-store.js';
import { PG_CONNECT_TIMEOUT_MS, PgDriver } from './sql-driver.js';
import { redactUrl } from '../redact-url.js';
import Database from 'better-sqlite3';
import { DB_URL_FILE, openStationStore } from './open-store.js';
import { fuzzParams, replayLine } from '../../firmware/test-support/fuzz.js';
import { pgSkipReason, tempDatabase } from '../test-support/pg.js';

const batchId = (n: number) => new Uint8Array(16).fill(n);
/** Key bytes of batch n: distinct per batch and position. */
const keysOf = (n: number, bytes: number) => Uint8Array.from({ length: bytes }, (_, i) => (n * 37 + i * 7 + (i >> 8)) & 0xff);

/** What an operation gave: a value, or the refusal's name and code (messages may differ). */
function outcome(fn: () => unknown): unknown {
  try {
    const v = fn();
    return { ok: v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v };
  } catch (e) {
    const err = e as Error & { code?: string };
    return { err: err.name, code: err.code };
  }
}

/** Everything both stores show of a terminal: status (minus the flash's sectors), account, names. */
function view(s: StationKeyStore, id: string): unknown {
  return {
    status: outcome(() => {
      const st = s.status(id);
      return { ...st, sectors: undefined, lowWatermarkBits: undefined, staging: st.staging && { ...st.staging, durableBits: undefined }, active: [...st.active].sort(), inactive: [...st.inactive].sort() };
    }),
    account: outcome(() => s.account(id)),
    state: outcome(() => s.state(id)),
    has: s.hasTerminal(id),
    last: s.lastUplink(id),
    days: s.usageDays(id),
  };
}

interface Pair {
  files: StationKeyStore;
  sql: StationKeyStore;
  dir: string;
  reopenSql: () => StationKeyStore;
}

type Op = (s: StationKeyStore) => unknown;

class Do implements fc.Command<object, Pair> {
  constructor(
    readonly name: string,
    readonly op: Op,
  ) {}
  check(): boolean {
    return true;
  }
  run(_m: object, p: Pair): void {
    const a = outcome(() => this.op(p.files));
    const b = outcome(() => this.op(p.sql));
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${this.name}: files ${JSON.stringify(a)} sqlite ${JSON.stringify(b)}`);
    for (const id of ['T1', 'T2']) {
      const va = JSON.stringify(view(p.files, id));
      const vb = JSON.stringify(view(p.sql, id));
      if (va !== vb) throw new Error(`after ${this.name}, ${id}: files ${va} sqlite ${vb}`);
    }
    if (JSON.stringify(p.files.terminals()) !== JSON.stringify(p.sql.terminals())) throw new Error('terminal lists differ');
  }
  toString(): string {
    return this.name;
  }
}

class Reopen implements fc.Command<object, Pair> {
  check(): boolean {
    return true;
  }
  run(_m: object, p: Pair): void {
    p.files.close();
    p.sql.close();
    p.files = new StationStore(join(p.dir, 'files'));
    p.sql = p.reopenSql();
  }
  toString(): string {
    return 'reopen';
  }
}

const term = fc.constantFrom('T1', 'T2');
const bn = fc.integer({ min: 1, max: 6 });
const sizes = fc.constantFrom(64, KEY_CHUNK - 8, KEY_CHUNK, 3 * KEY_CHUNK + 40);
const commands = [
  fc.tuple(term, bn, fc.integer({ min: 0, max: 12 }), sizes).map(
    ([id, n, seq, bytes]) => new Do(`addBatch ${id} b${n} seq ${seq} ${bytes}B`, (s) => s.addBatch(id, { batchId: batchId(n), seq, purpose: 'any', bits: bytes * 8 }, keysOf(n, bytes))),
  ),
  fc.tuple(term, bn, fc.integer({ min: 0, max: 12 }), sizes).map(
    ([id, n, seq, bytes]) => new Do(`reserve ${id} b${n} seq ${seq} ${bytes}B`, (s) => s.reserve(id, { batchId: batchId(n), seq, purpose: 'any', bits: bytes * 8 })),
  ),
  fc.tuple(term, bn, sizes).map(([id, n, bytes]) => new Do(`fill ${id} b${n} ${bytes}B`, (s) => s.fill(id, batchId(n), keysOf(n, bytes)))),
  fc.tuple(term, bn).map(([id, n]) => new Do(`cancel ${id} b${n}`, (s) => s.cancel(id, batchId(n)))),
  fc.tuple(term, bn, fc.integer({ min: 0, max: 4 * KEY_CHUNK }), fc.integer({ min: 1, max: 600 }), fc.boolean()).map(
    ([id, n, off, bytes, inactive]) => new Do(`take ${id} b${n} @${off * 8} ${bytes}B${inactive ? ' inactive ok' : ''}`, (s) => s.takeById(id, batchId(n), off * 8, bytes, inactive)),
  ),
  fc.tuple(term, bn, fc.integer({ min: -8, max: 4 * KEY_CHUNK }), fc.integer({ min: 0, max: 600 })).map(
    ([id, n, off, bytes]) => new Do(`peek ${id} b${n} @${off * 8} ${bytes}B`, (s) => s.peekById(id, batchId(n), off * 8, bytes)),
  ),
  fc.tuple(term, bn).map(([id, n]) => new Do(`void ${id} b${n}`, (s) => s.voidBatch(id, Buffer.from(batchId(n)).toString('hex')))),
  fc.tuple(term, bn, fc.boolean()).map(([id, n, r]) => new Do(`activate ${id} b${n}`, (s) => s.activate(id, Buffer.from(batchId(n)).toString('hex'), r ? 'receipt' : 'first-use'))),
  fc.tuple(term, fc.integer({ min: 0, max: 13 }), fc.subarray([1, 2, 3, 4, 5, 6])).map(
    ([id, below, live]) => new Do(`retireAbsent ${id} <${below} live ${live}`, (s) => s.retireAbsent(id, below, new Set(live.map((n) => Buffer.from(batchId(n)).toString('hex'))))),
  ),
  fc.tuple(term, bn).map(([id, n]) => new Do(`batch ${id} b${n}`, (s) => [s.batch(id, batchId(n)), s.holdsBatch(id, batchId(n))])),
  fc.tuple(term, fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 5000 })).map(
    ([id, day, bits]) => new Do(`recordUplink ${id} day ${day} ${bits}`, (s) => s.hasTerminal(id) && s.recordUplink(id, { at: 1.7e12 + day * 86_400_000, mode: 'otp', counter: day, bytes: 10, keyBits: bits })),
  ),
  fc.constant(new Reopen()),
];

/** SQLite, and PostgreSQL when a server is there (under CI=true it must be). */
const pgSkip = pgSkipReason();
const KINDS: Array<{ kind: 'sqlite' | 'postgres'; skip: string | false }> = [
  { kind: 'sqlite', skip: false },
  { kind: 'postgres', skip: pgSkip },
];

/** This file's PostgreSQL database, made at first use and dropped at the end. */
let pgDb: ReturnType<typeof tempDatabase> | undefined;
function pgUrl(): string {
  if (!pgDb) {
    const db = tempDatabase();
    pgDb = db;
    t.teardown(() => db.drop());
  }
  return pgDb.url;
}

/** A new empty SQL store of `kind` in `dir` (PostgreSQL: this file's database, emptied first). */
function sqlStore(kind: 'sqlite' | 'postgres', dir: string): { open: () => SqlStationStore; url?: string } {
  if (kind === 'sqlite') return { open: () => new SqlStationStore(dir, { create: true }) };
  const url = pgUrl();
  const s = new SqlStationStore(dir, { url });
  s.d.exec('TRUNCATE terminal, batch, chunk, opened, usage CASCADE');
  s.close();
  return { open: () => new SqlStationStore(dir, { url }), url };
}

for (const { kind, skip } of KINDS) {
  t.test(`the ${kind} store answers as the pool-image store does, over random histories with reopenings`, { skip }, (t) => {
    const runs = Number(process.env.QKT_FUZZ_RUNS ?? (kind === 'sqlite' ? 60 : 25));
    const root = t.testdir({});
    let k = 0;
    const out = fc.check(
      fc.property(fc.commands(commands, { maxCommands: 60, replayPath: process.env.QKT_FUZZ_REPLAY }), (cmds) => {
        const dir = join(root, String(k++));
        const sql = sqlStore(kind, join(dir, 'sql'));
        const p: Pair = { files: new StationStore(join(dir, 'files')), sql: sql.open(), dir, reopenSql: sql.open };
        try {
          fc.modelRun(() => ({ model: {}, real: p }), cmds);
        } finally {
          p.files.close();
          p.sql.close();
        }
      }),
      fuzzParams(runs),
    );
    t.notOk(out.failed, out.failed ? `${(out.errorInstance as Error | undefined)?.message}\n${fc.defaultReportMessage(out)}\nreplay: ${replayLine(out, 'host-tools/station/sql-store.test.ts')}` : 'same answers');
    t.end();
  });
}

const meta = (n: number, bytes = 4 * KEY_CHUNK) => ({ batchId: batchId(n), seq: n, purpose: 'enc' as const, bits: bytes * 8 });

for (const { kind, skip } of KINDS) {
t.test(`${kind} group commit: the uplinks of one turn share one commit, answered only after it`, { skip }, async (t) => {
  const st = sqlStore(kind, join(t.testdir({}), 'st'));
  const s = st.open();
  t.teardown(() => s.close());
  s.addBatch('T1', meta(1), keysOf(1, 4 * KEY_CHUNK));
  const order: string[] = [];
  const all = Array.from({ length: 20 }, (_, i) =>
    s.grouped(() => s.takeById('T1', batchId(1), i * 64, 8, true)).then((k) => {
      order.push(`answer ${i}`);
      return k;
    }),
  );
  order.push('turn over');
  const keys = await Promise.all(all);
  t.equal(order[0], 'turn over', 'no answer before the turn ends (and the commit)');
  t.same(s.stats, { groups: 1, groupedOps: 20 }, 'one commit for twenty');
  t.same(Buffer.from(keys[3]!.key), Buffer.from(keysOf(1, 4 * KEY_CHUNK).subarray(24, 32)), 'the named key');
  s.close();
  const again = st.open();
  t.teardown(() => again.close());
  t.equal(again.status('T1').consumedKeyBits, 19 * 64 + 64, 'all twenty durable (keys and the gaps burned before them)');
});

t.test(`${kind} group commit: a member that throws undoes its own changes only`, { skip }, async (t) => {
  const s = sqlStore(kind, join(t.testdir({}), 'st')).open();
  t.teardown(() => s.close());
  s.addBatch('T1', meta(1), keysOf(1, 4 * KEY_CHUNK));
  const good = s.grouped(() => s.takeById('T1', batchId(1), 0, 8, true));
  const bad = s.grouped(() => {
    s.takeById('T1', batchId(1), 800, 8, true);
    throw new Error('the message did not authenticate');
  });
  await t.rejects(bad, /did not authenticate/);
  await good;
  t.equal(s.status('T1').consumedKeyBits, 64, 'the failed member took nothing');
  t.same(Buffer.from(s.peekById('T1', batchId(1), 800, 8)), Buffer.from(keysOf(1, 4 * KEY_CHUNK).subarray(100, 108)), 'its key is still there');
});

t.test(`${kind} group commit: a commit that fails refuses every member and undoes all of them`, { skip }, async (t) => {
  const s = sqlStore(kind, join(t.testdir({}), 'st')).open();
  t.teardown(() => s.close());
  s.addBatch('T1', meta(1), keysOf(1, 4 * KEY_CHUNK));
  const failures: Error[] = [];
  s.onGroupFailure = (e) => failures.push(e);
  const a = s.grouped(() => s.takeById('T1', batchId(1), 0, 8, true));
  const b = s.grouped(() => {
    // A deferred foreign-key violation: the statement runs, the COMMIT fails.
    if (kind === 'sqlite') {
      s.d.exec('PRAGMA defer_foreign_keys = ON');
      s.d.run("INSERT INTO batch (terminal, pool_id, batch_id, seq, purpose, bits, staged) VALUES ('NOPE', 1, x'00', 1, 'enc', 8, 1)");
    } else {
      s.d.exec('CREATE TABLE IF NOT EXISTS qkt_fail (t TEXT REFERENCES terminal(id) DEFERRABLE INITIALLY DEFERRED)');
      s.d.run("INSERT INTO qkt_fail VALUES ('NOPE')");
    }
    return s.takeById('T1', batchId(1), 64, 8, true);
  });
  await t.rejects(a, /foreign key/i);
  await t.rejects(b, /foreign key/i);
  t.equal(failures.length, 1, 'the store says so once');
  t.equal(s.status('T1').consumedKeyBits, 0, 'no key taken');
  t.doesNotThrow(() => s.d.exec('BEGIN; ROLLBACK'), 'no transaction left open');
  const k = await s.grouped(() => s.takeById('T1', batchId(1), 0, 8, true));
  t.equal(k.keyId.bitOffset, 0, 'the next group works, and the first key is served now');
});


}

t.test('a used key leaves the files: the database zeroes it, the log is truncated', async (t) => {
  const dir = join(t.testdir({}), 'st');
  const s = new SqlStationStore(dir, { create: true });
  t.teardown(() => s.close());
  const keys = new Uint8Array(randomBytes(4 * KEY_CHUNK));
  s.addBatch('T1', meta(1), keys);
  const files = () => Buffer.concat(readdirSync(dir).map((f) => readFileSync(join(dir, f))));
  const has = (b: Uint8Array) => files().includes(Buffer.from(b));
  const first = keys.slice(10, 42); // in the chunk still in use after the take
  const whole = keys.slice(KEY_CHUNK + 100, KEY_CHUNK + 132); // in a chunk used up by it
  const later = keys.slice(3 * KEY_CHUNK + 10, 3 * KEY_CHUNK + 42);
  s.checkpoint();
  t.ok(has(first) && has(whole) && has(later), 'the keys are in the files before use');
  await s.grouped(() => s.takeById('T1', batchId(1), (2 * KEY_CHUNK + 16) * 8, 16, true));
  s.checkpoint();
  t.notOk(has(first), 'a key burned in a chunk still in use is zeroed');
  t.notOk(has(whole), 'a chunk used up is deleted (and overwritten)');
  t.ok(has(later), 'unused keys are kept');
  s.voidBatch('T1', Buffer.from(batchId(1)).toString('hex'));
  s.checkpoint();
  t.notOk(has(later), 'a voided batch leaves nothing');
});

t.test('openStationStore: picks the kind by the folder, and will not put a database beside pool images', (t) => {
  const root = t.testdir({});
  const files = new StationStore(join(root, 'a'));
  files.addBatch('T1', meta(1), keysOf(1, 4 * KEY_CHUNK));
  files.close();
  t.throws(() => openStationStore(join(root, 'a'), { create: 'sqlite' }), /already holds pool images/);
  const a = openStationStore(join(root, 'a'));
  t.equal(a.kind, 'files');
  a.close();
  const b = openStationStore(join(root, 'b'), { create: 'sqlite' });
  t.equal(b.kind, 'sqlite');
  b.close();
  const b2 = openStationStore(join(root, 'b'));
  t.equal(b2.kind, 'sqlite', 'reopened by what the folder holds');
  b2.close();
  t.throws(() => new SqlStationStore(join(root, 'c')), /no station database/);
  t.end();
});

t.test('hostile folders and addresses: a link or another program\'s database is refused by name, a bad address never hangs', (t) => {
  const root = t.testdir({ victim: 'not a database\n' });
  // A link in the database's place: not followed (the target keeps its mode), refused as damaged.
  const linked = join(root, 'linked');
  mkdirSync(linked);
  chmodSync(join(root, 'victim'), 0o644);
  symlinkSync(join(root, 'victim'), join(linked, SQL_STORE_FILE));
  t.throws(() => openStationStore(linked), { name: 'DamagedFileError', message: /not a regular file/ });
  t.equal(statSync(join(root, 'victim')).mode & 0o777, 0o644, 'the link\'s target was not chmodded');
  // Another program's SQLite database: not taken over.
  const foreign = join(root, 'foreign');
  mkdirSync(foreign);
  const other = new Database(join(foreign, SQL_STORE_FILE));
  other.exec('CREATE TABLE terminal (name TEXT); INSERT INTO terminal VALUES (1)');
  other.close();
  t.throws(() => openStationStore(foreign), { name: 'DamagedFileError', message: /another program/ });
  const again = new Database(join(foreign, SQL_STORE_FILE));
  t.same(again.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all(), ['terminal'], 'and nothing was added to it');
  again.close();
  // database.url holding junk: named, at once.
  const junk = join(root, 'junk');
  mkdirSync(junk);
  writeFileSync(join(junk, DB_URL_FILE), 'junk\n');
  t.throws(() => openStationStore(junk), { name: 'DamagedFileError', message: /not a postgres:\/\/ address/ });
  // A password in the query is not printed either.
  t.equal(redactUrl('postgres://qkt@127.0.0.1:5432/x?password=SeCrEt1&sslmode=disable'), 'postgres://qkt@127.0.0.1:5432/x?password=***&sslmode=disable');
  t.equal(redactUrl('postgres://qkt:SeCrEt1@127.0.0.1/x'), 'postgres://qkt:***@127.0.0.1/x');
  t.end();
});

t.test('a PostgreSQL address that cannot work fails at once with the reason, never hangs', { skip: pgSkip }, (t) => {
  const t0 = Date.now();
  t.throws(() => new SqlStationStore(t.testdir({}), { url: 'postgres://qkt@localhost/x?host=/nonexistent' }), /the station database postgres:\/\/qkt@localhost\/x\?host=(\/|%2F)nonexistent: connect ENOENT/);
  t.throws(() => new SqlStationStore(t.testdir({}), { url: 'postgres://qkt:pw@127.0.0.1:1/x' }), /ECONNREFUSED/);
  t.ok(Date.now() - t0 < PG_CONNECT_TIMEOUT_MS, 'both within the connect timeout, not the query timeout');
  t.end();
});

t.test('one station service per PostgreSQL database: the second is refused until the first goes', { skip: pgSkip }, (t) => {
  const url = pgUrl();
  const a = new SqlStationStore(t.testdir({}), { url });
  const b = new SqlStationStore(t.testdir({}), { url });
  t.teardown(() => b.close());
  t.equal(a.claimService(), true);
  t.equal(b.claimService(), false, 'the second service on the database is refused');
  a.close();
  t.equal(b.claimService(), true, 'the lock went with the first one\'s connection');
  t.end();
});

t.test('PostgreSQL: a message another worker is opening now is known once it commits, not refused as a replay', { skip: pgSkip }, async (t) => {
  // Two workers got the same uplink (a resend). One (here psql, holding the terminal's lock as a
  // worker's group does) has recorded it and not committed yet; the other asks openedBefore in its
  // group. It must wait for the terminal's lock and then see the first one's row: reading at
  // once, it found nothing and went on to take keys already taken (KEY_NOT_AVAILABLE: a message
  // opened once, refused to its sender). Found by the outside review of the broker workers.
  const url = pgUrl();
  const store = new SqlStationStore(t.testdir({}), { url });
  t.teardown(() => store.close());
  const digest = randomBytes(32);
  const id = `R${randomBytes(6).toString('hex')}`;
  const u = new URL(url);
  const env = { ...process.env, PGPASSWORD: decodeURIComponent(u.password), PGAPPNAME: 'qkt-race-test' };
  const sql = `BEGIN; SELECT pg_advisory_xact_lock(hashtext('${id}')); INSERT INTO opened (terminal, digest, line, n, key_bits) VALUES ('${id}', '\\x${digest.toString('hex')}'::bytea, '{}', 7, 512); SELECT pg_sleep(1.5); COMMIT;`;
  const psql = spawn('psql', ['-q', '-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username), '-d', u.pathname.slice(1), '-c', sql], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  psql.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) => psql.on('exit', (c) => r(c)));
  t.teardown(() => psql.kill('SIGKILL'));
  // Until psql holds the lock (an advisory lock granted to psql's backend).
  const probe = new PgDriver(url);
  let held = false;
  for (let i = 0; i < 200 && !held; i++) {
    if (probe.get<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'qkt-race-test'")!.n > 0) held = true;
    else await new Promise((r) => setTimeout(r, 25));
  }
  probe.close();
  t.ok(held, "psql holds the terminal's lock, its row not committed");
  const seen = await store.grouped(() => store.openedBefore(id, digest));
  t.same(seen, { n: 7, keyBits: 512 }, 'waited for the other worker and found its answer');
  t.equal(await done, 0, err);
});
