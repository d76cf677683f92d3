// Service traffic (traffic.ts): class profiles as seeded Poisson streams of the grid's own frames,
// sent through a real module and the station service on loopback mutual TLS; every message
// opened once, the key both sides spend is what the messages cost, and a replay is refused.
import t from 'tap';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from '../../firmware/flash/faults.js';
import { Group, KeysCmd, StationCmd } from '../../firmware/link/groups.js';
import { LinkError } from '../../firmware/link/errors.js';
import { CLASSES, messageBytes, offeredBitsPerSecond, runTraffic, schedule } from './traffic.js';
import { startTrafficRig } from './traffic-rig.js';

t.test('a schedule is seeded, in time order, and offers what its class says', async (t) => {
  const a = schedule(CLASSES.A, { tMs: 60_000, durationMs: 600_000, seed: 3 });
  t.same(schedule(CLASSES.A, { tMs: 60_000, durationMs: 600_000, seed: 3 }), a, 'the same seed, the same schedule');
  t.notSame(schedule(CLASSES.A, { tMs: 60_000, durationMs: 600_000, seed: 4 }), a, 'another seed, another');
  t.ok(a.every((m, i) => i === 0 || m.atMs >= a[i - 1]!.atMs), 'in time order');
  t.ok(a.every((m) => m.atMs >= 0 && m.atMs < 600_000), 'within the run');
  // Ten minutes of class A: 10 x (240 + 12 + 60 + 4) messages expected; Poisson, so within 5%.
  t.ok(Math.abs(a.length / 3160 - 1) < 0.05, `${a.length} messages for 3160 expected`);
  const bits = a.reduce((s, m) => s + m.bytes * 8, 0) / 600;
  t.ok(Math.abs(bits / offeredBitsPerSecond(CLASSES.A, 60_000) - 1) < 0.05, `${Math.round(bits)} bit/s offered`);
  t.ok(offeredBitsPerSecond(CLASSES.A, 60_000) > offeredBitsPerSecond(CLASSES.E, 60_000), 'class A offers more than E');
  const double = schedule(CLASSES.E, { tMs: 60_000, durationMs: 600_000, seed: 3, scale: 2 });
  const single = schedule(CLASSES.E, { tMs: 60_000, durationMs: 600_000, seed: 3 });
  t.ok(Math.abs(double.length / single.length / 2 - 1) < 0.08, 'scale 2: twice the messages');
  t.throws(() => schedule(CLASSES.A, { tMs: 0, durationMs: 1, seed: 1 }), RangeError);
  t.throws(() => schedule(CLASSES.A, { tMs: 1, durationMs: 1, seed: 1, scale: 0 }), RangeError);
});

t.test('messages are framed as their standards frame them', async (t) => {
  const rnd = prng(1);
  for (const c of Object.values(CLASSES)) {
    for (const k of c.kinds) {
      const b = messageBytes(k, 5, rnd);
      t.equal(b.length, k.bytes, `${c.id} ${k.name}: ${k.bytes} bytes`);
      t.equal(b[0], 0x68, 'starts 0x68');
      if (k.name === 'measured' || k.name === 'events') {
        t.ok(b.length <= 255 && b[1] === b.length - 2 && b[1]! <= 253, 'an IEC 104 APDU: length octet at most 253');
      } else {
        const cs = b.subarray(0, b.length - 2).reduce((s, x) => (s + x) & 0xff, 0);
        t.equal(b[b.length - 2], cs, 'DL/T 645 checksum');
        t.equal(b[b.length - 1], 0x16, 'DL/T 645 end');
        t.equal(b[9], b.length - 12, 'DL/T 645 length');
      }
    }
  }
});

