// Test support: whether python3 can run the independent Python checks and client. Under CI=true
// python3 is installed by .ci/run, so its absence there is a failure, never a skip.
import { spawnSync } from 'node:child_process';

let found: boolean | undefined;

/** A reason to skip a Python test (python3 missing, not in CI), or false (run it; in CI, always). */
export function pythonSkipReason(): string | false {
  found ??= spawnSync('python3', ['--version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
  if (found || process.env['CI'] === 'true') return false;
  return 'python3 is not installed (apt-get install -y python3); Python checks skipped';
}
