// Exports as transactions (issue 9 item 1): a refusal spends nothing; a crash before the ledger
// is written hands nothing out (the next export drops the reservation left at the station and
// uses the same seq); a failure after it burns the batch, and its seq is never handed out again;
// the supply's takenBits counts key handed out, never bits the link dropped; a full station's
// refusal names what frees room (nothing but time or --in-use when the terminal uses it all).
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { KmdError, KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatch, exportBatches, markOnCarrier, NoRoomError } from './export.js';
import { noRoomReason } from './download.js';
import { StationStore } from '../station/store.js';
import { voidBatches } from './void.js';
import { kmdStatus } from './status.js';
import { InputError } from '../input-error.js';

function setup(t: Test, stockBits = 1 << 22) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  enrollTerminal(home, 'T2', join(dir, 'T2.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const taken = () => (JSON.parse(readFileSync(home.path('supply.json'), 'utf8')) as { takenBits: number }).takenBits;
  return { dir, home, store, taken };
}

t.test('refusals spend nothing: supply, station room, enrolment, a terminal named twice', (t) => {
  const { home, store, taken } = setup(t, 1 << 20);
  t.throws(() => exportBatches(home, ['T1', 'T2'], 1 << 20, { station: store }), { name: 'KmdError', code: 'SUPPLY', message: /not enough key yet for 2 terminals: \d+ bits available, 2097152 needed/ });
  t.throws(() => exportBatches(home, ['T1', 'T9'], 4096, { station: store }), { code: 'NOT_ENROLLED' });
  t.throws(() => exportBatches(home, ['T1', 'T1'], 4096, { station: store }), InputError);
  t.equal(taken(), 0);
  t.same([home.terminal('T1').nextSeq, home.terminal('T2').nextSeq], [1, 1]);
  t.same(readdirSync(home.path('outbox')), []);
  t.end();
});

t.test('a crash after the station reservation, before the ledger: the next export drops it and uses the same seq', (t) => {
  const { home, store, taken } = setup(t);
  // What an export killed right after reserving leaves behind: a staged, named, empty batch.
  store.reserve('T1', { batchId: new Uint8Array(randomBytes(16)), seq: 1, purpose: 'any', bits: 8192 });
  t.ok(store.status('T1').staging, 'staged at the station');
  t.equal(taken(), 0, 'nothing spent yet');
  const e = exportBatch(home, 'T1', 4096, { station: store });
  t.equal(e.record.seq, 1, 'seq 1 was never handed out: it is used now');
  const st = store.status('T1');
  t.equal(st.staging, null, 'the left-over reservation is gone');
  t.same(st.inactive, [e.record.batchId], 'the station names only the real batch');
  t.equal(taken(), 4096);
  t.end();
});

t.test('a failure after the ledger burns the batch: supply and seq stay spent, never handed out twice', (t) => {
  const { home, store, taken } = setup(t);
  class FailingStore extends StationStore {
    failures = 1;
    override fill(terminalId: string, batchId: Uint8Array, keys: Uint8Array): void {
      if (this.failures-- > 0) throw new Error('disk full (injected)');
      super.fill(terminalId, batchId, keys);
    }
  }
  const failing = new FailingStore(home.path('station'));
  t.teardown(() => failing.close());
  t.throws(() => exportBatches(home, ['T1', 'T2'], 4096, { station: failing }), /disk full/);
  const t1 = home.terminal('T1');
  t.equal(t1.nextSeq, 2, 'T1: seq 1 is spent (burned)');
  t.equal(t1.batches.length, 1);
  t.equal(home.terminal('T2').nextSeq, 1, 'T2, not reached, spent nothing');
  t.equal(taken(), 4096, "T1's supply is spent");
  t.same(readdirSync(home.path('outbox')), [], 'nothing in the outbox');
  t.equal(store.status('T1').staging, null, 'the reservation was dropped');
  t.equal(existsSync(home.path('station', 'T2', 'state.json')) ? Object.keys(store.state('T2').batches).length : 0, 0, "T2's reservation was dropped");
  const again = exportBatches(home, ['T1', 'T2'], 4096, { station: failing });
  t.same(again.map((e) => e.record.seq), [2, 1], 'T1 goes on at seq 2; T2 gets its first');
  t.same(home.terminal('T1').batches.map((b) => b.seq), [1, 2], 'one record per seq');
  t.equal(taken(), 3 * 4096);
  t.end();
});

t.test('a station that refuses: NO_ROOM, nothing spent, for every terminal of the export', (t) => {
  const { home, store, taken } = setup(t, 1 << 24);
  exportBatch(home, 'T2', 1 << 23, { station: store }); // T2's station pool is full now
  const before = { taken: taken(), t1: home.terminal('T1').nextSeq, t2: home.terminal('T2').nextSeq };
  const e = t.throws(() => exportBatches(home, ['T1', 'T2'], 1 << 20, { station: store })) as KmdError;
  t.match(e, { code: 'NO_ROOM', message: /^the station's key pool for T2 has no room for a 1 Mbit batch \(NO_SPACE: .*\); nothing was spent; to free room: qkt kmd void --home \S+ --terminal T2 \(batches never to be used\), or qkt kmd collect \(receipts retire used-up ones\)$/ });
  t.same({ taken: taken(), t1: home.terminal('T1').nextSeq, t2: home.terminal('T2').nextSeq }, before);
  t.equal(store.status('T1').staging, null, "T1's reservation was cancelled");
  t.same(store.status('T1').batches, [], 'and T1 holds nothing at the station');
  t.end();
});

t.test('temp files a killed export left in the outbox are swept by the next export (it holds the lock)', (t) => {
  const { home, store } = setup(t);
  const left = join(home.path('outbox'), '.T1-00112233445566778899aabbccddeeff.qkb.tmp-2275');
  writeFileSync(left, new Uint8Array(100));
  const [e] = exportBatches(home, ['T1'], 4096, { station: store });
  t.notOk(existsSync(left), 'the temp file is gone');
  t.same(readdirSync(home.path('outbox')), [`T1-${e!.record.batchId}.qkb`], 'only the batch is in the outbox');
  t.end();
});

t.test('takenBits is key handed out: after export/void cycles at a high rate it is the sum of every batch exported', (t) => {
  const dir = t.testdir({});
  let clock = Date.parse('2026-01-01T00:00:00Z');
  // 1 Gbit/s against the 2^30-bit buffer: between two exports the link overfills it and drops bits.
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 1e9, now: () => clock });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const bits = 1 << 20;
  for (let i = 0; i < 20; i++) {
    clock += 5_000; // 5e9 bits produced, most beyond the buffer
    exportBatch(home, 'T1', bits, { station: store });
    voidBatches(home, 'T1', { station: store, reason: 'test' });
  }
  const s = kmdStatus(home, { station: store });
  t.equal(s.totals.void.batches, 20);
  t.equal(s.supply.takenBits, s.batches.reduce((n, b) => n + b.bits, 0), 'takenBits == the bits of every exported batch (void ones included)');
  t.equal(s.supply.takenBits, 20 * bits);
  // And the ranges never overlap: dropped bits are skipped, not handed out.
  const offsets = home.terminal('T1').batches.map((b) => b.supplyOffset);
  for (let i = 1; i < offsets.length; i++) t.ok(offsets[i]! >= offsets[i - 1]! + bits, `batch ${i + 1} starts after batch ${i} ends`);
  t.end();
});

t.test('a supply account from before offsetBits: its takenBits is the stream position, and it goes on from there', (t) => {
  const { home, store } = setup(t);
  const file = home.path('supply.json');
  const old = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete old['offsetBits'];
  old['takenBits'] = 8192;
  writeFileSync(file, JSON.stringify(old));
  const e = exportBatch(home, 'T1', 8192, { station: store });
  t.equal(e.record.supplyOffset, 8192, 'the next take starts at the old takenBits');
  t.match(JSON.parse(readFileSync(file, 'utf8')), { takenBits: 16384, offsetBits: 16384 });
  t.end();
});

t.test('no room, and all of it held by keys the terminal uses: the refusal says only time or --in-use frees it', (t) => {
  const { home, store } = setup(t, 1 << 24);
  const full = exportBatch(home, 'T2', 1 << 23, { station: store });
  const refuse = () => t.throws(() => exportBatch(home, 'T2', 1 << 20, { station: store })) as NoRoomError;
  // Still exported (not delivered): a plain void frees it.
  let e = refuse();
  t.equal(e.inUseOnly, false);
  t.match(noRoomReason(e), /kmd void or kmd collect/);
  // Collected: the terminal holds and uses it.
  markOnCarrier(home, 'T2', full.record.batchId, 'car1');
  const r = home.terminal('T2');
  r.batches[0]!.deliveredAt = home.nowIso();
  home.saveTerminal(r);
  store.activate('T2', full.record.batchId, 'receipt');
  e = refuse();
  t.match(e, {
    code: 'NO_ROOM',
    inUseOnly: true,
    message: /; nothing was spent; its room holds only batches T2 holds and uses \(collected or delivered\): it frees as the terminal uses them up, or, if it lost them \(zeroized, replaced\): qkt kmd void --home \S+ --terminal T2 --in-use$/,
  });
  t.notMatch(e.message, /kmd collect/, 'no collect suggested: it frees nothing here');
  const wire = noRoomReason(e);
  t.equal(wire, 'station room full of keys the terminal holds: frees as it uses them; none spent');
  t.ok(wire.length <= 80, 'fits a wire reason');
  t.end();
});

t.test('a supply buffer above 2^31 bits (a fleet of 20,000 terminals at 128 kbit needs 2.6 Gbit) holds and hands out all of it', async (t) => {
  const dir = t.testdir({});
  const stock = 20_000 * 131_072;
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: stock, capacityBits: stock });
  const supply = JSON.parse(readFileSync(join(dir, 'kmd', 'supply.json'), 'utf8')) as { capacityBits: number };
  t.ok(supply.capacityBits >= stock, `the buffer holds ${supply.capacityBits} bits`);
  t.ok(home.supply().availableBits() >= stock, 'and all of it is there to take');
});
