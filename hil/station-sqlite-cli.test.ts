// A KMD home made with `kmd init --station-store sqlite`, through the real `qkt` CLI over a
// terminal's whole life: enroll, carrier load, terminal run + inject, station cert, station run,
// test uplinks, station status (operator and terminal), kmd collect (receipts activate the station's
// batch), a second batch, kmd void (and --in-use), kmd status, a factory reset and kmd enroll
// --again, station status --home read offline, and station run started again (nothing filed twice
// in the inbox). The same steps run side by side on a home with the pool-image store (the default),
// and every observation (each command's exit and stderr; batch ids, ports, times left out) must be
// the same for both: the SQLite store is a drop-in. The sqlite home's station folder holds
// station.sqlite and no per-terminal pool image. `kmd init` without the option makes a file store;
// `--station-store bogus` is a usage error (exit 2); a damaged station.sqlite is named, exit 6.
// (There is no `kmd compact` command: void compacts the records itself.)
import t from 'tap';
import type { Test } from 'tap';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { KmdStatus } from '../host-tools/kmd/status.js';
import { background, cliSkipReason, failsWith, parseJson, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(240_000); // about 45 s on an idle machine; two homes run side by side
const skip = cliSkipReason();

const REFUSED = 4;
const B1 = 256 * 1024; // the first batch

interface Row {
  terminalId: string;
  generation: number | null;
  storedKeyBits: number;
  maxKeyBits: number;
  consumedKeyBits: number;
  activeBatches: number;
  inactiveBatches: number;
  activeKeyBits: number;
  inactiveKeyBits: number;
  lastUplink: { at: string; mode: string; counter: number; bytes: number; keyBits: number } | null;
  forecast: { keyBitsPerDay: number; basisDays: number; daysLeft: number } | null;
}
interface Loaded {
  carrierId: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

type Kind = 'files' | 'sqlite';

/** A row without its times (the last uplink's, the forecast's basis may straddle midnight). */
const rowShape = (r: Row) => ({ ...r, lastUplink: r.lastUplink ? { ...r.lastUplink, at: 'T' } : null, forecast: r.forecast ? 'F' : null });
const states = (s: KmdStatus) => s.batches.map((b) => `${b.terminalId}:${b.seq}:${b.bits}:${b.state}`);

/** Every pool.img under `dir`, at any depth. */
function poolImages(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...poolImages(p));
    else if (e.name === 'pool.img') out.push(p);
  }
  return out;
}

/**
 * A terminal's life at a KMD whose station store is `kind`. Returns what a user sees, in order, with
 * the values that differ by nature (batch ids, ports, times) left out, to compare the two kinds.
 */
