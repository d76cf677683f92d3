// One writer per state (issue 9 item 1), with real `qkt` processes racing: concurrent
// `carrier load --home` on one KMD home get distinct sequence numbers and every batch injects and
// collects; a load that fails spends nothing; a second `terminal run` on a busy flash image and a
// command on a home another process holds are refused with the holder's pid (exit 7); a
// `station run` started before an export serves it, and while loads run beside its uplinks
// neither writer loses the other's changes to the shared pool image; exports killed at random
// moments burn at most, never hand a seq out twice, and leave no lock in the way. Every process is ended by
// pid (hil/cli.ts, e2e-rig.ts); the module is in process, on its flash image.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Group, KeysCmd, StationCmd, SystemCmd } from '../firmware/link/groups.js';
import { LinkError, Rc } from '../firmware/link/errors.js';
import { connectStation } from '../host-tools/station/connect.js';
import { readClientPems } from '../host-tools/station/certs.js';
import { LinkClient } from '../host-tools/link/client.js';
import type { DeviceParams } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Carrier, LOCK_FILE } from '../host-tools/carrier/carrier.js';
import { lockSync, setLockCommand } from '../host-tools/lock.js';
import { homeLockOptions } from '../host-tools/kmd/home.js';
import { StationStore } from '../host-tools/station/store.js';
import { QKT_BIN } from './cli.js';
import { background, cliSkipReason, failsWith, moduleOn, parseJson, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(180_000);
const skip = cliSkipReason();
const BUSY = 7;

interface Loaded {
  carrierId: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

/** What a KMD home holds that a load spends: supply taken, per terminal the next seq and batches, the outbox. */
function ledger(home: string): { takenBits: number; terminals: Record<string, { nextSeq: number; batches: number }>; outbox: string[]; station: Record<string, string[]> } {
  const supply = JSON.parse(readFileSync(join(home, 'supply.json'), 'utf8')) as { takenBits: number };
  const terminals: Record<string, { nextSeq: number; batches: number }> = {};
  for (const f of readdirSync(join(home, 'terminals'))) {
    const r = JSON.parse(readFileSync(join(home, 'terminals', f), 'utf8')) as { nextSeq: number; batches: unknown[] };
    terminals[f.replace(/\.json$/, '')] = { nextSeq: r.nextSeq, batches: r.batches.length };
  }
  const station: Record<string, string[]> = {};
  for (const id of readdirSync(join(home, 'station'))) {
    const p = join(home, 'station', id, 'state.json');
    const names = existsSync(p) ? Object.values((JSON.parse(readFileSync(p, 'utf8')) as { batches: Record<string, { batchId: string }> }).batches).map((b) => b.batchId) : [];
    if (names.length > 0) station[id] = names.sort();
  }
  return { takenBits: supply.takenBits, terminals, outbox: readdirSync(join(home, 'outbox')).sort(), station };
}

async function injectFrom(m: { client: LinkClient; params: DeviceParams }, carrierDir: string, terminalId: string): Promise<{ batchId: string; seq: number }> {
  const carrier = Carrier.open(carrierDir);
  const r = await injectBatch(m.client, m.params, carrier.readBatch(carrier.batchFor(terminalId)!));
  carrier.recordReceipt(terminalId, r.batchId, r.receipt);
  return { batchId: r.batchId, seq: r.seq };
}

async function setup(t: Test, stock: string, terminals: string[]): Promise<{ dir: string; home: string; image: (id: string) => string }> {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const image = (id: string) => join(dir, `${id}.img`);
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', stock]);
  for (const id of terminals) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', image(id)]);
  return { dir, home, image };
}

t.test('4 concurrent carrier loads for one terminal: distinct seqs; every batch injects and collects', { skip }, async (t) => {
  const { dir, home, image } = await setup(t, '4Mbit', ['T1']);
  const N = 4;
  const bits = 256 * 1024;
  const runs = await Promise.all(
    Array.from({ length: N }, (_, i) => runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, `c${i}`), '--terminal', 'T1', '--bits', '256kbit', '--json'])),
  );
  runs.forEach((r, i) => t.equal(r.code, 0, `load ${i} exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`));
  const docs = runs.map((r) => parseJson<Loaded>(r));
  const seqs = docs.map((d) => d.loaded[0]!.seq);
  t.same([...seqs].sort(), [1, 2, 3, 4], `distinct sequence numbers: ${seqs.join(', ')}`);
  t.equal(new Set(docs.map((d) => d.loaded[0]!.batchId)).size, N, 'distinct batches');
  t.match(ledger(home), { takenBits: N * bits, terminals: { T1: { nextSeq: N + 1, batches: N } }, outbox: [] }, 'the ledger counts each once');
  t.equal(ledger(home).station['T1']!.length, N, 'the station holds all four');
  t.notOk(existsSync(join(home, 'kmd.lock')), 'the home lock is free again');

  // The field visit: the module takes them in seq order (anti-rollback), then the KMD collects each.
  const m = await moduleOn(t, image('T1'));
  const order = docs.map((d, i) => ({ i, ...d.loaded[0]! })).sort((a, b) => a.seq - b.seq);
  for (const o of order) t.match(await injectFrom(m, join(dir, `c${o.i}`), 'T1'), { batchId: o.batchId, seq: o.seq }, `seq ${o.seq} injects`);
  const st = await m.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.match(st, { pool: { storedKeyBits: N * bits } }, 'the module holds all four batches');
  // Collected concurrently too: four `kmd collect` on one home.
  const collects = await Promise.all(order.map((o) => qktJson<{ collected: Array<{ seq: number }>; rejected: unknown[] }>(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, `c${o.i}`)])));
  collects.forEach((c, k) => t.match(c, { collected: [{ seq: order[k]!.seq }], rejected: [] }, `receipt of seq ${order[k]!.seq} collected`));
  const recs = (JSON.parse(readFileSync(join(home, 'terminals', 'T1.json'), 'utf8')) as { batches: Array<{ deliveredAt?: string }> }).batches;
  t.ok(recs.every((b) => b.deliveredAt), 'the KMD marked every batch delivered');
});

