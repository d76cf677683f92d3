// The batch lifecycle at the KMD (issue 9 item 5), with real `qkt` processes: six concurrent
// `carrier load --home` for one terminal get distinct seqs, and `kmd status --json` follows every
// batch from on-carrier to collected; a failed load leaves `kmd status --json` identical; a stale
// batch is refused at inject with the `kmd void` that retires it; void races exports and never
// leaves a half state; a factory-reset module is enrolled again with a new key, and a --flash that
// is a dangling symlink or a FIFO changes nothing; a damaged home's status exits 6 and lists it.
// Every process is ended by pid (hil/cli.ts, e2e-rig.ts).
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Group, SystemCmd } from '../firmware/link/groups.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import type { KmdStatus } from '../host-tools/kmd/status.js';
import { background, cliSkipReason, failsWith, moduleOn, parseJson, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(180_000);
const skip = cliSkipReason();

interface Loaded {
  carrierId: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

async function setup(t: Test, stock: string, terminals: string[], init: string[] = []): Promise<{ dir: string; home: string; image: (id: string) => string }> {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const image = (id: string) => join(dir, `${id}.img`);
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', stock, ...init]);
  for (const id of terminals) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', image(id)]);
  return { dir, home, image };
}

const status = (t: Test, home: string) => qktJson<KmdStatus>(t, ['kmd', 'status', '--home', home]);
const states = (s: KmdStatus) => s.batches.map((b) => `${b.terminalId}:${b.seq}:${b.state}`);

t.test('6 concurrent carrier loads for one terminal: distinct seqs; kmd status follows each from on-carrier to collected', { skip }, async (t) => {
  const { dir, home, image } = await setup(t, '8Mbit', ['T1']);
  const N = 6;
  const bits = 256 * 1024;
  const runs = await Promise.all(
    Array.from({ length: N }, (_, i) => runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, `c${i}`), '--terminal', 'T1', '--bits', '256kbit', '--json'])),
  );
  runs.forEach((r, i) => t.equal(r.code, 0, `load ${i} exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`));
  const docs = runs.map((r) => parseJson<Loaded>(r));
  const seqs = docs.map((d) => d.loaded[0]!.seq);
  t.same([...seqs].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6], `distinct sequence numbers: ${seqs.join(', ')}`);
  let s = await status(t, home);
  t.same(states(s), [1, 2, 3, 4, 5, 6].map((q) => `T1:${q}:on-carrier`), 'all six on carriers');
  t.same(
    s.batches.map((b) => b.carrierId),
    [1, 2, 3, 4, 5, 6].map((q) => docs.find((d) => d.loaded[0]!.seq === q)!.carrierId),
    'each on the carrier its load made',
  );
  t.match(s, { consistent: true, supply: { takenBits: N * bits }, terminals: [{ terminalId: 'T1', nextSeq: N + 1, station: { storedKeyBits: N * bits } }], totals: { 'on-carrier': { batches: N, bits: N * bits } } });

  // The field visit: the module takes them in seq order (anti-rollback); then the KMD collects each.
  const m = await moduleOn(t, image('T1'));
  const order = docs.map((d, i) => ({ i, ...d.loaded[0]! })).sort((a, b) => a.seq - b.seq);
  for (const o of order) {
    const carrier = Carrier.open(join(dir, `c${o.i}`));
    const r = await injectBatch(m.client, m.params, carrier.readBatch(carrier.batchFor('T1')!));
    carrier.recordReceipt('T1', r.batchId, r.receipt);
    t.match(r, { batchId: o.batchId, seq: o.seq }, `seq ${o.seq} injects`);
  }
  t.match(await m.client.request(Group.SYSTEM, SystemCmd.STATUS, {}), { pool: { storedKeyBits: N * bits } }, 'the module holds all six');
  const collects = await Promise.all(order.map((o) => qktJson<{ collected: Array<{ seq: number }>; rejected: unknown[] }>(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, `c${o.i}`)])));
  collects.forEach((c, k) => t.match(c, { collected: [{ seq: order[k]!.seq }], rejected: [] }, `receipt of seq ${order[k]!.seq} collected`));
  s = await status(t, home);
  t.same(states(s), [1, 2, 3, 4, 5, 6].map((q) => `T1:${q}:collected`), 'all six collected');
  t.same(s.totals.collected, { batches: N, bits: N * bits });
});

