// `kmd status` (status.ts, batch-state.ts): every batch state from what the KMD and the station
// know, per-state totals, supply and station room; a status changes nothing; a damaged home is
// reported file by file, never quoting a file's bytes.
import t from 'tap';
import { readFileSync, readdirSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatch, markOnCarrier } from './export.js';
import { voidBatches } from './void.js';
import { kmdStatus } from './status.js';
import { StationStore } from '../station/store.js';

t.test('every state, its totals, supply and station room', (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 22, now: () => Date.parse('2026-01-01T00:00:00Z') });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  enrollTerminal(home, 'T2', join(dir, 'T2.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const bits = 8192;
  const e = [1, 2, 3, 4, 5, 6, 7].map(() => exportBatch(home, 'T1', bits, { station: store }));
  // seq 1: lost on its carrier (stale: seq 3 was used); 2: collected; 3: used at the station first
  // (delivered); 4: on a carrier; 5: burned; 6: void; 7: in the outbox.
  for (const i of [0, 1, 2, 3]) markOnCarrier(home, 'T1', e[i]!.record.batchId, `car${i}`);
  const r = home.terminal('T1');
  r.batches[1]!.deliveredAt = home.nowIso();
  home.saveTerminal(r);
  store.activate('T1', e[1]!.record.batchId, 'receipt');
  store.activate('T1', e[2]!.record.batchId, 'first-use');
  unlinkSync(e[4]!.file);
  voidBatches(home, 'T1', { batch: e[5]!.record.batchId, reason: 'lost-carrier', station: store });

  const files = () => readdirSync(home.path('terminals')).map((f) => readFileSync(home.path('terminals', f), 'utf8')).join() + readFileSync(home.path('supply.json'), 'utf8');
  const before = files();
  const s = kmdStatus(home, { station: store });
  t.equal(files(), before, 'a status writes nothing to the ledger');
  t.same(
    s.batches.map((b) => [b.terminalId, b.seq, b.state]),
    [
      ['T1', 1, 'stale'],
      ['T1', 2, 'collected'],
      ['T1', 3, 'delivered'],
      ['T1', 4, 'on-carrier'],
      ['T1', 5, 'burned'],
      ['T1', 6, 'void'],
      ['T1', 7, 'exported'],
    ],
  );
  t.match(s.batches[5], { voidReason: 'lost-carrier', voidedAt: '2026-01-01T00:00:00.000Z' });
  t.match(s.batches[0], { carrierId: 'car0' });
  t.same(s.totals, {
    exported: { batches: 1, bits },
    'on-carrier': { batches: 1, bits },
    delivered: { batches: 1, bits },
    collected: { batches: 1, bits },
    void: { batches: 1, bits },
    stale: { batches: 1, bits },
    burned: { batches: 1, bits },
  });
  t.match(s, { consistent: true, writer: null, supply: { rateBitsPerSecond: 11_000, takenBits: 7 * bits, capacityBits: 2 ** 30 } });
  t.same(s.terminals, [
    { terminalId: 'T1', enrolledAt: '2026-01-01T00:00:00.000Z', generation: 1, nextSeq: 8, station: { storedKeyBits: 6 * bits, maxKeyBits: 1 << 23, freeKeyBits: (1 << 23) - 6 * bits, batches: 6 } },
    { terminalId: 'T2', enrolledAt: '2026-01-01T00:00:00.000Z', generation: 1, nextSeq: 1, station: { storedKeyBits: 0, maxKeyBits: 1 << 23, freeKeyBits: 1 << 23, batches: 0 } },
  ]);
  t.end();
});

t.test('a damaged home: each damaged terminal listed with its file and why, never its bytes; the rest read', (t) => {
  const dir = t.testdir({ secret: 'root:x:0:0:root:/root:/bin/bash\n' });
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 22 });
  for (const id of ['T1', 'T2', 'T3', 'T4', 'T5']) enrollTerminal(home, id, join(dir, `${id}.img`));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  for (const id of ['T1', 'T5']) exportBatch(home, id, 8192, { station: store });
  const file = (id: string) => home.path('terminals', `${id}.json`);
  writeFileSync(file('T2'), '{"terminalId": "T2", "deviceKey": "0123'); // cut short
  writeFileSync(file('T3'), '{}');
  unlinkSync(file('T4'));
  symlinkSync(join(dir, 'secret'), file('T4'));
  writeFileSync(home.path('station', 'T1', 'state.json'), 'root:x:0:0 garbage');
  symlinkSync(join(dir, 'secret'), home.path('terminals', 'not an id.json'));

  const s = kmdStatus(home, { station: store });
  t.same(
    s.damaged.map((d) => [d.terminalId, d.file, d.reason]),
    [
      ['T1', home.path('station', 'T1', 'state.json'), 'not valid JSON (18 bytes)'],
      ['T2', file('T2'), 'not valid JSON (39 bytes)'],
      ['T3', file('T3'), 'not a terminal record (terminalId does not match its file name)'],
      ['T4', file('T4'), 'a symbolic link, not a regular file'],
      [null, file('not an id'), 'its name is not a terminal id'],
    ],
  );
  t.notMatch(JSON.stringify(s), /root:x|0123/, "no file's contents in the report");
  t.same(s.terminals.map((x) => x.terminalId), ['T5'], 'the readable terminal is reported');
  t.same(s.batches.map((b) => [b.terminalId, b.state]), [['T5', 'exported']]);
  t.equal(s.totals.exported.batches, 1, 'totals of what could be read');

  // The terminal's own commands refuse with the file named, its bytes not quoted.
  t.throws(() => home.terminal('T4'), { code: 'CORRUPT', message: `${file('T4')}: a symbolic link, not a regular file` });
  t.throws(() => home.terminal('T3'), { code: 'CORRUPT', message: /T3\.json: not a terminal record/ });
  // The supply and the configuration are the whole KMD's: those fail the status, naming the file.
  writeFileSync(home.path('supply.json'), 'root:x:0:0');
  t.throws(() => kmdStatus(home, { station: store }), { code: 'CORRUPT', message: `${home.path('supply.json')}: not valid JSON (10 bytes); the KMD cannot account its key without it` });
  writeFileSync(home.path('kmd.json'), '{"format": "root:x:0:0"}');
  t.throws(() => KmdHome.open(home.dir), { code: 'CORRUPT', message: `${home.path('kmd.json')} is not a qkt KMD configuration` });
  t.end();
});
