// `qkt hil run --noise R` as a rig runs it: a bad rate or a stray --seed is a usage error (exit 2);
// and a run of the noise suite alone brings its report back in --json and in the JUnit report.
// That run happens in a scratch project root (dist/ and bin/ copied, sources linked), so the tap
// it starts keeps its .tap/ there and leaves this run's results and coverage alone.
import t from 'tap';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkNoiseReport } from '../host-tools/cli/commands/hil.js';
import { runQkt } from './cli.js';
import { assertFreshBuild } from './build-check.js';
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

/** A project root in a scratch folder: what `qkt hil run` and tap need, the sources linked. */
function scratchRoot(): string {
  assertFreshBuild();
  const repo = fileURLToPath(new URL('..', import.meta.url));
  const root = mkdtempSync(join(tmpdir(), 'qkt-hil-root-'));
  for (const f of ['package.json', 'tsconfig.json', 'tsconfig.build.json']) cpSync(join(repo, f), join(root, f));
  // Copied: `hil run` finds the project root from where its own module lies.
  for (const d of ['bin', 'dist']) cpSync(join(repo, d), join(root, d), { recursive: true });
  for (const d of ['node_modules', 'hil', 'host-tools', 'firmware', 'fixtures']) symlinkSync(join(repo, d), join(root, d));
  return root;
}

t.test('hil run --suite noise --noise 0.001%: the report in --json and in the JUnit file', { skip: ptySkipReason() }, async (t) => {
  const root = scratchRoot();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const junit = join(root, 'hil.xml');
  // This run's tap settings stay here: the inner tap is a runner of its own, not a child of this one.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TAP|_TAPJS|NODE_OPTIONS$)/.test(k)));
  env['QKT_HIL_NOISE_BITS'] = '256kbit'; // the suite's check, not its figures: a small batch
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const p = spawn(process.execPath, [join(root, 'bin', 'qkt.js'), 'hil', 'run', '--suite', 'noise', '--noise', '0.001%', '--seed', '5', '--junit', junit, '--json'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGTERM'), 150_000);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
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
