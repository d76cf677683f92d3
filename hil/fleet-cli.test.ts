// `qkt fleet run` (issue 13 item 1) spawned as a user runs it: a few terminals for a short run,
// the --json shape, the human table's header, and usage mistakes refused (exit 2) before anything
// is made.
import t from 'tap';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { failsWith, qktJson, runQkt } from './e2e-rig.js';
import { QKT_BIN } from './cli.js';

t.setTimeout(240_000);

t.test('qkt fleet run --json: five terminals, every class, keys agree', async (t) => {
  const r = await qktJson<Record<string, any>>(t, ['fleet', 'run', '--terminals', '5', '--seconds', '1', '--t', '20s', '--seed', '2']);
  t.same(Object.keys(r).sort(), ['bits', 'classes', 'failures', 'images', 'keyMismatches', 'keysAgree', 'mix', 'mode', 'overall', 'ratePerSecond', 'rss', 'seconds', 'seed', 'setupSeconds', 'station', 'stationConnections', 'store', 'tMs', 'terminals', 'trafficSeconds'].sort());
  t.same([r['store'], r['station'], r['ratePerSecond']], ['sqlite', 'process', null], 'defaults: the SQLite store, the station in its own process, the classes\' own rates');
  t.equal(r['terminals'], 5);
  t.equal(r['bits'], 131_072);
  t.same(r['mix'], { A: 1, B: 1, C: 1, D: 1, E: 1 });
  t.same(r['classes'].map((c: { class: string }) => c.class), ['A', 'B', 'C', 'D', 'E']);
  t.same(Object.keys(r['overall']).sort(), ['accessDelayMs', 'cipherBitsPerSecondPerTerminal', 'class', 'delivered', 'failed', 'keyBitsPerSecondPerTerminal', 'keyUseRatePerTerminal', 'late', 'messages', 'terminals'].sort());
  t.equal(r['overall'].failed, 0);
  t.equal(r['overall'].delivered + r['overall'].late, r['overall'].messages);
  t.equal(r['keysAgree'], true);
  t.equal(r['stationConnections'], 5);
  t.ok(r['rss'].perTerminalBytes > 0);
  t.same(r['images'], { where: 'memory', bytes: 81_920, sectors: 20, sectorSize: 4096 });
});

t.test('qkt fleet run: the human table, and --home keeps the state', async (t) => {
  const dir = t.testdir({});
  const r = await runQkt(['fleet', 'run', '--terminals', '2', '--seconds', '0.5', '--t', '20s', '--mix', 'E:1', '--home', join(dir, 'f')]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^qkt fleet: 2 terminals in one process, 128 kbit each \(images of 20 sectors, 80 KiB, in files\), 2 mutual-TLS connections to one station/);
  t.match(r.stdout, /\n\| class \| terminals \| messages \| opened in time \| late \| failed \| delay median s \| delay p99 s \| cipher kbit\/s per terminal \| key use rate per terminal \|\n/);
  t.match(r.stdout, /\n\| E residential users \| 2 \| /);
  t.match(r.stdout, /\n\| all \| 2 \| /);
  t.match(r.stdout, /keys agree/);
  t.same(readdirSync(join(dir, 'f')).sort(), ['carrier', 'certs', 'images', 'kmd']);
  t.notMatch(r.stdout + r.stderr, /[0-9a-f]{64}/, 'no key material');
});

t.test('qkt fleet run --rate 1/T --store files --station inline: the pool-image store, the station in process', async (t) => {
  const r = await qktJson<Record<string, any>>(t, ['fleet', 'run', '--terminals', '2', '--seconds', '3', '--t', '500ms', '--rate', '1/T', '--store', 'files', '--station', 'inline', '--mix', 'D:1']);
  t.same([r['store'], r['station'], r['ratePerSecond']], ['files', 'inline', 2], '1/T with T = 0.5 s: 2 messages a second each');
  t.ok(r['overall'].messages >= 4 && r['overall'].messages <= 30, `${r['overall'].messages} messages (about 12 expected)`);
  t.equal(r['overall'].failed, 0);
  t.equal(r['keysAgree'], true);
});

t.test('qkt fleet run: more terminals than the open-file limit allows connections is refused first', (t) => {
  const r = spawnSync('bash', ['-c', `ulimit -n 600 && exec "${process.execPath}" "${QKT_BIN}" fleet run --terminals 500 --seconds 1`], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.match(r.stderr, /^qkt: 500 terminals need about 756 open files \(a connection each\), and this process may open 600: raise it \(ulimit -n\)/);
  t.end();
});

t.test('qkt fleet run: usage mistakes exit 2 with the reason', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--terminals', '0'], /--terminals must be a whole number from 1 to 20000, got "0"/],
    [['--terminals', '20001'], /--terminals must be a whole number from 1 to 20000/],
    [['--terminals', '3', '--mix', 'A:1,F:2'], /--mix: F is not a user class/],
    [['--terminals', '3', '--store', 'mysql'], /--store must be sqlite or files, got "mysql"/],
    [['--terminals', '3', '--station', 'remote'], /--station must be process or inline, got "remote"/],
    [['--terminals', '3', '--rate', '0'], /--rate must be messages per terminal/],
    [['--terminals', '3', '--rate', '1/h'], /--rate must be messages per terminal/],
    [['--terminals', '3', '--rate', '5000'], /--rate must be messages per terminal/],
    [['--terminals', '3', '--mix', 'A:0'], /--mix: at least one class needs a weight above 0/],
    [['--terminals', '3', '--seconds', '0'], /--seconds must be a duration/],
    [['--terminals', '3', '--bits', '12kbit', '--seconds', '30'], /--bits 12 kbit lasts class A about 0 s/],
    [['--terminals', '3', '--bits', 'lots'], /--bits/],
  ];
  for (const [args, reason] of cases) failsWith(t, await runQkt(['fleet', 'run', ...args]), 2, reason, args.join(' '));
  const dir = t.testdir({ full: { x: 'y' } });
  failsWith(t, await runQkt(['fleet', 'run', '--terminals', '1', '--home', join(dir, 'full')]), 2, /--home .* is not empty/, 'a full --home');
});
