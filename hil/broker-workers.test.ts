// Issue 13, item 3: "A test with two fleet shards, two station workers, Mosquitto and PostgreSQL:
// one worker killed mid-run; every message opened exactly once; station and terminals agree on
// every key account." Two `qkt station run --broker` workers share one home and one PostgreSQL
// database (a shared subscription on Mosquitto); two `qkt fleet run --station none` shards, each
// with its own KMD home on the same database, send their terminals' uplinks through the broker.
// The worker that files the inbox is SIGKILLed while the shards send. The uplinks it held are
// sent again by their shards and answered by the other worker, which takes the filing over.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pgSkipReason, tempDatabase } from '../host-tools/test-support/pg.js';
import { runQkt, startQkt } from './cli.js';
import { mosquittoSkipReason, startMosquitto } from './mosquitto.js';

t.setTimeout(180_000);

const skip = pgSkipReason() || mosquittoSkipReason();

t.test('two shards, two workers on Mosquitto and PostgreSQL, one worker killed: every message opened once, accounts agree', { skip }, async (t) => {
  const dir = t.testdir({});
  const db = tempDatabase();
  t.teardown(() => db.drop());
  // The password goes in the environment (as a user would: PGPASSWORD), not on the command line.
  const u = new URL(db.url);
  const env = { PGPASSWORD: decodeURIComponent(u.password) };
  u.password = '';
  const dbUrl = u.toString();
  const broker = await startMosquitto(dir);
  t.teardown(() => broker.stop());

  const stationHome = join(dir, 'station-home');
  const init = await runQkt(['kmd', 'init', '--home', stationHome, '--station-store', 'postgres', '--db', dbUrl, '--json'], { env });
  t.equal(init.code, 0, init.stderr);

  const worker = async () => {
    const w = await startQkt(['station', 'run', '--home', stationHome, '--broker', broker.url], { env });
    t.teardown(() => w.stop());
    return w;
  };
  const w1 = await worker();
  t.equal(w1.ready['share'], 'qkt-station', 'on MQTT 5 the workers share one subscription');
  t.equal(w1.ready['mqtt'], '5');
  // The first worker takes the filing (the database's service lock) within a tick.
  for (let i = 0; i < 100 && !/files the inbox now/.test(w1.stderr()); i++) await new Promise((r) => setTimeout(r, 50));
  t.match(w1.stderr(), /this worker files the inbox now/, 'worker 1 files the inbox');
  const w2 = await worker();

  const shard = (name: string) =>
    runQkt(['fleet', 'run', '--terminals', '6', '--seconds', '8', '--rate', '4', '--store', 'postgres', '--db', dbUrl, '--broker', broker.url, '--shard', name, '--station', 'none', '--seed', name === 'a' ? '1' : '2', '--json'], { env, timeoutMs: 150_000 });
  const shards = Promise.all([shard('a'), shard('b')]);
  // Kill worker 1 once it has opened some uplinks of the run (its log: one line per uplink).
  const uplinks = (w: { stderr(): string }) => (w.stderr().match(/ uplink, \d+ bytes/g) ?? []).length;
  for (let i = 0; i < 600 && uplinks(w1) < 20; i++) await new Promise((r) => setTimeout(r, 50));
  t.ok(uplinks(w1) >= 20, 'worker 1 opened uplinks before it was killed');
  w1.child.kill('SIGKILL');
  t.equal(await w1.exited, 'SIGKILL');
  const [a, b] = await shards;

  let sent = 0;
  for (const [name, r] of [['a', a], ['b', b]] as const) {
    t.equal(r.code, 0, `shard ${name}: ${r.stderr}`);
    const j = JSON.parse(r.stdout) as { overall: { messages: number; delivered: number; late: number; failed: number }; keysAgree: boolean; keyMismatches: number; failures: Record<string, number>; broker: string; shard: string; stationConnections: number };
    t.equal(j.shard, name);
    t.equal(j.stationConnections, 1, 'one broker connection for the shard');
    t.equal(j.overall.failed, 0, `shard ${name}: no message lost (${JSON.stringify(j.failures)})`);
    t.equal(j.overall.delivered + j.overall.late, j.overall.messages, `shard ${name}: every message opened`);
    t.ok(j.keysAgree, `shard ${name}: every module's account equals the station's`);
    sent += j.overall.messages;
  }
  t.ok(uplinks(w2) > 0, 'worker 2 opened uplinks');
  t.match(w2.stderr(), /this worker files the inbox now/, 'worker 2 took the filing over');
  // Worker 2 files what is left, then stops.
  await new Promise((r) => setTimeout(r, 600));
  t.equal(await w2.stop(), 0);

  // The inbox: every message exactly once (its store id and its terminal's counter).
  const lines = readFileSync(join(stationHome, 'station', 'inbox.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: number; terminal: string; counter: number });
  t.equal(lines.length, sent, 'one inbox line per message the shards sent');
  t.equal(new Set(lines.map((l) => l.id)).size, lines.length, 'no id filed twice');
  t.equal(new Set(lines.map((l) => `${l.terminal}/${l.counter}`)).size, lines.length, 'no message filed twice');
  t.equal(new Set(lines.map((l) => l.terminal)).size, 12, "both shards' terminals");
  t.ok(lines.every((l) => /^[ab]-T\d{5}$/.test(l.terminal)));
});

t.test('qkt station run --broker: usage mistakes exit 2, a broker not there exit 3, the pool-image store exit 2', async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  t.equal((await runQkt(['kmd', 'init', '--home', home])).code, 0);
  const cases: Array<[string[], RegExp]> = [
    [[], /--listen is required \(or --broker\)/],
    [['--listen', '127.0.0.1:0', '--share', 'g'], /--share is the broker subscription's group: give it with --broker/],
    [['--broker', 'http://h:1'], /--broker must be mqtt:\/\/HOST:PORT, mqtts:\/\/HOST:PORT or embedded/],
    [['--broker', 'mqtt://127.0.0.1:1', '--listen', '127.0.0.1:0'], /--listen is where the embedded broker listens/],
    [['--broker', 'embedded', '--listen', 'tls:127.0.0.1:0'], /--listen: the embedded broker speaks MQTT on HOST:PORT, not tls:/],
    [['--broker', 'embedded', '--san', 'x'], /--san is for a station on mutual TLS/],
    [['--broker', 'embedded', '--share', 'g'], /--share: the embedded broker \(MQTT 3\.1\.1\) has no shared subscriptions/],
    [['--broker', 'mqtt://127.0.0.1:1', '--share', 'a/b'], /--share must be 1-64 of A-Z a-z 0-9 _ -, got "a\/b"/],
    [['--broker', 'embedded', '--listen', '127.0.0.1:0'], /a station on a broker needs a database store/],
  ];
  for (const [args, reason] of cases) {
    const r = await runQkt(['station', 'run', '--home', home, ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.match(r.stderr, reason, args.join(' '));
  }
  const sq = join(dir, 'kmd-sqlite');
  t.equal((await runQkt(['kmd', 'init', '--home', sq, '--station-store', 'sqlite'])).code, 0);
  const r = await runQkt(['station', 'run', '--home', sq, '--broker', 'mqtt://u:SeCrEt@127.0.0.1:1']);
  t.equal(r.code, 3, r.stderr);
  t.match(r.stderr, /^qkt: cannot reach the MQTT broker at mqtt:\/\/u:\*\*\*@127\.0\.0\.1:1: ECONNREFUSED/);
  t.notMatch(r.stderr, /SeCrEt/);
});
