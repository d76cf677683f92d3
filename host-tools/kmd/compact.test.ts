// Terminal records stay bounded (compact.ts): after 200 export/void cycles a record holds the newest
// 64 final batches in full and counters for the rest, `kmd status` totals and the supply still add
// up, and a folded delivered batch still makes older ones stale.
import t from 'tap';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatch, markOnCarrier } from './export.js';
import { voidBatches } from './void.js';
import { kmdStatus } from './status.js';
import { compactTerminal, FINAL_KEPT } from './compact.js';
import { StationStore } from '../station/store.js';

t.test('200 export/void cycles: the record stops growing, the totals count every batch', (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 24 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const bits = 8192;
  const size = () => statSync(home.path('terminals', 'T1.json')).size;
  const cycle = () => {
    exportBatch(home, 'T1', bits, { station: store });
    voidBatches(home, 'T1', { station: store, reason: 'test' });
  };
  for (let i = 0; i < 100; i++) cycle();
  const at100 = size();
  for (let i = 0; i < 100; i++) cycle();
  // 100 more records in full would be ~28 kB; only the numbers' digits (seq, supply offset) grow.
  t.ok(size() - at100 < 1000, `the record does not grow by batch: ${at100} bytes after 100 cycles, ${size()} after 200`);
  const rec = home.terminal('T1');
  t.equal(rec.batches.length, FINAL_KEPT, `the newest ${FINAL_KEPT} final batches kept in full`);
  t.same(rec.batches.map((b) => b.seq), Array.from({ length: FINAL_KEPT }, (_, i) => 200 - FINAL_KEPT + 1 + i), 'the newest ones');
  t.match(rec.pruned, { void: { batches: 200 - FINAL_KEPT, bits: (200 - FINAL_KEPT) * bits }, collected: { batches: 0, bits: 0 }, maxSeq: 200 - FINAL_KEPT });
  t.equal(rec.nextSeq, 201, 'seq goes on');
  const s = kmdStatus(home, { station: store });
  t.same(s.totals.void, { batches: 200, bits: 200 * bits }, 'status totals count the folded batches');
  t.equal(s.batches.length, FINAL_KEPT, 'batches lists the records kept');
  const all = Object.values(s.totals).reduce((n, x) => n + x.bits, 0);
  t.equal(s.supply.takenBits, all, 'takenBits == the bits of every batch exported');
  t.end();
});

t.test('a folded delivered batch keeps older ones stale; batches not final are never folded', (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 22 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const [a, b, c] = [1, 2, 3].map(() => exportBatch(home, 'T1', 8192, { station: store }));
  markOnCarrier(home, 'T1', a!.record.batchId, 'car1');
  markOnCarrier(home, 'T1', b!.record.batchId, 'car1');
  const r = home.terminal('T1');
  r.batches[1]!.deliveredAt = home.nowIso(); // b collected ...
  home.saveTerminal(r);
  store.activate('T1', b!.record.batchId, 'receipt');
  t.equal(compactTerminal(home, store, 'T1', 0), 0, 'collected but still at the station: not final');
  store.voidBatch('T1', b!.record.batchId); // ... and retired there (as its last key does)
  t.equal(compactTerminal(home, store, 'T1', 0), 1, 'collected and retired: folded');
  t.same(home.terminal('T1').batches.map((x) => x.seq), [1, 3], 'the stale and the exported one stay');
  const s = kmdStatus(home, { station: store });
  t.same(s.batches.map((x) => [x.seq, x.state]), [[1, 'stale'], [3, 'exported']], 'seq 1 is still stale: the terminal accepted seq 2');
  t.same(s.totals.collected, { batches: 1, bits: 8192 });
  t.equal(c!.record.seq, 3);
  t.end();
});
