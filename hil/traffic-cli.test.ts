// `qkt traffic` (issue 12 item 1): a user class's service traffic from a real `qkt terminal run`
// through a real `qkt station run`, measured; the key both sides spent is what the messages cost,
// and the station's account says the same. Usage mistakes and a wrong certificate cost no key.
import t from 'tap';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { background, failsWith, qktJson, runQkt } from './e2e-rig.js';
import { QKT_BIN } from './cli.js';
import type { Test } from 'tap';
import type { TrafficCommandResult } from '../host-tools/cli/commands/traffic.js';

/** A KMD, T1 enrolled with 1 Mbit injected, its station certificate (and an operator's), the station and the module running. */
async function network(t: Test): Promise<{ dir: string; station: string; port: string }> {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '4Mbit']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'T1.img')]);
  await qktJson(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'car'), '--terminal', 'T1', '--bits', '1Mbit', '--init']);
  await qktJson(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1')]);
  await qktJson(t, ['station', 'cert', '--home', home, '--operator', 'ops', '--out', join(dir, 'ops')]);
  const st = await background(t, ['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  const term = await background(t, ['terminal', 'run', '--flash', join(dir, 'T1.img'), '--listen', 'tcp:127.0.0.1:0']);
  const port = term.ready['port'] as string;
  await qktJson(t, ['inject', '--carrier', join(dir, 'car'), '--port', port]);
  return { dir, station: st.ready['listen'] as string, port };
}

t.setTimeout(240_000);

type Traffic = TrafficCommandResult;

t.test('qkt traffic: class E for half a second at T = 1 s, through a module and the station', async (t) => {
  const { dir, station, port } = await network(t);

  // Refusals first: none of them spends key.
  const base = ['traffic', '--port', port, '--station', station];
  failsWith(t, await runQkt([...base, '--cert', join(dir, 't1'), '--class', 'F']), 2, /--class must be one of A, B, C, D, E/, 'an unknown class');
  failsWith(t, await runQkt(['station', 'run', '--home', join(dir, 'kmd'), '--listen', '127.0.0.1:0', '--inbox-max', '1KiB']), 2, /--inbox-max must be a size from 64KiB to 64GiB, got "1KiB"/, 'an inbox bound too small');
  failsWith(t, await runQkt([...base, '--cert', join(dir, 't1'), '--class', 'E', '--seconds', 'soon']), 2, /--seconds must be a duration/, 'a bad duration');
  failsWith(t, await runQkt([...base, '--cert', join(dir, 'ops'), '--class', 'E']), 2, /--cert: the certificate is operator ops's, not terminal T1's/, "an operator's certificate");
  failsWith(t, await runQkt([...base, '--cert', join(dir, 't1'), '--class', 'E', '--mode', 'aead', '--suite', 'rot13']), 2, /--suite must be one of aes-256-gcm, chacha20-poly1305, sm4-ctr-hmac-sm3/, 'an unknown suite');
  failsWith(t, await runQkt([...base, '--cert', join(dir, 't1'), '--class', 'E', '--suite', 'chacha20-poly1305']), 2, /--suite goes with --mode aead/, 'a suite with OTP');

  const r = await qktJson<Traffic>(t, [...base, '--cert', join(dir, 't1'), '--class', 'E', '--seconds', '500ms', '--t', '1s', '--seed', '4']);
  t.match(r, { port, station, terminalId: 'T1', class: 'E', mode: 'otp', failed: 0, supplyBitsPerSecond: 11_000 });
  t.ok(r.messages > 50, `${r.messages} messages (class E: about 350 a T)`);
  t.equal(r.delivered + r.late, r.messages, 'every message opened');
  t.equal(r.keyBits, r.plainBits + 256 * r.messages, 'OTP: the pad and a 256-bit MAC key per message');
  t.ok(r.cipherBits > r.plainBits && r.accessDelayMs !== null);

  // The station and the module spent the same key, and the station's account says so.
  const acct = await qktJson<{ terminals: Array<{ terminalId: string; consumedKeyBits: number }> }>(t, ['station', 'status', '--station', station, '--cert', join(dir, 'ops')]);
  const pool = (await qktJson<{ pool: { consumedKeyBits: number } }>(t, ['status', '--port', port])).pool;
  t.equal(acct.terminals[0]!.consumedKeyBits, r.keyBits, 'the station consumed what the run counted');
  t.equal(pool.consumedKeyBits, r.keyBits, 'and so did the module');

  // The forecast: the pool at class E's average use, with and without online supply.
  const plain = await qktJson<{ pool: { storedKeyBits: number }; forecast: { class: string; keyBitsPerSecond: number; onlineBitsPerSecond: number; secondsLeft: number | null; runsOutAt: string | null } }>(t, ['status', '--port', port, '--class', 'E']);
  const use = (300 * (32 * 8 + 256) + 50 * (208 * 8 + 256)) / 60; // docs/traffic.md, class E
  t.equal(plain.forecast.keyBitsPerSecond, Math.round(use));
  t.equal(plain.forecast.secondsLeft, Math.floor(plain.pool.storedKeyBits / use), 'the pool over the use');
  t.ok(Math.abs(Date.parse(plain.forecast.runsOutAt!) - (Date.now() + plain.forecast.secondsLeft! * 1000)) < 60_000, 'runs out then');
  const covered = await qktJson<{ forecast: { secondsLeft: number | null; runsOutAt: string | null; onlineBitsPerSecond: number } }>(t, ['status', '--port', port, '--class', 'E', '--online', '11kbit/s']);
  t.same([covered.forecast.secondsLeft, covered.forecast.runsOutAt, covered.forecast.onlineBitsPerSecond], [null, null, 11_000], '11 kbit/s online covers class E');
  const words = await runQkt(['status', '--port', port, '--class', 'A', '--online', '2kbit/s']);
  t.match(words.stdout, /^forecast   class A's traffic uses [\d.]+ kbit\/s of key, 2 kbit\/s arrives online: the pool lasts \d+ (min|h), until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ; the next visit is due before then$/m);
  failsWith(t, await runQkt(['status', '--port', port, '--online', '2kbit/s']), 2, /--online goes with --class/, '--online alone');
  failsWith(t, await runQkt(['status', '--port', port, '--class', 'Z']), 2, /--class must be one of A, B, C, D, E/, 'an unknown class');

  // An SM4 session: one session key for the run.
  const sm4 = await qktJson<Traffic & { suite: string }>(t, [...base, '--cert', join(dir, 't1'), '--class', 'C', '--seconds', '300ms', '--t', '1s', '--mode', 'aead', '--suite', 'sm4-ctr-hmac-sm3']);
  t.match(sm4, { mode: 'aead', suite: 'sm4-ctr-hmac-sm3', failed: 0, keyBits: 256 });

  // In words.
  const human = await runQkt([...base, '--cert', join(dir, 't1'), '--class', 'D', '--seconds', '200ms', '--t', '1s']);
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /^class D \(single-phase industry and commerce\) traffic of T1 \(tcp:127\.0\.0\.1:\d+\) to the station tls:127\.0\.0\.1:\d+, otp, T = 1 s, [\d.]+ s:\n  \d+ messages: \d+ opened in time, \d+ late, 0 refused or unanswered \(loss [\d.]+%\)\n  access delay: median [\d.]+ s, p99 [\d.]+ s, max [\d.]+ s\n  cipher rate [\d.]+ kbit\/s; key [\d.]+ kbit\/s, key use rate [\d.]+ of the 11 kbit\/s supply\n$/);
});

t.test('qkt traffic stops on SIGINT and prints what it did', async (t) => {
  const { dir, station, port } = await network(t);
  const child = spawn(process.execPath, [QKT_BIN, 'traffic', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--class', 'E', '--seconds', '1min', '--t', '10s', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const code = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  await new Promise((r) => setTimeout(r, 4000));
  child.kill('SIGINT');
  t.equal(await code, 130, 'exit 130');
  const r = JSON.parse(stdout) as Traffic & { stoppedBy: string };
  t.equal(r.stoppedBy, 'stopped');
  // What may fail at a signal is only what was on its way: an uplink the station had not answered
  // within the stop's wait (a loaded machine) counts as failed, by that name; nothing else fails.
  const unanswered = (r.failures as Record<string, number>)['unanswered when stopped'] ?? 0;
  t.ok(r.messages > 0 && r.failed === unanswered && unanswered <= 8, `${r.messages} messages before the signal, none failed but ${unanswered} on their way`);
  t.match(stderr, /stopped by a signal after \d+ messages/);
});
