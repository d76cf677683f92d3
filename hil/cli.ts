// Test support: run the built `qkt` CLI as a user would (a child process), and start long-running
// commands (terminal run) that announce readiness as their first --json line, ended by pid.
// A missing or stale dist/ fails the run (build-check.ts) rather than test old code.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { assertFreshBuild } from './build-check.js';

export const QKT_BIN = fileURLToPath(new URL('../bin/qkt.js', import.meta.url));

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runQkt(args: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    assertFreshBuild();
    const child = spawn(process.execPath, [QKT_BIN, ...args], {
      env: { ...process.env, ...o.env },
      cwd: o.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`qkt ${args.join(' ')} timed out; stderr: ${stderr}`));
    }, o.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Background {
  child: ChildProcess;
  ready: Record<string, unknown>;
  /** Everything it printed on stdout so far (the ready document included). */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  stop(): Promise<number | string>;
}

/** Start a long-running `qkt ... --json` command and wait for its ready document. */
export function startQkt(args: string[], o: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Background> {
  return new Promise((resolve, reject) => {
    assertFreshBuild();
    const child = spawn(process.execPath, [QKT_BIN, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    let out = '';
    let err = '';
    const exited = new Promise<number | string>((r) => child.on('exit', (code, signal) => r(code ?? signal ?? -1)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`qkt ${args.join(' ')} not ready in time; stderr: ${err}`));
    }, o.timeoutMs ?? 20_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    void exited.then((c) => {
      clearTimeout(timer);
      reject(new Error(`qkt ${args.join(' ')} exited (${c}) before ready; stderr: ${err}`));
    });
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        const ready = JSON.parse(out.slice(0, nl)) as Record<string, unknown>;
        resolve({
          child,
          ready,
          stdout: () => out,
          stderr: () => err,
          exited,
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), 5000);
            const c = await exited;
            clearTimeout(t);
            return c;
          },
        });
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}
