// Fuzzing the terminal module in CI (issue 11, item 5): 119,000 structure-aware inputs per run,
// 90,000 fed to a module in this process, 10,000 each to `qkt terminal run` spawned on TCP and on a
// socat pty pair, 3,000 with ADMIN tokens, 6,000 of a fixed case. Zero crashes, zero hangs (a STATUS answers every 256 inputs), zero INTERNAL
// replies, and the pool status and the whole flash image unchanged at the end. The seed is new
// each run (QKT_FUZZ_SEED=N repeats one) and printed; a failure prints its seed, input window and bytes.
import t from 'tap';
import type { Test } from 'tap';
import { randomInt } from 'node:crypto';
import { assertFreshBuild } from './build-check.js';
import { socatSkipReason } from './pty.js';
import { runFuzzCampaign } from '../host-tools/fuzz/run.js';
import { describeFailure, fuzzTarget } from '../host-tools/fuzz/driver.js';
import type { FuzzFailure } from '../host-tools/fuzz/driver.js';
import { inProcessTarget, liveTarget } from '../host-tools/fuzz/targets.js';

const SEED = process.env['QKT_FUZZ_SEED'] !== undefined ? Number(process.env['QKT_FUZZ_SEED']) : randomInt(2 ** 31);
/** Per CI run: in-process, then each live transport. */
const IN_PROCESS = 90_000;
const LIVE = 10_000;

const report = (t: Test, failures: FuzzFailure[], stalls: Array<{ from: number; to: number; ms: number; message: string }> = []) => {
  for (const x of stalls) t.comment(`late answer (not a failure) after inputs ${x.from}..${x.to}: ${x.ms} ms: ${x.message}`);
  for (const f of failures) {
    t.comment(describeFailure(f));
    for (const x of f.inputs) t.comment(`  input ${x.index} (${x.layer}, from ${x.seed}): ${x.hex}`);
  }
};

t.comment(`fuzz seed ${SEED} (repeat with QKT_FUZZ_SEED=${SEED})`);

t.test(`${IN_PROCESS} inputs into a module in this process`, async (t) => {
  const r = await runFuzzCampaign({ seed: SEED, plan: [{ target: 'in-process', count: IN_PROCESS }] });
  report(t, r.failures, r.runs.flatMap((x) => x.stalls));
  t.comment(`in-process: ${r.runs[0]?.inputsPerSecond} inputs/s`);
  t.equal(r.inputs, IN_PROCESS, 'every input was sent and the module answered after it');
  t.same(r.failures.map(describeFailure), [], 'no crash, hang, INTERNAL reply or state change');
  const run = r.runs[0]!;
  t.ok(run.probes >= IN_PROCESS / 256, `a STATUS answered every 256 inputs (${run.probes})`);
  t.same(run.pool.after, run.pool.before, 'pool status unchanged');
  t.equal(run.flash.after, run.flash.before, 'NOR flash contents unchanged');
  // Every layer was exercised, and the module saw both answers and refusals.
  for (const [layer, n] of Object.entries(run.layers)) t.ok(n > IN_PROCESS / 50, `${layer}: ${n} inputs`);
  t.ok(run.replies.responses > 1000 && run.replies.errors > 10_000, `replies: ${JSON.stringify(run.replies)}`);
});

t.test(`${LIVE} inputs into qkt terminal run over TCP`, async (t) => {
  assertFreshBuild();
  const r = await runFuzzCampaign({ seed: SEED, plan: [{ target: 'tcp', count: LIVE }] });
  report(t, r.failures, r.runs.flatMap((x) => x.stalls));
  t.equal(r.inputs, LIVE);
  t.same(r.failures.map(describeFailure), []);
  t.equal(r.runs[0]!.flash.after, r.runs[0]!.flash.before, 'flash image file unchanged');
});

t.test(`${LIVE} inputs into qkt terminal run over a pty`, { skip: socatSkipReason() }, async (t) => {
  assertFreshBuild();
  const r = await runFuzzCampaign({ seed: SEED, plan: [{ target: 'pty', count: LIVE }] });
  report(t, r.failures, r.runs.flatMap((x) => x.stalls));
  t.equal(r.inputs, LIVE);
  t.same(r.skipped, []);
  t.same(r.failures.map(describeFailure), []);
  t.equal(r.runs[0]!.flash.after, r.runs[0]!.flash.before, 'flash image file unchanged');
});

t.test('fixed case: seed 100 over a pty, which stopped the link before the serial fix', { skip: socatSkipReason() }, async (t) => {
  // Before host-tools/transports/serial.ts kept its poll interests, this run's pty link stopped for
  // good (the fuzzer's write of an oversize burst never completed: inputs 4716..4720 in one run,
  // 356..357 in another). The deterministic regression test is in host-tools/transports/serial.test.ts.
  assertFreshBuild();
  const target = await liveTarget('pty');
  try {
    const r = await fuzzTarget(target, { seed: 100, count: 6000 });
    report(t, r.failures, r.stalls);
    t.same(r.failures.map(describeFailure), []);
    t.equal(r.inputs, 6000);
  } finally {
    await target.close();
  }
});

t.test('ADMIN requests with wrong tokens: counted in flash by design, nothing else changes', async (t) => {
  // docs/protocol.md 3.10: a bad token is counted in flash before the answer, so these are the one
  // input the main runs leave out. Here they go in: the pool stays, the module answers throughout.
  const target = inProcessTarget();
  try {
    const r = await fuzzTarget(target, { seed: SEED, count: 3000, admin: true });
    report(t, r.failures.filter((f) => f.kind !== 'state'));
    t.equal(r.inputs, 3000);
    t.same(r.failures.filter((f) => f.kind !== 'state').map(describeFailure), [], 'no crash, hang or INTERNAL reply');
    t.same(r.pool.after, r.pool.before, 'pool status unchanged');
    t.ok((r.replies.byRc['14'] ?? 0) + (r.replies.byRc['15'] ?? 0) > 0, 'tokens were checked (BAD_TOKEN or LOCKED_OUT)');
  } finally {
    await target.close();
  }
});

t.test('a module that crashes mid-run is reported as a crash with its seed and window', async (t) => {
  assertFreshBuild();
  // Power cut at the module's 5th flash operation: the first ADMIN token checked gets there.
  const target = await liveTarget('tcp', { args: ['--power-cut-after', '5'] });
  try {
    const r = await fuzzTarget(target, { seed: 5, count: 3000, admin: true, maxFailures: 1 });
    t.equal(r.failures[0]?.kind, 'crash');
    t.match(r.failures[0]?.message, /exited \(137\): qkt: power cut/);
    t.ok(r.failures[0]!.inputs.length > 0 && r.failures[0]!.inputs.every((x) => /^[0-9a-f ]+$/.test(x.hex)), 'the window inputs in hex');
  } finally {
    await target.close();
  }
});
