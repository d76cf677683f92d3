// bench fuzz: a small campaign over all three targets counts its inputs, finds nothing, and its
// table names every target with its rate. Rates are not asserted.
import t from 'tap';
import { benchFuzz, formatFuzzBench, fuzzPlan } from './fuzz.js';

t.test('the plan splits the inputs 80/10/10', async (t) => {
  t.same(fuzzPlan(1_000_000).map((s) => [s.target, s.count]), [
    ['in-process', 800_000],
    ['tcp', 100_000],
    ['pty', 100_000],
  ]);
});

t.test('bench fuzz runs every target and reports zero failures', async (t) => {
  const r = await benchFuzz({ inputs: 3000, seed: 77 });
  t.equal(r.seed, 77);
  t.equal(r.inputs + r.skipped.length * 300, 3000, 'every planned input sent (or its target skipped, said so)');
  t.same([r.crashes, r.hangs, r.stateChanges, r.internalErrors, r.closedLinks], [0, 0, 0, 0, 0]);
  for (const x of r.runs) t.ok(x.poolUnchanged && x.flashUnchanged && x.inputsPerSecond > 0, x.target);
  t.match(formatFuzzBench(r), /\| in-process \(seed 77\) \| 2400 \| [\d.]+ \| \d+ \|/);
  t.match(formatFuzzBench(r), /\| tcp \(seed 78\) \| 300 \|/);
});
