// bench noise, as a harness: at a tiny batch and rates the link survives today (clean, 0.001%),
// each rate gives one `qkt inject` that ends ok with the pool holding the batch exactly once
// (read back from the module's flash), ratios against the clean run, relay counters, a ZMODEM run
// of the same bytes beside it, and a markdown row per rate. Times are reported, not asserted.
// Spawns the built CLI (bin/qkt.js -> dist/): build first (npx tsc -p tsconfig.build.json).
import t from 'tap';
import { socatSkipReason } from '../transports/pty-pair.js';
import { benchNoise, formatNoiseBench, pct } from './noise.js';
import { lrzszAvailable, LRZSZ_MISSING } from './wall-clock.js';

t.setTimeout(180_000);

/** In CI lrzsz is installed (.ci/run): missing there is a failure, not a skip. */
const zmodem = process.env['CI'] === 'true' || lrzszAvailable();

t.test('bench noise: a row per rate, the batch exactly once in the pool, ZMODEM beside it', { skip: socatSkipReason() }, async (t) => {
  if (!zmodem) t.comment(`${LRZSZ_MISSING}; the ZMODEM part is skipped`);
  const bits = 2 ** 15;
  const r = await benchNoise({ bits, rates: [0.00001], seed: 7, timeoutSeconds: 60, zmodem });
  t.equal(r.bench, 'noise');
  t.same([r.keyBits, r.baud, r.seed], [bits, 115_200, 7]);
  t.ok(r.sealedBytes > bits / 8, 'the sealed batch is the key bits plus its header and tags');
  t.match(r.batchId, /^[0-9a-f]{32}$/);
  t.same(r.cases.map((c) => c.rate), [0, 0.00001], 'the clean run comes first, then the rates asked for');

  for (const c of r.cases) {
    const q = c.qkt;
    t.equal(q.outcome, 'ok', `${pct(c.rate)}: qkt inject ok (${q.error ?? 'no error'})`);
    t.equal(q.exitCode, 0);
    t.same(q.pool, { storedBitsBefore: 0, storedBitsAfter: bits, copies: 1, exactlyOnce: true, stagedDurableBits: 0 }, `${pct(c.rate)}: the pool holds the batch exactly once`);
    t.ok(q.wallSeconds > 0 && q.goodputBitsPerSecond === Math.round(bits / q.wallSeconds), 'goodput is key bits over the wall time');
    t.ok(q.transferSeconds !== null && q.transferSeconds <= q.wallSeconds, 'the transfer is within the wall time');
    t.equal(q.resumes, 0);
    // The relay carried the batch toward the module: at least its sealed bytes (frames add more).
    t.ok(q.relay.aToB.bytesIn >= r.sealedBytes, `relay host->module ${q.relay.aToB.bytesIn} bytes`);
    t.ok(q.relay.bToA.bytesIn > 0, 'and answers back');
    if (c.rate === 0) t.same([q.relay.aToB.corrupted, q.relay.aToB.dropped, q.relay.aToB.inserted, q.relay.bToA.corrupted], [0, 0, 0, 0], 'a clean cable adds no faults');
    t.ok(c.timeoutSeconds.qkt === 60, 'the bound asked for');

    const z = c.zmodem;
    if (!zmodem) {
      t.same(z, { outcome: 'skipped', reason: LRZSZ_MISSING });
      continue;
    }
    if (z.outcome === 'skipped') throw new Error('ZMODEM skipped although lrzsz is here');
    t.equal(z.outcome, 'ok', `${pct(c.rate)}: ZMODEM ok (${z.error ?? 'no error'})`);
    t.equal(z.szCode, 0);
    // rz exits 0 by itself, or waited for sz's lost "OO" and was stopped with its file whole.
    t.ok(z.rzStopped ? z.rzCode !== 0 : z.rzCode === 0, `rz exit ${z.rzCode}${z.rzStopped ? ', stopped by the bench' : ''}`);
    t.ok(z.seconds > 0 && z.seconds <= z.bothExitedSeconds, 'sz exits no later than both');
    t.ok(z.relay.aToB.bytesIn >= r.sealedBytes, 'ZMODEM moved the sealed bytes over its own cable');
    t.equal(c.qktOverZmodem, Math.round((q.goodputBitsPerSecond! / z.goodputBitsPerSecond!) * 1e4) / 1e4);
  }
  t.equal(r.cases[0]!.qkt.ratioToClean, 1);
  if (zmodem && r.cases[0]!.zmodem.outcome === 'ok') t.equal(r.cases[0]!.zmodem.ratioToClean, 1);

  const md = formatNoiseBench(r);
  t.match(md, /^\| 0 \(clean\) \| [\d.]+ \| [\d.]+ \| 1 \| yes \| 0 resumes \| 0 \/ 0 \/ 0 \|/m, 'the clean row');
  t.match(md, /^\| 0\.001% \| [\d.]+ \| [\d.]+ \| [\d.]+ \| yes \| 0 resumes \| \d+ \/ \d+ \/ \d+ \|/m, 'the 0.001% row');
  t.match(md, new RegExp(`${bits} key bits \\(${r.sealedBytes} sealed bytes`), 'the batch is stated');
  t.match(md, /paced at 115200 baud/);
  t.match(md, /noise seed 7/);
  t.match(md, /Machine: .+, \d+ cores/);
  if (!zmodem) t.match(md, /ZMODEM: lrzsz \(sz\/rz\) is not installed/);
});

t.test('bench noise: a run that does not finish in its bound is stopped and reported, with what the module holds', { skip: socatSkipReason() }, async (t) => {
  const bits = 2 ** 19; // 5.8 s of line time, bounded at 3 s
  const r = await benchNoise({ bits, rates: [], seed: 7, timeoutSeconds: 3, zmodem });
  t.same(r.cases.map((c) => c.rate), [0], 'no rates asked: the clean run alone');
  const c = r.cases[0]!;
  t.equal(c.qkt.outcome, 'timed out');
  t.match(c.qkt.error, /^stopped by the bench after 3 s/);
  t.same([c.qkt.goodputBitsPerSecond, c.qkt.ratioToClean, c.qkt.pool.exactlyOnce, c.qkt.pool.copies, c.qkt.pool.storedBitsAfter], [null, null, false, 0, 0], 'no goodput, nothing committed');
  t.ok(c.qkt.pool.stagedDurableBits >= 0 && c.qkt.pool.stagedDurableBits < bits, `${c.qkt.pool.stagedDurableBits} bits staged durably`);
  t.ok(c.qkt.wallSeconds >= 3, 'it ran to its bound');
  if (zmodem) {
    t.equal(c.zmodem.outcome, 'timed out');
    t.equal(c.qktOverZmodem, null);
  }
  const md = formatNoiseBench(r);
  t.match(md, /^\| 0 \(clean\) \| timed out after [\d.]+ \| - \| - \| no: 0 copies, \+0 bits/m, 'the row says so');
  t.match(md, /^- 0 \(clean\), qkt inject: stopped by the bench after 3 s/m, 'and how it ended');
});

t.test('bench noise refuses a rate outside 0..1 before it makes anything', async (t) => {
  await t.rejects(benchNoise({ bits: 2 ** 15, rates: [1.5] }), RangeError);
});