t.test('a load that fails spends nothing: no supply, no seq, nothing on the carrier or in the outbox', { skip }, async (t) => {
  const { dir, home } = await setup(t, '10Mbit', ['T1', 'T2']);
  // T2's station pool is full after one 8 Mbit batch (the station's pool is as big as a module's).
  t.match(await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'full'), '--terminal', 'T2', '--bits', '8Mbit']), { loaded: [{ seq: 1 }] });
  const before = ledger(home);

  const noRoom = await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T2', '--bits', '1Mbit']);
  failsWith(t, noRoom, 1, /^qkt: the station's key pool for T2 has no room for a 1 Mbit batch \(NO_SPACE: .*\); nothing was spent; to free room: qkt kmd void --home \S+ --terminal T2 .*qkt kmd collect .*$/, 'no room at the station');
  t.same(ledger(home), before, 'supply, seqs, batches, outbox and station unchanged');
  t.notOk(existsSync(join(dir, 'c1')), 'no carrier was made');

  // Two terminals in one load: T1 would fit, T2 does not; the load is one transaction.
  const both = await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c2'), '--terminal', 'T1', '--terminal', 'T2', '--bits', '1Mbit', '--json']);
  t.equal(both.code, 1, 'T1 + T2 refused');
  t.match(parseJson(both), { error: { message: /key pool for T2 has no room/, exitCode: 1 } });
  t.same(ledger(home), before, 'T1 spent nothing either');
  t.notOk(existsSync(join(dir, 'c2')), 'no carrier was made');

  // Short supply: 10 Mbit of stock, 8 taken.
  const short = await runQkt(['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '4Mbit']);
  failsWith(t, short, 1, /^qkt: not enough key yet for T1: \d+ bits available, 4194304 needed/, 'short supply');
  t.same(ledger(home), before, 'unchanged');

  // And the same load once there is room works, with the next seq (none was burned).
  t.match(await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c3'), '--terminal', 'T1', '--bits', '1Mbit']), { loaded: [{ terminalId: 'T1', seq: 1 }] });
  t.equal(ledger(home).takenBits, before.takenBits + (1 << 20));
});

t.test('busy: a second terminal run on an image, a command on a home another process holds', { skip }, async (t) => {
  const { home, image } = await setup(t, '1Mbit', ['T1']);
  const first = await background(t, ['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  const pid = first.child.pid!;
  const t0 = Date.now();
  const second = await runQkt(['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  failsWith(t, second, BUSY, new RegExp(`^qkt: flash image ${image('T1')} is in use by pid ${pid} \\(qkt terminal run, since \\d{4}-[0-9T:.-]+Z\\)$`), 'second terminal run');
  t.ok(Date.now() - t0 < 5000, 'refused at once, no waiting for a module that does not stop');
  const json = await runQkt(['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0', '--json']);
  t.match(parseJson(json), { error: { message: new RegExp(`in use by pid ${pid}`), exitCode: BUSY } }, '--json: the error document');
  t.equal(await first.stop(), 0, 'the first stops cleanly on SIGTERM');
  const again = await background(t, ['terminal', 'run', '--flash', image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  t.match(again.ready, { event: 'ready', terminalId: 'T1' }, 'and released its image: a new run starts');
  await again.stop();

  // The home: held by this process, a command waits QKT_LOCK_WAIT seconds, then names the holder.
  setLockCommand('qkt test holder');
  const held = lockSync(home, homeLockOptions(home));
  t.teardown(() => held.release());
  const w0 = Date.now();
  const r = await runQkt(['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64KiB'], { env: { QKT_LOCK_WAIT: '0.5' } });
  failsWith(t, r, BUSY, new RegExp(`^qkt: KMD home ${home} is in use by pid ${process.pid} \\(qkt test holder, since \\d{4}-[0-9T:.-]+Z\\)$`), 'export on a held home');
  t.ok(Date.now() - w0 >= 500, 'after waiting the bound');
  const waiting = runQkt(['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64KiB', '--json'], { env: { QKT_LOCK_WAIT: '20' } });
  await new Promise((res) => setTimeout(res, 800));
  held.release();
  const done = await waiting;
  t.equal(done.code, 0, `a waiting export goes ahead once the holder lets go: ${done.stderr.trim()}`);
  t.match(parseJson(done), { queued: [{ terminalId: 'T1', seq: 1 }] });
});

async function rc(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e instanceof LinkError ? e.rc : -1;
  }
}

t.test('a station started before an export serves it; exports beside its uplinks lose nothing', { skip }, async (t) => {
  const { dir, home, image } = await setup(t, '8Mbit', ['T1']);
  const st = await background(t, ['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  const other = await runQkt(['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  failsWith(t, other, BUSY, new RegExp(`^qkt: station store ${join(home, 'station')} is in use by pid ${st.child.pid}`), 'one station service per store');
  await qktJson(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1-station')]);
  const station = new LinkClient(await connectStation(st.ready['listen'] as string, readClientPems(join(dir, 't1-station'))));
  t.teardown(() => station.close());
  await station.negotiate();

  // Exported after the station started (T1's station pool image did not even exist then).
  const l1 = await qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--bits', '1Mbit']);
  const m = await moduleOn(t, image('T1'));
  await injectFrom(m, join(dir, 'c1'), 'T1');
  const uplink = async (bytes: number): Promise<Uint8Array> => {
    const s = (await m.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
    return (await m.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(bytes).fill(0x42) }))['m'] as Uint8Array;
  };
  const first = await uplink(12);
  t.same(await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: first }), { n: 12, keyBits: 256 + 96 }, `the station opens an uplink under batch ${l1.loaded[0]!.batchId.slice(0, 8)}, exported after it started`);

  // Three more loads (CLI processes) while the station keeps opening uplinks: both write T1's pool.
  let opened = 1;
  let loading = true;
  const uplinks = (async () => {
    while (loading) {
      t.match(await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: await uplink(12) }), { n: 12 });
      opened++;
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  const loads = await Promise.all([2, 3, 4].map((i) => qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, `c${i}`), '--terminal', 'T1', '--bits', '1Mbit'])));
  loading = false;
  await uplinks;
  t.ok(opened > 1, `${opened} uplinks opened while three loads ran`);
  t.same(loads.map((l) => l.loaded[0]!.seq).sort(), [2, 3, 4], 'the loads got seqs 2, 3, 4');
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: first })), Rc.KEY_NOT_AVAILABLE, 'a replay still finds its keys consumed (no export wrote an old image back)');
  const consumed = async () => ({
    module: ((await m.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number }).consumedKeyBits,
    station: ((await station.request(Group.STATION, StationCmd.STATUS, {}))['terminals'] as Array<{ consumedKeyBits: number; activeBatches: number; inactiveBatches: number }>)[0]!,
  });
  const c = await consumed();
  t.equal(c.station.consumedKeyBits, c.module, `station and module consumed the same key bits (${c.module}): no uplink's consumption lost`);
  t.match(c.station, { activeBatches: 1, inactiveBatches: 3 }, 'the station holds the three new batches, inactive');

  // The new batches inject, and the station serves them: spend batch 1 (1 Mbit = 128 KiB) and on.
  for (const seq of [2, 3, 4]) await injectFrom(m, join(dir, `c${loads.findIndex((l) => l.loaded[0]!.seq === seq) + 2}`), 'T1');
  for (let i = 0; i < 40; i++) t.equal(((await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: await uplink(4000) })) as { n: number }).n, 4000);
  const pool = (await m.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { batches: Array<{ seq: number; consumedBits: number }> };
  t.ok((pool.batches.find((b) => b.seq === 2)?.consumedBits ?? 0) > 0, 'the module used up batch 1 and went on into batch 2');
  const after = (await consumed()).station;
  t.ok(after.activeBatches >= 2 && after.inactiveBatches === 2, `an uplink under batch 2 activated it at the station (${JSON.stringify(after)})`);
});