t.test('a load that fails leaves kmd status --json identical, and names the fix', { skip }, async (t) => {
  // A link fast enough to keep the supply's buffer (1 Gbit) full: what is available is the
  // buffer, not a clock reading, so two statuses of an unchanged KMD are the same document.
  const { dir, home } = await setup(t, '2Gbit', ['T1', 'T2'], ['--rate', '1000Mbit/s']);
  t.match(await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'full'), '--terminal', 'T2', '--bits', '8Mbit']), { loaded: [{ seq: 1 }] });
  const before = await runQkt(['kmd', 'status', '--home', home, '--json']);
  t.equal(before.code, 0);
  t.match(parseJson<KmdStatus>(before), { supply: { availableBits: 2 ** 30 }, terminals: [{ nextSeq: 1, station: { freeKeyBits: 2 ** 23 } }, { nextSeq: 2, station: { freeKeyBits: 0 } }] });

  const noRoom = await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--terminal', 'T2', '--bits', '1Mbit']);
  failsWith(t, noRoom, 1, new RegExp(`^qkt: the station's key pool for T2 has no room for a 1 Mbit batch \\(NO_SPACE: .*\\); nothing was spent; to free room: qkt kmd void --home ${home} --terminal T2 \\(batches never to be used\\), or qkt kmd collect`), 'no room');
  t.notOk(existsSync(join(dir, 'c1')), 'no carrier was made');
  const after = await runQkt(['kmd', 'status', '--home', home, '--json']);
  t.equal(after.stdout, before.stdout, 'kmd status --json byte for byte the same: supply, seqs, batches, station');
});