t.test('traffic through a module and the station: every message opened once, its key spent on both sides, a replay refused', async (t) => {
  const rig = await startTrafficRig({ ids: ['T1'], bits: 2 ** 20, supplyBitsPerSecond: 11_000 });
  t.teardown(() => rig.close());
  const term = rig.terminals[0]!;
  const station = await term.connect();
  t.teardown(() => station.close());
  // Class E with T = 1 s (the field's minute, sixty times faster): about 350 messages a T.
  // Over 0.4 s that is some 140 messages.
  const r = await runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.E, tMs: 1000, durationMs: 400, seed: 9, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
  const plan = schedule(CLASSES.E, { tMs: 1000, durationMs: 400, seed: 9 });
  t.equal(r.messages, plan.length);
  t.ok(r.messages > 50, `${r.messages} messages`);
  t.equal(r.failed, 0, `none failed: ${JSON.stringify(r.failures)}`);
  t.equal(r.delivered + r.late, r.messages, 'every message opened');
  t.equal(r.lossRate, r.late / r.messages);
  const plain = plan.reduce((s, m) => s + m.bytes * 8, 0);
  t.equal(r.plainBits, plain, 'the station opened every plaintext byte');
  // OTP: the pad (8 bits per byte) and a 256-bit one-time MAC key per message, at the station
  // (and at the module: docs/batch.md).
  t.equal(r.keyBits, plain + 256 * r.messages, 'key spent: pad plus one MAC key per message');
  t.ok(r.cipherBits > r.plainBits, 'a sealed message is longer than its plaintext (header, tag)');
  t.equal(r.keyUseRate, Math.round((r.keyBitsPerSecond / 11_000) * 1000) / 1000);
  t.ok(r.accessDelayMs !== null && r.accessDelayMs.median > 0 && r.accessDelayMs.p99 >= r.accessDelayMs.median);

  // AEAD sessions of each suite: one 256-bit session key for the whole run, every message opened.
  for (const suite of ['chacha20-poly1305', 'sm4-ctr-hmac-sm3'] as const) {
    const a = await runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.D, tMs: 1000, durationMs: 150, seed: 2, mode: 'aead', suite, supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
    t.match(a, { mode: 'aead', suite, failed: 0 }, `${suite}: none failed: ${JSON.stringify(a.failures)}`);
    t.ok(a.messages > 10 && a.delivered + a.late === a.messages, `${suite}: ${a.messages} messages opened`);
    t.equal(a.keyBits, 256, `${suite}: one session key`);
  }
  await t.rejects(runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.D, tMs: 1000, durationMs: 10, seed: 2, mode: 'otp', suite: 'chacha20-poly1305', supplyBitsPerSecond: 11_000, deadlineMs: 1 }), RangeError, 'a suite with OTP is refused before anything is sent');

  // A sealed message goes to the station once: the same bytes again are refused (the keys it
  // names were taken), and nothing is opened twice.
  const s = (await term.module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  const m = (await term.module.request(Group.KEYS, KeysCmd.SEAL, { s: s as number, d: new Uint8Array(40).fill(7) }))['m'] as Uint8Array;
  const first = await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m });
  t.equal(first['n'], 40);
  await t.rejects(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m }), LinkError, 'a replay is refused');
});