t.test('exports killed at random moments: a batch may burn, no seq is ever handed out twice, the home stays usable', { skip }, async (t) => {
  // Batches of 64 KiB (2^19 bits): ten of them, burned ones included, fit the station's 8 Mbit room
  // however many of the runs the kills miss.
  const { home } = await setup(t, '16Mbit', ['T1']);
  // How long a whole export takes here (start-up included), to aim the kills at its end, where it
  // holds the locks and writes.
  const t0 = Date.now();
  await qktJson(t, ['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64KiB']);
  const whole = Date.now() - t0;
  const outcomes: string[] = [];
  for (let i = 0; i < 8; i++) {
    const child = spawn(process.execPath, [QKT_BIN, 'kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64KiB'], { stdio: 'ignore' });
    const exited = new Promise<number | string>((r) => child.on('exit', (code, sig) => r(code ?? sig ?? -1)));
    const timer = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), whole * (0.5 + i * 0.08) + Math.random() * 20);
    const code = await exited;
    clearTimeout(timer);
    outcomes.push(String(code));
  }
  // The next command is not blocked by a lock a killed export left (its pid is dead).
  const last = await qktJson<{ queued: Array<{ seq: number }> }>(t, ['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64KiB']);
  const rec = JSON.parse(readFileSync(join(home, 'terminals', 'T1.json'), 'utf8')) as { nextSeq: number; batches: Array<{ batchId: string; seq: number; bits: number }> };
  const seqs = rec.batches.map((b) => b.seq);
  t.same(seqs, [...seqs].sort((a, b) => a - b), `records in seq order (an export takes ${whole} ms; the runs ended: ${outcomes.join(', ')})`);
  t.equal(new Set(seqs).size, seqs.length, `every seq once: ${seqs.join(', ')}`);
  t.equal(rec.nextSeq, Math.max(...seqs) + 1);
  t.equal(last.queued[0]!.seq, rec.nextSeq - 1, 'the last export took the next seq');
  const outbox = readdirSync(join(home, 'outbox'));
  const state = JSON.parse(readFileSync(join(home, 'station', 'T1', 'state.json'), 'utf8')) as { batches: Record<string, { batchId: string; seq: number }> };
  const named = new Map(Object.values(state.batches).map((b) => [b.batchId, b.seq]));
  for (const f of outbox) {
    const b = rec.batches.find((x) => f === `T1-${x.batchId}.qkb`);
    t.ok(b, `${f} is a recorded batch`);
    if (b) t.equal(named.get(b.batchId), b.seq, `seq ${b.seq}: its keys are at the station under the same seq`);
  }
  // A batch burned after its keys went in (killed before its outbox file) stays named, inactive,
  // until a later receipt retires it; a reservation never filled is gone.
  for (const [batchId, seq] of named) t.equal(rec.batches.find((b) => b.batchId === batchId)?.seq, seq, `station batch seq ${seq} is a recorded batch`);
  const store = new StationStore(join(home, 'station'));
  t.teardown(() => store.close());
  t.equal(store.status('T1').staging, null, 'no reservation left at the station');
  const supply = JSON.parse(readFileSync(join(home, 'supply.json'), 'utf8')) as { takenBits: number };
  t.ok(supply.takenBits >= rec.batches.length * (1 << 19), 'every recorded batch is paid for in the supply');
});

