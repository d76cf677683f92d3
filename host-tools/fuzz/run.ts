// A fuzz campaign: the same seed against each target in turn (in-process, TCP, pty), each a fresh
// enrolled module, with the totals the bench and the CI test report. Per target the seed is
// offset (seed + k) so the targets see different inputs; a failure names the seed it used.
import { socatAvailable } from '../transports/pty-pair.js';
import { describeFailure, fuzzTarget } from './driver.js';
import type { FuzzFailure, FuzzRunResult, TargetName } from './driver.js';
import { inProcessTarget, liveTarget } from './targets.js';

export interface FuzzPlanStep {
  target: TargetName;
  count: number;
}

export interface FuzzCampaignResult {
  seed: number;
  inputs: number;
  crashes: number;
  hangs: number;
  stateChanges: number;
  internalErrors: number;
  closedLinks: number;
  /** Late answers (after one timeout, within a second): not failures, reported. */
  stalls: number;
  runs: FuzzRunResult[];
  /** Targets not run, with the reason (no socat for the pty). */
  skipped: Array<{ target: TargetName; reason: string }>;
  failures: FuzzFailure[];
}

const OFFSET: Record<TargetName, number> = { 'in-process': 0, tcp: 1, pty: 2 };

export async function runFuzzCampaign(o: { seed: number; plan: FuzzPlanStep[]; log?: (line: string) => void; timeoutMs?: number }): Promise<FuzzCampaignResult> {
  const runs: FuzzRunResult[] = [];
  const skipped: FuzzCampaignResult['skipped'] = [];
  for (const step of o.plan) {
    if (step.target === 'pty' && !socatAvailable()) {
      skipped.push({ target: 'pty', reason: 'socat not installed (apt-get install -y socat)' });
      o.log?.('fuzz: pty target skipped: socat not installed (apt-get install -y socat)');
      continue;
    }
    const seed = (o.seed + OFFSET[step.target]) >>> 0;
    o.log?.(`fuzz: ${step.count} inputs against the ${step.target} module, seed ${seed}...`);
    const target = step.target === 'in-process' ? inProcessTarget() : await liveTarget(step.target);
    try {
      const r = await fuzzTarget(target, { seed, count: step.count, ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) });
      runs.push(r);
      o.log?.(`fuzz: ${step.target}: ${r.inputs} inputs in ${r.seconds} s (${r.inputsPerSecond}/s), ${r.failures.length} failures`);
      for (const f of r.failures) o.log?.(`fuzz: ${describeFailure(f)}`);
      for (const x of r.stalls) o.log?.(`fuzz: ${step.target}: late answer after inputs ${x.from}..${x.to} (${x.ms} ms): ${x.message}`);
    } finally {
      await target.close();
    }
  }
  const failures = runs.flatMap((r) => r.failures);
  const count = (k: FuzzFailure['kind']) => failures.filter((f) => f.kind === k).length;
  return {
    seed: o.seed,
    inputs: runs.reduce((n, r) => n + r.inputs, 0),
    crashes: count('crash'),
    hangs: count('hang'),
    stateChanges: count('state'),
    internalErrors: count('internal'),
    closedLinks: count('closed'),
    stalls: runs.reduce((n, r) => n + r.stalls.length, 0),
    runs,
    skipped,
    failures,
  };
}
