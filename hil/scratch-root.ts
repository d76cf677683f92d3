// A project root in a scratch folder, for tests that run `qkt hil run`: the tap that command starts
// keeps its .tap/ (results, coverage) there and leaves the outer test run's alone.
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertFreshBuild } from './build-check.js';
import type { CliRun } from './cli.js';

/** What `qkt hil run` and tap need, the sources linked (remove it in the test's teardown). */
export function scratchRoot(): string {
  assertFreshBuild();
  const repo = fileURLToPath(new URL('..', import.meta.url));
  const root = mkdtempSync(join(tmpdir(), 'qkt-hil-root-'));
  for (const f of ['package.json', 'tsconfig.json', 'tsconfig.build.json']) cpSync(join(repo, f), join(root, f));
  // Copied: `hil run` finds the project root from where its own module lies.
  for (const d of ['bin', 'dist']) cpSync(join(repo, d), join(root, d), { recursive: true });
  for (const d of ['node_modules', 'hil', 'host-tools', 'firmware', 'fixtures']) symlinkSync(join(repo, d), join(root, d));
  return root;
}

/**
 * `qkt ...args` from the scratch root's own bin, without this run's tap settings (the inner tap
 * is a runner of its own, not a child of this one); SIGTERM by pid after `timeoutMs`.
 */
export function runInRoot(root: string, args: string[], o: { env?: Record<string, string>; timeoutMs: number }): Promise<CliRun> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TAP|_TAPJS|NODE_OPTIONS$)/.test(k)));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(root, 'bin', 'qkt.js'), ...args], { cwd: root, env: { ...env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGTERM'), o.timeoutMs);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