t.test('a carrier has one writer: inject, collect, status and load wait for its lock and name the holder', { skip }, async (t) => {
  const { dir, home } = await setup(t, '1Mbit', ['T1']);
  const car = join(dir, 'c1');
  mkdirSync(car);
  // Into an existing empty folder: the load's own lock file does not make it "not empty".
  t.match(await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', car, '--terminal', 'T1', '--bits', '64KiB']), { loaded: [{ seq: 1 }] });
  t.notOk(existsSync(join(car, LOCK_FILE)), 'the load released the carrier');
  const journal = readFileSync(join(car, 'journal.jsonl'));

  setLockCommand('qkt test holder');
  const held = lockSync(car, { what: `carrier ${car}`, file: join(car, LOCK_FILE) });
  t.teardown(() => held.release());
  const env = { QKT_LOCK_WAIT: '0.5' };
  const holder = new RegExp(`^qkt: carrier ${car} is in use by pid ${process.pid} \\(qkt test holder, since \\d{4}-[0-9T:.-]+Z\\)$`);
  // The port is never opened: the carrier's lock comes first.
  failsWith(t, await runQkt(['inject', '--carrier', car, '--port', 'tcp:127.0.0.1:9'], { env }), BUSY, holder, 'inject on a held carrier');
  failsWith(t, await runQkt(['kmd', 'collect', '--home', home, '--carrier', car], { env }), BUSY, holder, 'collect on a held carrier');
  failsWith(t, await runQkt(['carrier', 'status', '--carrier', car]), BUSY, holder, 'status while another writes (it would finish that writer\'s work)');
  failsWith(t, await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', car, '--terminal', 'T1', '--bits', '64KiB'], { env }), BUSY, holder, 'load on a held carrier');
  // The same carrier by another path (a symlink, a path through ..) is the same carrier, the same lock.
  symlinkSync(car, join(dir, 'c1-link'));
  failsWith(t, await runQkt(['inject', '--carrier', join(dir, 'c1-link'), '--port', 'tcp:127.0.0.1:9'], { env }), BUSY, holder, 'inject through a symlink to a held carrier');
  failsWith(t, await runQkt(['kmd', 'collect', '--home', home, '--carrier', `${dir}/c1-link/../c1`], { env }), BUSY, holder, 'collect through another path');
  t.same(readFileSync(join(car, 'journal.jsonl')), journal, 'nothing was written to the carrier');
  const status = await runQkt(['kmd', 'status', '--home', home, '--json']);
  t.equal((parseJson(status) as { totals: Record<string, { batches: number }> }).totals['on-carrier']?.batches, 1, 'the refused load exported nothing');
  held.release();
  t.match(await qktJson(t, ['carrier', 'status', '--carrier', car]), { carrierId: /./, batches: [{ terminalId: 'T1' }], journal: { events: 2 } }, 'free again: status reads it');

  // A drive pulled from a laptop that died mid-inject carries that laptop's lock: never taken over, the fix is named.
  writeFileSync(join(car, LOCK_FILE), JSON.stringify({ pid: 4242, host: 'field-laptop-7', command: 'qkt inject', since: '2026-11-30T08:00:00.000Z', nonce: 'ab'.repeat(8) }));
  failsWith(t, await runQkt(['inject', '--carrier', car, '--port', 'tcp:127.0.0.1:9'], { env }), BUSY, new RegExp(`^qkt: carrier ${car} is in use by pid 4242 on host field-laptop-7 \\(qkt inject, since 2026-11-30T08:00:00.000Z\\); if no qkt runs there on it any more, remove ${join(car, LOCK_FILE)}$`), 'a foreign lock');
});
