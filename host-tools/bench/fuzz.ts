// `qkt bench fuzz`: a long fuzz campaign against the terminal module (issue 11, item 5): 1,000,000
// structure-aware inputs by default (800,000 into a module in this process, 100,000 each into
// `qkt terminal run` on TCP and on a socat pty pair), with inputs per second per target and the
// count of crashes, hangs, INTERNAL replies and state changes, which must all be 0.
import { randomInt } from 'node:crypto';
import { runFuzzCampaign } from '../fuzz/run.js';
import type { FuzzCampaignResult, FuzzPlanStep } from '../fuzz/run.js';
import { describeFailure } from '../fuzz/driver.js';

export interface FuzzBenchResult extends Omit<FuzzCampaignResult, 'runs'> {
  node: string;
  runs: Array<{ target: string; seed: number; inputs: number; seconds: number; inputsPerSecond: number; bytes: number; probes: number; failures: number; stalls: number; poolUnchanged: boolean; flashUnchanged: boolean }>;
}

export function fuzzPlan(total: number): FuzzPlanStep[] {
  const live = Math.floor(total / 10);
  return [
    { target: 'in-process', count: total - 2 * live },
    { target: 'tcp', count: live },
    { target: 'pty', count: live },
  ];
}

export async function benchFuzz(o: { inputs: number; seed?: number; log?: (line: string) => void }): Promise<FuzzBenchResult> {
  const seed = o.seed ?? randomInt(2 ** 31);
  const c = await runFuzzCampaign({ seed, plan: fuzzPlan(o.inputs), ...(o.log ? { log: o.log } : {}) });
  return {
    ...c,
    node: process.version,
    runs: c.runs.map((r) => ({
      target: r.target,
      seed: r.seed,
      inputs: r.inputs,
      seconds: r.seconds,
      inputsPerSecond: r.inputsPerSecond,
      bytes: r.bytes,
      probes: r.probes,
      failures: r.failures.length,
      stalls: r.stalls.length,
      poolUnchanged: JSON.stringify(r.pool.after) === JSON.stringify(r.pool.before),
      flashUnchanged: r.flash.after === r.flash.before,
    })),
  };
}

export function formatFuzzBench(r: FuzzBenchResult): string {
  return [
    `### Module fuzzing: ${r.inputs.toLocaleString('en')} inputs, seed ${r.seed}, node ${r.node}`,
    '',
    '| target | inputs | seconds | inputs/s | bytes sent | STATUS probes | failures | late answers | pool unchanged | flash unchanged |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---|',
    ...r.runs.map((x) => `| ${x.target} (seed ${x.seed}) | ${x.inputs} | ${x.seconds} | ${x.inputsPerSecond} | ${x.bytes} | ${x.probes} | ${x.failures} | ${x.stalls} | ${x.poolUnchanged ? 'yes' : '**no**'} | ${x.flashUnchanged ? 'yes' : '**no**'} |`),
    ...r.skipped.map((s) => `| ${s.target} | skipped: ${s.reason} | | | | | | | | |`),
    '',
    `Crashes ${r.crashes}, hangs ${r.hangs}, state changes ${r.stateChanges}, INTERNAL replies ${r.internalErrors}, links closed by the module ${r.closedLinks}; late answers (after the 5 s timeout, within a second one; not failures) ${r.stalls}.`,
    ...r.failures.map((f) => `- ${describeFailure(f)}`),
  ].join('\n');
}