t.test('a stale batch: inject names kmd void; void retires it; collected ones need --in-use', { skip }, async (t) => {
  const { dir, home, image } = await setup(t, '4Mbit', ['T1']);
  const l1 = await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--bits', '64kbit']);
  const l2 = await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c2'), '--terminal', 'T1', '--bits', '64kbit']);
  const term = await background(t, ['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  const port = term.ready['port'] as string;
  await qktJson(t, ['inject', '--carrier', join(dir, 'c2'), '--port', port]);
  await qktJson(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c2')]);
  t.same(states(await status(t, home)), ['T1:1:stale', 'T1:2:collected'], 'seq 1 is stale once seq 2 is collected');
  const id1 = l1.loaded[0]!.batchId.slice(0, 8);
  const stale = await runQkt(['inject', '--carrier', join(dir, 'c1'), '--port', port]);
  failsWith(t, stale, 4, new RegExp(`^qkt: terminal T1 refused the batch: STALE_BATCH: it already holds a newer batch; back at the KMD, retire it: qkt kmd void --home H --terminal T1 --batch ${id1} --reason stale$`), 'stale at inject');

  const human = await runQkt(['kmd', 'status', '--home', home]);
  t.equal(human.code, 0);
  t.match(human.stdout, new RegExp(`batches: 1 collected \\(64 kbit\\), 1 stale \\(64 kbit\\)\\n.*\\n${id1}  T1 +1 +64 kbit +stale +${l1.carrierId}\\nT1 has stale or burned batches, never to be used: qkt kmd void --home H --terminal T1 retires them\\n?$`), `the table: ${human.stdout}`);

  const v = await qktJson<{ voided: Array<{ batchId: string; was: string }>; kept: Array<{ state: string }> }>(t, ['kmd', 'void', '--home', home, '--terminal', 'T1', '--batch', id1, '--reason', 'stale']);
  t.match(v, { voided: [{ batchId: l1.loaded[0]!.batchId, was: 'stale' }], kept: [] });
  t.same(states(await status(t, home)), ['T1:1:void', 'T1:2:collected']);
  t.match(await qktJson(t, ['kmd', 'void', '--home', home, '--terminal', 'T1']), { voided: [], kept: [{ state: 'collected' }] }, 'idempotent; the collected batch is kept');
  const id2 = l2.loaded[0]!.batchId.slice(0, 8);
  const inUse = await runQkt(['kmd', 'void', '--home', home, '--terminal', 'T1', '--batch', id2]);
  failsWith(t, inUse, 1, new RegExp(`^qkt: batch ${id2} of T1 is collected: the terminal holds it and uses its keys; .* qkt kmd void --home ${home} --terminal T1 --batch ${id2} --in-use$`), 'in use');
  const bad = await runQkt(['kmd', 'void', '--home', home, '--terminal', 'T1', '--reason', 'no way']);
  failsWith(t, bad, 2, /^qkt: --reason must be a word/, 'a bad reason');
});

t.test('void racing exports: every batch ends exported or void, never in between', { skip }, async (t) => {
  const { home } = await setup(t, '8Mbit', ['T1']);
  const runs = await Promise.all([
    ...[0, 1, 2].map(() => runQkt(['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64kbit'])),
    ...[0, 1].map(() => runQkt(['kmd', 'void', '--home', home, '--terminal', 'T1', '--reason', 'lost-carrier'])),
  ]);
  runs.forEach((r, i) => t.equal(r.code, 0, `process ${i} exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`));
  const s = await status(t, home);
  t.same(s.batches.map((b) => b.seq), [1, 2, 3], 'three exports, distinct seqs');
  t.ok(s.batches.every((b) => b.state === 'exported' || b.state === 'void'), `each exported or void: ${states(s).join(', ')}`);
  const outbox = readdirSync(join(home, 'outbox'));
  const exported = s.batches.filter((b) => b.state === 'exported');
  t.same(outbox.sort(), exported.map((b) => `T1-${b.batchId}.qkb`).sort(), 'the outbox holds exactly the exported ones');
  t.equal(s.terminals[0]!.station.storedKeyBits, exported.length * 64 * 1024, 'the station holds keys for exactly those');
});

t.test('a factory-reset terminal is enrolled again: new key, old batches void, seq forward', { skip }, async (t) => {
  const { dir, home, image } = await setup(t, '4Mbit', ['T1']);
  await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--bits', '64kbit']);
  const again = ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', image('T1'), '--again'];
  failsWith(t, await runQkt(again), 6, /^qkt: \S+ is a live module of T1 holding this KMD's current device key \(generation 1\): nothing to do; to give it a new key, factory-reset it first \(qkt kmd token/, 'a live module');

  let term = await background(t, ['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  failsWith(t, await runQkt(again), 7, new RegExp(`^qkt: flash image \\S+ is in use by pid ${term.child.pid} \\(qkt terminal run`), 'a running module');
  t.match(await qktJson(t, ['inject', '--carrier', join(dir, 'c1'), '--port', term.ready['port'] as string]), { seq: 1 });
  await qktJson(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c1')]);
  // The factory reset, with the KMD's token on the carrier.
  await qktJson(t, ['kmd', 'token', '--home', home, '--terminal', 'T1', '--carrier', join(dir, 'c1'), '--factory-reset']);
  await qktJson(t, ['zeroize', '--carrier', join(dir, 'c1'), '--port', term.ready['port'] as string, '--factory-reset']);
  await term.stop();

  const r = await qktJson<{ generation: number; voided: Array<{ seq: number; was: string }> }>(t, again);
  t.match(r, { terminalId: 'T1', generation: 2, voided: [{ seq: 1, was: 'collected' }] });
  t.match(await status(t, home), { terminals: [{ terminalId: 'T1', generation: 2, nextSeq: 2 }], totals: { void: { batches: 1 }, collected: { batches: 0 } } });

  // The module works again, under the new key, and the seq goes on from 2.
  await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c2'), '--terminal', 'T1', '--bits', '64kbit']);
  term = await background(t, ['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  t.match(await qktJson(t, ['inject', '--carrier', join(dir, 'c2'), '--port', term.ready['port'] as string]), { terminalId: 'T1', seq: 2 });
  t.match(await qktJson(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c2')]), { collected: [{ seq: 2 }], rejected: [] });
});

t.test('kmd enroll --again on a dangling symlink or a FIFO: refused at once, kmd status --json identical', { skip }, async (t) => {
  const { dir, home } = await setup(t, '4Mbit', ['T1']);
  await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--bits', '64kbit']);
  const ledger = async () => {
    const s = await status(t, home);
    return JSON.stringify({ ...s, supply: { ...s.supply, availableBits: 0 } }); // available accrues with the clock
  };
  const before = await ledger();
  const link = join(dir, 't1-new.img');
  symlinkSync(join(dir, 'nonexistent', 'new.img'), link);
  failsWith(t, await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', link, '--again']), 2, /^qkt: \S+t1-new\.img: a symbolic link, not a regular file; a module flash image is a regular file/, 'a dangling symlink');
  t.equal(await ledger(), before, 'the dangling symlink changed nothing');
  const fifo = join(dir, 'fifo.img');
  execFileSync('mkfifo', [fifo]);
  failsWith(t, await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', fifo, '--again'], { timeoutMs: 20_000 }), 2, /^qkt: \S+fifo\.img: a FIFO, not a regular file/, 'a FIFO');
  t.equal(await ledger(), before, 'the FIFO changed nothing');
});

t.test('kmd status on a damaged home: exit 6, the damaged files listed, the rest printed', { skip }, async (t) => {
  const { home } = await setup(t, '4Mbit', ['T1', 'T2']);
  await qktJson(t, ['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64kbit']);
  writeFileSync(join(home, 'terminals', 'T2.json'), '{}');
  const r = await runQkt(['kmd', 'status', '--home', home, '--json']);
  t.equal(r.code, 6, 'exit 6');
  t.equal(r.stderr, 'qkt: 1 file(s) of the home are damaged (listed); the rest was read\n');
  const s = parseJson<KmdStatus>(r);
  t.same(s.damaged, [{ terminalId: 'T2', file: join(home, 'terminals', 'T2.json'), reason: 'not a terminal record (terminalId does not match its file name)' }]);
  t.same(states(s), ['T1:1:exported'], "T1's batches are still reported");
  const text = await runQkt(['kmd', 'status', '--home', home]);
  t.equal(text.code, 6);
  t.match(text.stdout, /^DAMAGED \S+T2\.json \(terminal T2, left out below\): not a terminal record/m);
});