async function life(t: Test, kind: Kind, dir: string): Promise<Array<[string, unknown]>> {
  const seen: Array<[string, unknown]> = [];
  const see = (what: string, v: unknown) => void seen.push([what, v]);
  // Every command's exit and stderr (warnings included), to compare the two kinds.
  const qj = async <R = Record<string, unknown>>(t: Test, args: string[]): Promise<R> => {
    const r = await runQkt([...args, '--json']);
    t.equal(r.code, 0, `${kind}: qkt ${args.slice(0, 2).join(' ')} exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`);
    see(`qkt ${args.slice(0, 2).join(' ')}`, [r.code, r.stderr.split(dir).join('D').replace(/\b\d+\.\d+\.\d+\.\d+:\d+/g, 'ADDR')]);
    return parseJson<R>(r);
  };
  const home = join(dir, 'kmd');
  const img = join(dir, 'T1.img');
  const ops = join(dir, 'ops');
  const init = await qj<{ stationStore: string }>(t, ['kmd', 'init', '--home', home, '--stock', '4Mbit', ...(kind === 'sqlite' ? ['--station-store', 'sqlite'] : [])]);
  t.equal(init.stationStore, kind, `${kind}: kmd init says which store`);
  for (const id of ['T1', 'T2']) await qj(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', join(dir, `${id}.img`)]);
  const l1 = await qj<Loaded>(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'c1'), '--terminal', 'T1', '--bits', '256kbit', '--init']);
  see('load 1', l1.loaded.map((l) => [l.terminalId, l.seq, l.bits, l.outcome]));
  await qj(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1')]);
  await qj(t, ['station', 'cert', '--home', home, '--terminal', 'T2', '--out', join(dir, 't2')]);
  await qj(t, ['station', 'cert', '--home', home, '--operator', 'ops', '--out', ops]);

  const st = await background(t, ['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  const station = st.ready['listen'] as string;
  let term = await background(t, ['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0']);
  let port = term.ready['port'] as string;
  const inj1 = await qj(t, ['inject', '--carrier', join(dir, 'c1'), '--port', port]);
  t.match(inj1, { terminalId: 'T1', seq: 1, bits: B1, receiptStored: true }, `${kind}: batch 1 injected`);

  const rows = async (cert = ops) => (await qj<{ station: string; terminals: Row[] }>(t, ['station', 'status', '--station', station, '--cert', cert])).terminals;
  const spent = async () => (await qj<{ pool: { consumedKeyBits: number; storedKeyBits: number } }>(t, ['status', '--port', port])).pool;

  // Before any uplink: the keys at the station, awaiting proof of delivery.
  const before = await rows();
  t.same(
    before.map((r) => [r.terminalId, r.generation, r.storedKeyBits, r.consumedKeyBits, r.activeBatches, r.inactiveBatches, r.activeKeyBits, r.inactiveKeyBits, r.lastUplink, r.forecast]),
    [['T1', 1, B1, 0, 0, 1, 0, B1, null, null]],
    `${kind}: one terminal, its batch inactive, no uplink yet`,
  );
  see('status before', before.map(rowShape));

  // Test uplinks: OTP, then AEAD with a downlink back.
  const otp = await qj(t, ['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--data', 'hello station']);
  t.same(otp, { port, station, terminalId: 'T1', mode: 'otp', accepted: true, decrypted: true, counter: 0, bytes: 13, stationKeyBits: 256 + 13 * 8 }, `${kind}: OTP uplink opened`);
  const aead = await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--mode', 'aead']);
  t.equal(aead.code, 0, aead.stderr);
  t.match(aead.stdout, /: accepted, decrypted ok\n  aead message #0, 23 bytes, 256 bit of key at the station\n  downlink under the same session key: opened ok by the terminal\n$/, `${kind}: AEAD uplink opened, downlink back`);
  see('aead', aead.stdout.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'ADDR'));

  let row = (await rows())[0]!;
  let pool = await spent();
  t.equal(row.consumedKeyBits, 256 + 13 * 8 + 256, `${kind}: the station accounts both uplinks`);
  t.equal(row.consumedKeyBits, pool.consumedKeyBits, `${kind}: the terminal used the same key bits`);
  t.same([row.activeBatches, row.inactiveBatches, row.activeKeyBits, row.inactiveKeyBits], [1, 0, row.storedKeyBits, 0], `${kind}: active by first use`);
  t.match(row.lastUplink, { mode: 'aead', counter: 0, bytes: 23, keyBits: 256 });
  t.ok(row.forecast && row.forecast.daysLeft === Math.floor(row.storedKeyBits / row.forecast.keyBitsPerDay), `${kind}: a forecast`);
  see('status after uplinks', rowShape(row));
  const human = await runQkt(['station', 'status', '--station', station, '--cert', ops]);
  t.equal(human.code, 0);
  see('status text', human.stdout.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'ADDR').replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ/g, 'TIME').replace(/\d+ d /g, 'N d '));
  t.same(await rows(join(dir, 't2')), [], `${kind}: T2's certificate sees no row`);
  t.same((await rows(join(dir, 't1'))).map(rowShape), [rowShape(row)], `${kind}: T1's certificate sees its own row`);

  // Receipts to the KMD: batch 1 is collected (already active at the station by first use).
  const c1 = await qj<{ collected: Array<{ seq: number }>; rejected: unknown[]; activatedBits: number }>(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c1')]);
  t.match(c1, { collected: [{ seq: 1 }], rejected: [] }, `${kind}: receipt of batch 1 collected`);
  see('collect 1', [c1.collected.map((c) => c.seq), c1.activatedBits]);

  // A second batch: at the station inactive until its receipt activates it.
  const l2 = await qj<Loaded>(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'c2'), '--terminal', 'T1', '--bits', '64kbit', '--init']);
  see('load 2', l2.loaded.map((l) => [l.seq, l.bits]));
  t.match(await qj(t, ['inject', '--carrier', join(dir, 'c2'), '--port', port]), { seq: 2, bits: 65536 });
  row = (await rows())[0]!;
  t.same([row.activeBatches, row.inactiveBatches, row.inactiveKeyBits], [1, 1, 65536], `${kind}: batch 2 awaits its receipt`);
  see('status batch 2 injected', rowShape(row));
  const c2 = await qj<{ collected: Array<{ seq: number }>; activatedBits: number }>(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c2')]);
  t.match(c2, { collected: [{ seq: 2 }], activatedBits: 65536 }, `${kind}: the receipt activates batch 2 at the station`);
  row = (await rows())[0]!;
  t.same([row.activeBatches, row.inactiveBatches, row.inactiveKeyBits, row.storedKeyBits], [2, 0, 0, B1 + 65536 - row.consumedKeyBits], `${kind}: both active`);
  see('status batch 2 collected', rowShape(row));

  // A third batch, lost with its carrier before the visit: void it; the station drops its keys.
  const l3 = await qj<Loaded>(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'c3'), '--terminal', 'T1', '--bits', '128kbit', '--init']);
  t.equal((await rows())[0]!.inactiveKeyBits, 131072, `${kind}: batch 3 at the station, inactive`);
  let ks = await qj<KmdStatus>(t, ['kmd', 'status', '--home', home]);
  t.same(states(ks), ['T1:1:262144:collected', 'T1:2:65536:collected', 'T1:3:131072:on-carrier'], `${kind}: kmd status follows every batch`);
  see('kmd status', [states(ks), ks.consistent, ks.terminals.map((x) => [x.terminalId, x.generation, x.nextSeq, x.station]), ks.totals, ks.damaged]);
  const v = await qj<{ voided: Array<{ batchId: string; seq: number; was: string; stationBits: number }>; kept: Array<{ seq: number; state: string }> }>(t, ['kmd', 'void', '--home', home, '--terminal', 'T1', '--reason', 'lost-carrier']);
  t.match(v, { voided: [{ batchId: l3.loaded[0]!.batchId, seq: 3, was: 'on-carrier', stationBits: 131072 }], kept: [{ seq: 1, state: 'collected' }, { seq: 2, state: 'collected' }] }, `${kind}: void takes the lost batch, keeps those in use`);
  see('void', [v.voided.map((x) => [x.seq, x.was, x.stationBits]), v.kept.map((x) => [x.seq, x.state])]);
  row = (await rows())[0]!;
  t.same([row.inactiveBatches, row.inactiveKeyBits], [0, 0], `${kind}: batch 3's keys gone from the station`);
  see('status after void', rowShape(row));
  // Batch 2 is in use: refused without --in-use, voided with it.
  const id2 = l2.loaded[0]!.batchId.slice(0, 8);
  failsWith(t, await runQkt(['kmd', 'void', '--home', home, '--terminal', 'T1', '--batch', id2]), 1, new RegExp(`^qkt: batch ${id2} of T1 is collected: the terminal holds it and uses its keys; .* --in-use$`), `${kind}: void of a batch in use`);
  const v2 = await qj<{ voided: Array<{ seq: number; was: string; stationBits: number }> }>(t, ['kmd', 'void', '--home', home, '--terminal', 'T1', '--batch', id2, '--in-use', '--reason', 'zeroized']);
  t.match(v2, { voided: [{ seq: 2, was: 'collected', stationBits: 65536 }] }, `${kind}: --in-use voids it`);
  row = (await rows())[0]!;
  t.same([row.activeBatches, row.storedKeyBits], [1, B1 - row.consumedKeyBits], `${kind}: the station holds batch 1 only`);
  see('status after void --in-use', rowShape(row));
  // An uplink still opens, on batch 1.
  t.match(await qj(t, ['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--data', 'after void']), { accepted: true, decrypted: true, stationKeyBits: 256 + 10 * 8 }, `${kind}: an uplink after the voids`);
  pool = await spent();
  row = (await rows())[0]!;
  t.equal(row.consumedKeyBits, pool.consumedKeyBits, `${kind}: still the same key bits used at both ends`);
  see('uplink after void', rowShape(row));
  ks = await qj<KmdStatus>(t, ['kmd', 'status', '--home', home]);
  t.same(states(ks).filter((s) => !s.endsWith(':void')), ['T1:1:262144:collected'], `${kind}: kmd status after the voids`);
  see('kmd status after voids', [states(ks), ks.terminals.map((x) => [x.terminalId, x.generation, x.nextSeq, x.station]), ks.totals]);

  // The module is factory-reset and enrolled again: new key, old batches void at the station.
  await qj(t, ['kmd', 'token', '--home', home, '--terminal', 'T1', '--carrier', join(dir, 'c1'), '--factory-reset']);
  await qj(t, ['zeroize', '--carrier', join(dir, 'c1'), '--port', port, '--factory-reset']);
  t.equal(await term.stop(), 0, `${kind}: terminal stops`);
  const again = await qj<{ generation: number; voided: Array<{ seq: number; was: string }> }>(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', img, '--again']);
  t.match(again, { terminalId: 'T1', generation: 2, voided: [{ seq: 1, was: 'collected' }] }, `${kind}: enrolled again`);
  see('enroll again', [again.generation, again.voided.map((x) => [x.seq, x.was])]);
  const afterAgain = await rows();
  t.match(afterAgain, [{ terminalId: 'T1', generation: 2, storedKeyBits: 0, activeBatches: 0, inactiveBatches: 0 }], `${kind}: the station holds no key of the old module`);
  see('status after enroll again', afterAgain.map(rowShape));
  term = await background(t, ['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0']);
  port = term.ready['port'] as string;
  await qj(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'c4'), '--terminal', 'T1', '--bits', '64kbit', '--init']);
  t.match(await qj(t, ['inject', '--carrier', join(dir, 'c4'), '--port', port]), { terminalId: 'T1', seq: 4 }, `${kind}: the new module takes seq 4`);
  failsWith(t, await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1')]), REFUSED, /^qkt: the station refused STATUS: .*cert generation 1 retired \(now 2\)/, `${kind}: the old certificate is refused`);
  await qj(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1b')]);
  const up = await qj(t, ['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1b'), '--data', 'new module']);
  t.match(up, { terminalId: 'T1', accepted: true, decrypted: true, counter: 0, stationKeyBits: 256 + 10 * 8 }, `${kind}: the new module's uplink opens`);
  t.match(await qj(t, ['kmd', 'collect', '--home', home, '--carrier', join(dir, 'c4')]), { collected: [{ seq: 4 }], rejected: [] });
  const served = await rows();
  // The station's account goes on across modules: the old module's use and the new one's.
  t.equal((await spent()).consumedKeyBits, 336, `${kind}: the new module used 336 bits`);
  t.match(served, [{ terminalId: 'T1', generation: 2, activeBatches: 1, inactiveBatches: 0, storedKeyBits: 65536 - 336, consumedKeyBits: row.consumedKeyBits + 336, lastUplink: { mode: 'otp', bytes: 10, keyBits: 336 } }], `${kind}: the new module's account`);
  see('status new module', served.map(rowShape));

  // The inbox: one line per opened uplink, each filed once.
  const inboxFile = join(home, 'station', 'inbox.jsonl');
  const readInbox = () => readFileSync(inboxFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const inboxShape = (lines: Array<Record<string, unknown>>) => lines.map((l) => [l['terminal'], l['mode'], l['counter'], l['bytes'], l['mode'] === 'otp' ? Buffer.from(l['data'] as string, 'base64').toString() : '']);
  let inbox = readInbox();
  see('inbox', inboxShape(inbox));
  t.equal(inbox.length, 4, `${kind}: four uplinks opened, four inbox lines`);
  if (kind === 'sqlite') t.ok(inbox.every((l, i) => i === 0 || (l['id'] as number) > (inbox[i - 1]!['id'] as number)), 'sqlite: inbox lines carry increasing ids');

  t.equal(await st.stop(), 0, `${kind}: station stops cleanly`);
  // Offline: station status --home reads the same rows the service served.
  const local = await qj<{ station: string; terminals: Row[] }>(t, ['station', 'status', '--home', home]);
  t.equal(local.station, join(home, 'station'));
  t.same(local.terminals, served, `${kind}: --home reads the rows the station served`);
  ks = await qj<KmdStatus>(t, ['kmd', 'status', '--home', home]);
  t.equal(ks.consistent, true);
  see('kmd status at the end', [states(ks), ks.terminals.map((x) => [x.terminalId, x.generation, x.nextSeq, x.station]), ks.totals, ks.damaged]);

  // The station started again: nothing filed twice; the next uplink is filed once, after the rest.
  const st2 = await background(t, ['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  t.same(readInbox(), inbox, `${kind}: a restart files nothing again`);
  t.match(await qj(t, ['station', 'uplink', '--port', port, '--station', st2.ready['listen'] as string, '--cert', join(dir, 't1b'), '--data', 'restarted']), { accepted: true, decrypted: true }, `${kind}: an uplink after the restart`);
  inbox = readInbox();
  t.equal(inbox.length, 5, `${kind}: one more inbox line`);
  if (kind === 'sqlite') t.ok((inbox[4]!['id'] as number) > (inbox[3]!['id'] as number), 'sqlite: its id after the others');
  see('inbox after restart', inboxShape(inbox));
  const last = await qj<{ terminals: Row[] }>(t, ['station', 'status', '--station', st2.ready['listen'] as string, '--cert', ops]);
  see('status after restart', last.terminals.map(rowShape));
  await term.stop();
  t.equal(await st2.stop(), 0, `${kind}: station stops cleanly again`);
  return seen;
}

t.test('a terminal\'s life on a sqlite station store, step by step as on the file store', { skip }, async (t) => {
  const dir = t.testdir({ files: {}, sqlite: {} });
  const [files, sqlite] = await Promise.all([life(t, 'files', join(dir, 'files')), life(t, 'sqlite', join(dir, 'sqlite'))]);
  t.equal(sqlite.length, files.length, 'the same steps observed');
  for (let i = 0; i < Math.max(files.length, sqlite.length); i++) t.same(sqlite[i], files[i], `same as the file store: ${files[i]?.[0] ?? sqlite[i]?.[0]}`);

  // What each home's station folder holds.
  const sqlStation = join(dir, 'sqlite', 'kmd', 'station');
  t.ok(statSync(join(sqlStation, 'station.sqlite')).isFile(), 'sqlite: station.sqlite');
  t.same(poolImages(sqlStation), [], 'sqlite: no pool image anywhere in the station folder');
  t.same(readdirSync(sqlStation).filter((f) => statSync(join(sqlStation, f)).isDirectory()), [], 'sqlite: no per-terminal folder');
  const fileStation = join(dir, 'files', 'kmd', 'station');
  t.notOk(existsSync(join(fileStation, 'station.sqlite')), 'files: no database');
  t.same(poolImages(fileStation).map((p) => p.slice(fileStation.length + 1)).sort(), ['T1/pool.img'], 'files: a pool image for T1');
});

t.test('kmd init: files by default; --station-store bogus is a usage error', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  t.match(await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '1Mbit']), { stationStore: 'files' });
  t.same(readdirSync(join(home, 'station')), [], 'an empty station folder: pool images come with the first batch');
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'T1.img')]);
  await qktJson(t, ['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64kbit']);
  t.ok(existsSync(join(home, 'station', 'T1', 'pool.img')), 'the first export makes a pool image');
  t.notOk(existsSync(join(home, 'station', 'station.sqlite')), 'and no database');
  t.match(await qktJson(t, ['kmd', 'init', '--home', join(dir, 'f2'), '--station-store', 'files']), { stationStore: 'files' });
  const bad = join(dir, 'bad');
  failsWith(t, await runQkt(['kmd', 'init', '--home', bad, '--station-store', 'bogus']), 2, /^qkt: --station-store must be files, sqlite or postgres, got "bogus"/, '--station-store bogus');
  t.notOk(existsSync(bad), 'nothing made');
  failsWith(t, await runQkt(['kmd', 'init', '--home', bad, '--station-store', 'postgres']), 2, /^qkt: --station-store postgres needs --db postgres:\/\/user@host:port\/database/, 'postgres without --db');
  failsWith(t, await runQkt(['kmd', 'init', '--home', bad, '--db', 'mysql://x/y']), 2, /^qkt: --db must be a postgres:\/\/ address, not mysql:\/\//, 'a --db that is not postgres');
  failsWith(t, await runQkt(['kmd', 'init', '--home', bad, '--station-store', 'sqlite', '--db', 'postgres://x/y']), 2, /^qkt: --db is the database of a postgres station store, not of sqlite/, '--db with another store');
  const refused = await runQkt(['kmd', 'init', '--home', bad, '--db', 'postgres://qkt:SeCrEt@127.0.0.1:1/x']);
  t.notMatch(refused.stdout + refused.stderr, /SeCrEt/, 'the password appears nowhere');
  failsWith(t, refused, 3, /^qkt: nothing answered: the station database postgres:\/\/qkt:\*\*\*@127\.0\.0\.1:1\/x: connect ECONNREFUSED/, 'a server that does not answer: exit 3, the password not shown');
  t.notOk(existsSync(bad), 'nothing made by any of them');
  const human = await runQkt(['kmd', 'init', '--home', join(dir, 's2'), '--station-store', 'sqlite']);
  t.equal(human.code, 0);
  t.match(human.stdout, /, station store in one SQLite database\n?$/, 'the text output names the store');
});

t.test('a damaged station.sqlite: kmd status and station status --home exit 6 and name it', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '1Mbit', '--station-store', 'sqlite']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'T1.img')]);
  await qktJson(t, ['kmd', 'export', '--home', home, '--terminal', 'T1', '--bits', '64kbit']);
  const db = join(home, 'station', 'station.sqlite');
  const fd = openSync(db, 'r+');
  writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0); // over the header
  closeSync(fd);
  const named = new RegExp(`^qkt: ${db.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a readable station database \\(SQLITE_NOTADB`);
  failsWith(t, await runQkt(['kmd', 'status', '--home', home]), 6, named, 'kmd status');
  failsWith(t, await runQkt(['station', 'status', '--home', home]), 6, named, 'station status --home');
});
