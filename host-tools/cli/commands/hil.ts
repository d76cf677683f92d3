// `qkt hil run`: the hardware-in-the-loop suite for a test rig: the link protocol over the
// chosen transports, the CLI on pty pairs, power cuts, cable pulls, the offline chain end to end,
// and the carrier on a real drive. It runs the project's tap suites (dev dependencies needed).
import { spawn } from 'node:child_process';
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
  'hil/inject-powercut.test.ts',
  'hil/field-tool.test.ts',
  'hil/e2e-offline.test.ts',
  'hil/station-run.test.ts',
  'hil/station-auth.test.ts',
  'hil/multi-client.test.ts',
  'hil/carrier-drive.test.ts',
  'hil/carrier-dir.test.ts',
];

export interface HilResult {
  passed: boolean;
  exitCode: number;
  transports: string[];
  suites: string[];
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
    const args = [tap, '--disable-coverage', ...(junit ? ['--reporter=junit', `--reporter-file=${junit}`] : io.json ? ['--reporter=silent'] : []), ...SUITES];
    const exitCode = await new Promise<number>((done, fail) => {
      const child = spawn(process.execPath, args, {
        cwd: root,
        // Under --json the suite's report must not reach stdout, which holds one JSON document.
        stdio: ['ignore', io.json ? 'ignore' : 'inherit', 'inherit'],
        env: { ...process.env, QKT_HIL_TRANSPORTS: transports.join(','), ...(carrier ? { QKT_HIL_CARRIER: carrier } : {}) },
      });
      child.on('error', fail);
      // Stopped by the user: pass it on to the suite (tap ends its test processes), by pid.
      const onAbort = () => child.kill('SIGTERM');
      io.signal.addEventListener('abort', onAbort, { once: true });
      child.on('exit', (code, signal) => {
        io.signal.removeEventListener('abort', onAbort);
        done(code ?? (signal ? 128 : 1));
      });
    });
    throwIfStopped(io.signal);
    const result: HilResult = { passed: exitCode === 0, exitCode, transports, suites: SUITES, carrier, junit };
    if (exitCode !== 0) throw new CliError(`HIL suite failed (tap exit ${exitCode})${junit ? `; report in ${junit}` : ''}`, Exit.FAILURE);
    return result;
  },
  render: (r) => `HIL suite passed over ${r.transports.join(', ')}${r.carrier ? `, carrier drive ${r.carrier}` : ''}${r.junit ? `; JUnit report ${r.junit}` : ''}`,
});
