// `qkt bench multiclient` on one small round: every inject completes without a restart (the bench
// itself checks the pool holds the batch), the other connections' requests complete beside it,
// and the ratios are computed from the runs. No time is asserted (docs/bench/README.md).
import t from 'tap';
import { benchMulticlient, formatMulticlientBench } from './multiclient.js';

t.test('one round at 256 kbit: alone, status+audit, flood', async (t) => {
  const r = await benchMulticlient({ bits: 256 * 1024, repeats: 1 });
  t.match(r, { bench: 'multiclient', baud: 921_600, keyBits: 256 * 1024 });
  t.same(r.runs.map((x) => x.load), ['alone', 'status+audit', 'flood']);
  t.same(r.runs.map((x) => x.restarts), [0, 0, 0], 'no inject restarted: no window dropped, no reset');
  const [alone, loaded, flood] = r.runs;
  t.equal(alone!.statusRequests + alone!.auditRequests, 0, 'alone: nothing else on the module');
  t.ok(loaded!.statusRequests >= 1 && loaded!.auditRequests >= 1, `status+audit: ${loaded!.statusRequests} STATUS and ${loaded!.auditRequests} AUDIT_LOG beside the inject`);
  t.ok(flood!.statusRequests > loaded!.statusRequests, 'the flood sends more than the loop');
  t.equal(r.pairRatios['status+audit'][0], Math.round((loaded!.goodputBytesPerSecond / alone!.goodputBytesPerSecond) * 1e4) / 1e4);
  t.equal(r.goodputRatio, r.pairRatios['status+audit'][0]);
  t.match(formatMulticlientBench(r), /\| flood \|/);
});
