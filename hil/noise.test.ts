// Line noise in the HIL suite (`qkt hil run --noise R`; under `npm test` a small default rate):
// a 3 Mbit batch injected by `qkt inject` through a paced cable (the relay `qkt link` runs) into
// a `qkt terminal run` module must land in ONE run, exactly once, with R of the bytes corrupted
// (R/2 dropped, R/10 inserted) both ways; the same inject over a clean cable of the same baud gives
// the goodput to compare with. Goodput is reported (TAP diagnostic, JUnit property, the file
// `qkt hil run` reads), never asserted.
import t from 'tap';
import type { Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteNoise, backSeed } from '../host-tools/transports/cable.js';
import type { DirectionStats } from '../host-tools/transports/cable.js';
import { formatNoise, formatRate } from '../host-tools/cli/commands/hil.js';
import { formatBits } from '../host-tools/units.js';
import { ptySkipReason } from './e2e-rig.js';
import { injectOverCable, injectTimeoutMs, noiseFixture, noiseReport, noiseSettings } from './noise-rig.js';
import type { CableRun } from './noise-rig.js';


/** The counters a seeded ByteNoise gives over `bytes` bytes: they depend on the seed and the count only. */
function replay(rate: number, seed: number, bytes: number): Pick<DirectionStats, 'corrupted' | 'dropped' | 'inserted'> {
  const s: DirectionStats = { bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 };
  if (rate > 0) new ByteNoise(rate, seed, s).apply(new Uint8Array(bytes));
  return { corrupted: s.corrupted, dropped: s.dropped, inserted: s.inserted };
}

/** The inject ended 0 in one run and the pool grew by the batch, exactly once. */
function landedOnce(t: Test, name: string, r: CableRun, bits: number): void {
  t.equal(r.code, 0, `${name}: qkt inject exits 0 in one run${r.code === 0 ? '' : `: ${r.stderr.trim().split('\n').pop()}`}`);
  if (!r.inject) return;
  t.equal(r.inject.bits, bits, `${name}: the inject reports the batch's ${bits} bits`);
  t.equal(r.inject.resumedFromBits, 0, `${name}: from the start (a fresh module)`);
  t.equal(r.after.pool.storedKeyBits, r.before.pool.storedKeyBits + bits, `${name}: the pool holds exactly the batch's bits more`);
  t.equal(r.after.pool.batches.length, r.before.pool.batches.length + 1, `${name}: one batch more`);
  t.equal(r.before.pool.batches.filter((b) => b.batchId === r.inject!.batchId).length, 0, `${name}: the batch was not there before`);
  t.equal(r.after.pool.batches.filter((b) => b.batchId === r.inject!.batchId).length, 1, `${name}: the batch is there once`);
}

const settings = noiseSettings();
t.setTimeout(2 * injectTimeoutMs(settings.rate) + 60_000); // two injects at most, and the fixture

t.test(`${formatBits(settings.bits)} through a ${settings.baud}-baud cable with ${formatRate(settings.rate)} byte noise, and through a clean one`, { skip: ptySkipReason() }, async (t) => {
  const s = settings;
  t.comment(`noise ${formatRate(s.rate)} seed ${s.seed} at ${s.baud} baud (rerun: QKT_HIL_NOISE=${s.rate} QKT_HIL_NOISE_SEED=${s.seed})`);
  const dir = t.testdir({});
  const fx = await noiseFixture(dir, s.bits);
  const clean = await injectOverCable(t, fx, join(dir, 'clean'), { baud: s.baud, rate: 0, seed: s.seed });
  const noisy = await injectOverCable(t, fx, join(dir, 'noisy'), { baud: s.baud, rate: s.rate, seed: s.seed });
  const report = noiseReport(s, clean, noisy);
  if (s.reportFile) writeFileSync(s.reportFile, JSON.stringify(report));
  t.comment(formatNoise(report).trim());
  // Carried as a diagnostic: tap's JUnit reporter makes it a <property name="noise"> of this case.
  t.pass('noise report', { diagnostic: true, noise: report });

  landedOnce(t, 'clean', clean, s.bits);
  landedOnce(t, 'noisy', noisy, s.bits);

  // The noise was applied as asked: the relay's counters are those the seed gives over the bytes
  // it carried (one stream per direction, the module's way from backSeed(seed): cable.ts).
  for (const [name, r] of [['clean', clean], ['noisy', noisy]] as const) {
    const rate = name === 'clean' ? 0 : s.rate;
    const { aToB, bToA } = r.relay;
    t.same(pick(aToB), replay(rate, s.seed >>> 0, aToB.bytesIn), `${name}: host to module, the faults of seed ${s.seed} at ${formatRate(rate)}`);
    t.same(pick(bToA), replay(rate, backSeed(s.seed), bToA.bytesIn), `${name}: module to host, likewise`);
    for (const d of [aToB, bToA]) t.equal(d.bytesOut, d.bytesIn - d.dropped + d.inserted, `${name}: bytes out = in - dropped + inserted`);
  }
  const { toDevice, toHost } = report.relay;
  const faults = toDevice.corrupted + toDevice.dropped + toDevice.inserted + toHost.corrupted + toHost.dropped + toHost.inserted;
  const expected = (toDevice.bytesIn + toHost.bytesIn) * s.rate * 1.6;
  // Not vacuous: with a few faults expected, some happened (the default seed gives some).
  if (expected >= 3) t.ok(faults > 0, `the noisy run met ${faults} faults (about ${expected.toFixed(1)} expected)`);
});

const pick = (d: DirectionStats) => ({ corrupted: d.corrupted, dropped: d.dropped, inserted: d.inserted });