t.test('a pool that runs dry stops the run at once; a station that lies about keys is counted, not believed', async (t) => {
  const rig = await startTrafficRig({ ids: ['T1'], bits: 16_384, supplyBitsPerSecond: 11_000 });
  t.teardown(() => rig.close());
  const term = rig.terminals[0]!;
  const station = await term.connect();
  t.teardown(() => station.close());
  // Class A at T = 1 s offers some 10 kbit of key in 0.1 s... and 200 kbit in 2 s: a 16 kbit pool runs dry early.
  const r = await runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.A, tMs: 1000, durationMs: 2000, seed: 5, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
  t.equal(r.stoppedBy, 'KEYS_EXHAUSTED', 'stopped: the pool ran dry');
  t.equal(r.failures['KEYS_EXHAUSTED'], 1, 'one refusal, then no more messages');
  t.ok(r.messages < schedule(CLASSES.A, { tMs: 1000, durationMs: 2000, seed: 5 }).length / 4, `${r.messages} messages, far fewer than the schedule`);
  t.ok(r.keyBits <= 16_384 && r.keyBits > 8_000, `${r.keyBits} key bits spent of 16,384`);

  // A station answering with impossible key counts: each such answer is a failed message, and
  // nothing of it reaches the figures.
  for (const keyBits of [-5_000_000, Number.NaN, Number.POSITIVE_INFINITY, 1e308, 2 ** 60, 2 ** 23 + 1, 0.5, '256']) {
    // It opens nothing, but answers the right length (class E sends 32- and 208-byte messages).
    const liar = { params: { window: 2 }, request: async (_g: number, _c: number, p: Record<string, unknown>) => ({ n: (p['m'] as Uint8Array).length < 150 ? 32 : 208, keyBits }) };
    const rig2 = await startTrafficRig({ ids: ['T2'], bits: 2 ** 16, supplyBitsPerSecond: 11_000 });
    const x = await runTraffic({ terminal: rig2.terminals[0]!.module, station: liar as never, terminalId: 'T2', cls: CLASSES.E, tMs: 1000, durationMs: 30, seed: 1, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
    await rig2.close();
    t.ok(x.messages > 0 && x.failed === x.messages && x.keyBits === 0 && Number.isFinite(x.keyUseRate), `keyBits ${String(keyBits)}: ${x.failed} of ${x.messages} failed, figures stay finite`);
    t.same(Object.keys(x.failures), ['a malformed UPLINK answer'], 'named as a malformed answer');
  }
});

t.test("the station's inbox is rotated past its bound, four older files kept, the newest lines last", async (t) => {
  const rig = await startTrafficRig({ ids: ['T1'], bits: 2 ** 20, supplyBitsPerSecond: 11_000, inboxMaxBytes: 4096 });
  t.teardown(() => rig.close());
  const term = rig.terminals[0]!;
  const station = await term.connect();
  t.teardown(() => station.close());
  const r = await runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.D, tMs: 1000, durationMs: 500, seed: 4, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
  t.equal(r.failed, 0);
  const dir = rig.home.path('station');
  const files = readdirSync(dir).filter((f) => f.startsWith('inbox.jsonl')).sort();
  t.same(files, ['inbox.jsonl', 'inbox.jsonl.1', 'inbox.jsonl.2', 'inbox.jsonl.3', 'inbox.jsonl.4'], `${r.messages} messages (some 40 KB of lines): the inbox and four rotated files, no more`);
  const lines = (f: string) => readFileSync(join(dir, f), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { counter: number; terminal: string });
  for (const f of files) t.ok(statSync(join(dir, f)).size <= 4096, `${f}: ${statSync(join(dir, f)).size} bytes, within the bound`);
  // Newest last: every counter in .1 is below every counter in the live file, and so on down.
  const order = ['inbox.jsonl.4', 'inbox.jsonl.3', 'inbox.jsonl.2', 'inbox.jsonl.1', 'inbox.jsonl'].map(lines);
  for (let i = 1; i < order.length; i++) t.ok(Math.max(...order[i - 1]!.map((l) => l.counter)) < Math.min(...order[i]!.map((l) => l.counter)), `file ${i} is newer than file ${i - 1}`);
  t.equal(Math.max(...order[4]!.map((l) => l.counter)), r.messages - 1, 'the last message is in the live file');
});

t.test('a rotation that cannot be made never costs an uplink: a reader took the inbox away, or put a folder where a rotated file goes', async (t) => {
  const rig = await startTrafficRig({ ids: ['T1'], bits: 2 ** 20, supplyBitsPerSecond: 11_000, inboxMaxBytes: 4096 });
  t.teardown(() => rig.close());
  const term = rig.terminals[0]!;
  const station = await term.connect();
  t.teardown(() => station.close());
  const dir = rig.home.path('station');
  const send = (seed: number) => runTraffic({ terminal: term.module, station, terminalId: 'T1', cls: CLASSES.D, tMs: 1000, durationMs: 150, seed, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 60_000 });
  const a = await send(1);
  t.equal(a.failed, 0);
  // The reader takes the live file away: the next lines start a new one, nothing is shifted.
  renameSync(join(dir, 'inbox.jsonl'), join(dir, 'taken.jsonl'));
  const before = readdirSync(dir).filter((f) => f.startsWith('inbox.jsonl.')).map((f) => [f, statSync(join(dir, f)).size]);
  const b = await send(2);
  t.equal(b.failed, 0, `inbox taken away: ${b.messages} messages, none lost (${JSON.stringify(b.failures)})`);
  t.ok(existsSync(join(dir, 'inbox.jsonl')), 'a new inbox');
  // A folder where inbox.jsonl.4 goes: no rotation, the inbox grows, every uplink still filed.
  rmSync(join(dir, 'inbox.jsonl.4'), { force: true });
  mkdirSync(join(dir, 'inbox.jsonl.4'));
  const rotated = readdirSync(dir).filter((f) => /^inbox\.jsonl\.[123]$/.test(f)).map((f) => [f, readFileSync(join(dir, f), 'utf8')]);
  const c = await send(3);
  t.equal(c.failed, 0, `a folder in the way: ${c.messages} messages, none lost`);
  t.ok(statSync(join(dir, 'inbox.jsonl')).size > 4096, 'the inbox grew past its bound instead');
  t.same(readdirSync(dir).filter((f) => /^inbox\.jsonl\.[123]$/.test(f)).map((f) => [f, readFileSync(join(dir, f), 'utf8')]), rotated, 'and the rotated files are as they were');
  t.ok(before.length > 0);
});

t.test('a stop while the station does not answer: the run reports at once, the uplinks on their way counted', async (t) => {
  const rig = await startTrafficRig({ ids: ['T1'], bits: 2 ** 18, supplyBitsPerSecond: 11_000 });
  t.teardown(() => rig.close());
  // A station that takes the uplinks and never answers (a frozen process).
  const frozen = { params: { window: 4 }, request: () => new Promise<never>(() => undefined) };
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 300);
  const r = await runTraffic({ terminal: rig.terminals[0]!.module, station: frozen as never, terminalId: 'T1', cls: CLASSES.E, tMs: 1000, durationMs: 60_000, seed: 1, mode: 'otp', supplyBitsPerSecond: 11_000, deadlineMs: 3000, signal: stop.signal });
  t.equal(r.stoppedBy, 'stopped');
  t.ok(r.messages >= 4, `${r.messages} messages sent before the stop`);
  t.equal(r.failures['unanswered when stopped'], r.messages, 'every one counted as unanswered');
  // (Before, the window's wait ignored the signal: with a frozen station this never returned.)
});
