// `qkt hil run`: the hardware-in-the-loop suite for a test rig: the link protocol over the
// chosen transports, the CLI on pty pairs, power cuts, cable pulls, the offline chain end to end,
// and the carrier on a real drive. It runs the project's tap suites (dev dependencies needed),
// side by side, reading tap's TAP stream to report each suite as it ends (name, ok/FAIL/skip,
// seconds) on stderr; a failed suite's details come after, from tap's own report (tap replay).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { throwIfStopped } from '../../link/stop.js';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';
import { defineCommand, str, CliError, Exit } from '../command.js';

const TRANSPORTS = ['inproc', 'tcp', 'pty', 'mock', 'webusb'] as const;
/** The suites of the rig, in the order they run. */
const SUITES = [
  'hil/protocol.test.ts',
  'hil/cli-pty.test.ts',
  'hil/progress-tty.test.ts',
  'hil/inject-powercut.test.ts',
  'hil/field-tool.test.ts',
  'hil/e2e-offline.test.ts',
  'hil/station-run.test.ts',
  'hil/station-auth.test.ts',
  'hil/station-cli.test.ts',
  'hil/multi-client.test.ts',
  'hil/carrier-drive.test.ts',
  'hil/carrier-dir.test.ts',
];

export interface HilResult {
  passed: boolean;
  exitCode: number;
  transports: string[];
  suites: string[];
  /** Each suite as it ended, in that order (they run side by side). */
  results: SuiteResult[];
  carrier: string | null;
  junit: string | null;
}

export default defineCommand<HilResult>({
  async run(v, _p, io) {
    const root = fileURLToPath(new URL('../../../../', import.meta.url));
    const tap = join(root, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs');
    if (!existsSync(tap) || !existsSync(join(root, 'hil'))) {
      throw new CliError(`the HIL suite runs from a source checkout with its dev dependencies (npm ci in ${root})`, Exit.STATE);
    }
    const transports = str(v, 'transport')?.split(',').map((x) => x.trim()) ?? [...TRANSPORTS];
    const bad = transports.filter((x) => !(TRANSPORTS as readonly string[]).includes(x));
    if (bad.length) throw new CliError(`unknown transport ${bad.join(', ')}; choose from ${TRANSPORTS.join(', ')}`, Exit.USAGE);
    const carrier = str(v, 'carrier') ? resolve(str(v, 'carrier')!) : null;
    if (carrier && !existsSync(carrier)) throw new CliError(`--carrier ${carrier} does not exist`, Exit.USAGE);
    const junit = str(v, 'junit') ? resolve(str(v, 'junit')!) : null;
    // tap's TAP stream on a pipe: one top-level result line per suite, as each one ends.
    const args = [tap, '--disable-coverage', '--reporter=tap', ...SUITES];
    const env = { ...process.env, QKT_HIL_TRANSPORTS: transports.join(','), ...(carrier ? { QKT_HIL_CARRIER: carrier } : {}) };
    io.note(`HIL: ${SUITES.length} suites over ${transports.join(', ')}${carrier ? `, carrier drive ${carrier}` : ''}`);
    const results: SuiteResult[] = [];
    const started = Date.now();
    const exitCode = await new Promise<number>((done, fail) => {
      const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env });
      createInterface({ input: child.stdout }).on('line', (line) => {
        const r = parseSuiteLine(line);
        if (!r) return;
        results.push(r);
        io.note(formatSuite(r, results.length, SUITES.length, (Date.now() - started) / 1000));
      });
      child.on('error', fail);
      // Stopped by the user: pass it on to the suite (tap ends its test processes), by pid.
      const onAbort = () => child.kill('SIGTERM');
      io.signal.addEventListener('abort', onAbort, { once: true });
      child.on('close', (code, signal) => {
        io.signal.removeEventListener('abort', onAbort);
        done(code ?? (signal ? 128 : 1));
      });
    });
    throwIfStopped(io.signal);
    // The JUnit report and a failed suite's details come from tap's saved results (.tap/test-results).
    const replay = (extra: string[], files: string[], stdio: 'ignore' | 'stderr') =>
      new Promise<void>((done, fail) => {
        const c = spawn(process.execPath, [tap, 'replay', '--disable-coverage', ...extra, ...files], { cwd: root, env, stdio: ['ignore', stdio === 'stderr' ? 2 : 'ignore', stdio === 'stderr' ? 2 : 'ignore'] });
        c.on('error', fail);
        c.on('close', () => done());
      });
    if (junit) await replay(['--reporter=junit', `--reporter-file=${junit}`], SUITES, 'ignore');
    const failed = results.filter((r) => !r.ok).map((r) => r.suite);
    if (failed.length && !io.json) await replay(['--reporter=base'], failed, 'stderr');
    const result: HilResult = { passed: exitCode === 0, exitCode, transports, suites: SUITES, results, carrier, junit };
    if (exitCode !== 0) throw new CliError(`HIL suite failed (tap exit ${exitCode}${failed.length ? `; failed: ${failed.join(', ')}` : ''})${junit ? `; report in ${junit}` : ''}`, Exit.FAILURE);
    return result;
  },
  render: (r) => `HIL suite passed over ${r.transports.join(', ')}${r.carrier ? `, carrier drive ${r.carrier}` : ''}${r.junit ? `; JUnit report ${r.junit}` : ''}`,
});

export interface SuiteResult {
  suite: string;
  ok: boolean;
  /** The suite skipped itself (ok, but nothing ran): the reason tap gave. */
  skipped: string | null;
  /** Its own run time, as tap measured it. */
  seconds: number | null;
}

/** A top-level result line of tap's TAP stream (`ok 3 - hil/x.test.ts # time=812.4ms`), or undefined. */
export function parseSuiteLine(line: string): SuiteResult | undefined {
  const m = /^(not )?ok \d+ - (\S+)(.*)$/.exec(line);
  if (!m) return undefined;
  const rest = m[3]!;
  const skip = /# SKIP\b:?\s*([^#]*)/i.exec(rest);
  const time = /# time=([\d.]+)ms/.exec(rest);
  return { suite: m[2]!, ok: !m[1], skipped: skip ? skip[1]!.trim() || 'skipped' : null, seconds: time ? Number(time[1]) / 1000 : null };
}

/** `  ok    hil/protocol.test.ts           12.3 s   3/11 at 41 s` */
export function formatSuite(r: SuiteResult, n: number, of: number, elapsed: number): string {
  const word = !r.ok ? 'FAIL' : r.skipped ? 'skip' : 'ok';
  const secs = r.seconds === null ? '' : `${r.seconds.toFixed(1)} s`;
  return `  ${word.padEnd(5)} ${r.suite.padEnd(30)} ${secs.padStart(8)}   ${n}/${of} at ${Math.round(elapsed)} s${r.skipped ? ` (${r.skipped})` : ''}`;
}
