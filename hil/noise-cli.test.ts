// `qkt hil run --noise R` as a rig runs it: a bad rate or a stray --seed is a usage error (exit 2);
// and a run of the noise suite alone brings its report back in --json and in the JUnit report.
// That run happens in a scratch project root (dist/ and bin/ copied, sources linked), so the tap
// it starts keeps its .tap/ there and leaves this run's results and coverage alone.
import t from 'tap';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { checkNoiseReport } from '../host-tools/cli/commands/hil.js';
import { runQkt } from './cli.js';
import { runInRoot, scratchRoot } from './scratch-root.js';
import { ptySkipReason } from './e2e-rig.js';

t.setTimeout(180_000);

t.test('hil run refuses a bad --noise, --seed or --suite (exit 2, one line)', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--noise', '200%'], /--noise must be a percentage of bytes from 0% to 100% \(e\.g\. 0\.1%\), got "200%"/],
    [['--noise', 'lots'], /--noise must be a percentage/],
    [['--seed', '7'], /--seed is the seed of the line noise: give it with --noise R/],
    [['--noise', '1%', '--seed', '-1'], /--seed must be a whole number from 0 to 4294967295/],
    [['--suite', 'noise'], /the noise suite runs with --noise R/],
    [['--suite', 'protocol,bogus'], /unknown suite bogus; choose from protocol, cli-pty, /],
  ];
  for (const [args, reason] of cases) {
    const r = await runQkt(['hil', 'run', ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
    t.match(r.stderr.trim(), reason, `${args.join(' ')}: says why`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
  }
});

t.test('hil run --suite noise --noise 0.001%: the report in --json and in the JUnit file', { skip: ptySkipReason() }, async (t) => {
  const root = scratchRoot();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const junit = join(root, 'hil.xml');
  // The check, not the figures: a small batch.
  const r = await runInRoot(root, ['hil', 'run', '--suite', 'noise', '--noise', '0.001%', '--seed', '5', '--junit', junit, '--json'], { env: { QKT_HIL_NOISE_BITS: '256kbit' }, timeoutMs: 150_000 });
  t.equal(r.code, 0, `hil run exits 0: ${r.stderr.trim().slice(-2000)}`);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  t.same(doc['suites'], ['hil/noise.test.ts'], 'the noise suite alone');
  t.match(doc['results'], [{ suite: 'hil/noise.test.ts', ok: true, skipped: null }]);
  const noise = checkNoiseReport(doc['noise']);
  t.ok(noise, `a well-formed noise report: ${JSON.stringify(doc['noise'])}`);
  if (!noise) return;
  t.match(noise, { rate: 0.00001, seed: 5, baud: 921600, bits: 262144, clean: { exitCode: 0 }, noisy: { exitCode: 0 } });
  t.ok(noise.clean.goodputBitsPerSecond! > 0 && noise.noisy.goodputBitsPerSecond! > 0, 'goodput of both runs');
  t.equal(noise.ratio, Number((noise.noisy.goodputBitsPerSecond! / noise.clean.goodputBitsPerSecond!).toFixed(3)), 'ratio = noisy / clean');
  t.ok(noise.relay.toDevice.bytesIn > 262144 / 8, 'the relay carried the batch to the module');
  t.ok(noise.relay.toHost.bytesIn > 0, 'and the answers back');

  const xml = readFileSync(junit, 'utf8');
  t.match(xml, /<testsuite name="hil\/noise\.test\.ts"/, 'JUnit: the suite');
  const prop = /<property name="noise"><!\[CDATA\[([\s\S]*?)\]\]><\/property>/.exec(xml);
  t.ok(prop, 'JUnit: a noise property on the report case');
  t.match(prop?.[1], new RegExp(`rate: 0\\.00001\\n\\s*seed: 5\\n\\s*baud: 921600\\n\\s*bits: 262144\\n`), 'JUnit: rate, seed, baud, bits');
  t.match(prop?.[1], new RegExp(`ratio: ${noise.ratio}\\n`), 'JUnit: the same ratio as --json');
});
