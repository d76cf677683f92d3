// `qkt hil run`: the hardware-in-the-loop suite for a test rig: the link protocol over the
// chosen transports, the CLI on pty pairs, power cuts, cable pulls, the offline chain end to end,
// and the carrier on a real drive. It runs the project's tap suites (dev dependencies needed),
// side by side, reading tap's TAP stream to report each suite as it ends (name, ok/FAIL/skip,
// seconds) on stderr; a failed suite's details come after, from tap's own report (tap replay).
// `--noise R` adds the line-noise suite (hil/noise.test.ts): an inject over a paced noisy cable
// against a clean one, whose report (goodput, the relay's counters) comes back in a file.
// `--port P [--baud N]` points the device suite (hil/device.test.ts) at a module on a real serial or
// USB CDC device (or tcp:, usb:VID:PID): non-destructive protocol checks and a bulk transfer's goodput.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { throwIfStopped } from '../../link/stop.js';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';
import { randomInt } from 'node:crypto';
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { parseNoise } from './link.js';
import { resolvePort } from '../port-select.js';

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
  'hil/device.test.ts',
];
/** Skips itself, with this reason, unless --port names a device. */
export const DEVICE_SUITE = 'hil/device.test.ts';
/** Added to the run by --noise. */
export const NOISE_SUITE = 'hil/noise.test.ts';

export interface HilResult {
  passed: boolean;
  exitCode: number;
  transports: string[];
  suites: string[];
  /** Each suite as it ended, in that order (they run side by side). */
  results: SuiteResult[];
  carrier: string | null;
  junit: string | null;
  /** With --noise: the noise suite's report (null if it ended before making one). */
  noise?: NoiseReport | null;
  /** With --port: the device suite's report (null if it did not run to its end). */
  device?: DeviceReport | null;
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
    const noiseText = str(v, 'noise');
    const noise = noiseText === undefined ? undefined : parseNoise(noiseText);
    if (noise === undefined && str(v, 'seed') !== undefined) throw new CliError('--seed is the seed of the line noise: give it with --noise R', Exit.USAGE);
    const seed = noise === undefined ? undefined : (int(v, 'seed', 0, 0xffffffff) ?? randomInt(0, 0x1_0000_0000));
    const portText = str(v, 'port');
    if (portText === undefined && str(v, 'baud') !== undefined) throw new CliError('--baud is the line rate of the device on --port P: give it with --port P', Exit.USAGE);
    if (portText === undefined && str(v, 'vidpid') !== undefined) throw new CliError('--vidpid picks the device of --port auto: give it with --port auto', Exit.USAGE);
    const baud = int(v, 'baud', 300, 12_000_000);
    const port = portText === undefined ? undefined : await resolvePort(portText, str(v, 'vidpid'));
    // A serial path that is not there fails here, not as a failed suite minutes later.
    if (port !== undefined && !/^(tcp|usb):/.test(port) && !existsSync(port)) throw new CliError(`--port ${port} does not exist; qkt ports lists the serial devices attached`, Exit.NO_DEVICE);
    const suites = pickSuites(str(v, 'suite'), noise !== undefined);
    // The noise and device suites write their reports here; read once the suite has ended.
    const scratch = noise === undefined && port === undefined ? undefined : mkdtempSync(join(tmpdir(), 'qkt-hil-'));
    const reportFile = noise === undefined ? undefined : join(scratch!, 'noise.json');
    const deviceFile = port === undefined ? undefined : join(scratch!, 'device.json');
    // tap's TAP stream on a pipe: one top-level result line per suite, as each one ends.
    const args = [tap, '--disable-coverage', '--reporter=tap', ...suites];
    const env = {
      ...process.env,
      QKT_HIL_TRANSPORTS: transports.join(','),
      ...(carrier ? { QKT_HIL_CARRIER: carrier } : {}),
      ...(noise !== undefined ? { QKT_HIL_NOISE: noiseText!.trim(), QKT_HIL_NOISE_SEED: String(seed), QKT_HIL_NOISE_REPORT: reportFile! } : {}),
      ...(port !== undefined ? { QKT_HIL_PORT: port, QKT_HIL_DEVICE_REPORT: deviceFile!, ...(baud ? { QKT_HIL_BAUD: String(baud) } : {}) } : {}),
    };
    // A --port given to this run only: the device suite never picks one up from the caller's environment.
    if (port === undefined) {
      delete env['QKT_HIL_PORT'];
      delete env['QKT_HIL_BAUD'];
      delete env['QKT_HIL_DEVICE_REPORT'];
    }
    const noisy = noise !== undefined ? `, line noise ${formatRate(noise)} (seed ${seed})` : '';
    const device = port !== undefined ? `, device ${port}${baud ? ` at ${baud} baud` : ''}` : '';
    io.note(`HIL: ${suites.length} suites over ${transports.join(', ')}${carrier ? `, carrier drive ${carrier}` : ''}${device}${noisy}`);
    let report: NoiseReport | null = null;
    let deviceReport: DeviceReport | null = null;
    try {
      const results: SuiteResult[] = [];
      const started = Date.now();
      const exitCode = await new Promise<number>((done, fail) => {
        const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env });
        createInterface({ input: child.stdout }).on('line', (line) => {
          const r = parseSuiteLine(line);
          if (!r) return;
          results.push(r);
          io.note(formatSuite(r, results.length, suites.length, (Date.now() - started) / 1000));
          if (r.suite === NOISE_SUITE && reportFile) {
            report = readReport(reportFile, checkNoiseReport);
            if (report) io.note(formatNoise(report));
          }
          if (r.suite === DEVICE_SUITE && deviceFile) {
            deviceReport = readReport(deviceFile, checkDeviceReport);
            if (deviceReport) io.note(formatDevice(deviceReport));
          }
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
      if (junit) await replay(['--reporter=junit', `--reporter-file=${junit}`], suites, 'ignore');
      const failed = results.filter((r) => !r.ok).map((r) => r.suite);
      if (failed.length && !io.json) await replay(['--reporter=base'], failed, 'stderr');
      if (reportFile && !report) report = readReport(reportFile, checkNoiseReport);
      if (deviceFile && !deviceReport) deviceReport = readReport(deviceFile, checkDeviceReport);
      const result: HilResult = {
        passed: exitCode === 0,
        exitCode,
        transports,
        suites,
        results,
        carrier,
        junit,
        ...(noise !== undefined ? { noise: report } : {}),
        ...(port !== undefined ? { device: deviceReport } : {}),
      };
      // A failed run still prints its result (--json: passed false, each suite, the noise report); outcome() gives the exit.
      return result;
    } finally {
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    }
  },
  outcome: (r) => {
    if (r.passed) return undefined;
    const failed = r.results.filter((x) => !x.ok).map((x) => x.suite);
    return { exitCode: Exit.FAILURE, reason: `HIL suite failed (tap exit ${r.exitCode}${failed.length ? `; failed: ${failed.join(', ')}` : ''})${r.junit ? `; report in ${r.junit}` : ''}` };
  },
  render: (r) =>
    `HIL suite ${r.passed ? 'passed' : 'FAILED'} over ${r.transports.join(', ')}${r.carrier ? `, carrier drive ${r.carrier}` : ''}${r.device ? `, device ${r.device.port}` : ''}${r.noise ? `, line noise ${formatRate(r.noise.rate)} (ratio ${r.noise.ratio ?? '-'})` : ''}${r.junit ? `; JUnit report ${r.junit}` : ''}`,
});

/** `protocol` for hil/protocol.test.ts. */
const shortName = (suite: string) => suite.replace(/^hil\//, '').replace(/\.test\.ts$/, '');

/**
 * The suites to run: all (and the noise suite with --noise), or those --suite names
 * (comma-separated short names: protocol,cli-pty; `noise` only with --noise), in the run's order.
 */
export function pickSuites(list: string | undefined, noise: boolean): string[] {
  const all = noise ? [...SUITES, NOISE_SUITE] : SUITES;
  if (list === undefined) return all;
  const names = list.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (!noise && names.includes(shortName(NOISE_SUITE))) throw new CliError('the noise suite runs with --noise R (e.g. --noise 1%)', Exit.USAGE);
  const known = all.map(shortName);
  const bad = names.filter((x) => !known.includes(x));
  if (bad.length || !names.length) throw new CliError(`unknown suite ${bad.join(', ') || JSON.stringify(list)}; choose from ${known.join(', ')}`, Exit.USAGE);
  return all.filter((s) => names.includes(shortName(s)));
}

/** One `qkt inject` of the noise suite: spawn to exit; goodput = payload bits / those seconds. */
export interface NoiseRun {
  /** The inject's exit code (0: the batch is in the pool exactly once, checked by the suite). */
  exitCode: number | null;
  /** Wall time, spawn of `qkt inject` to its exit. */
  seconds: number;
  /** The transfer time the inject reports itself (BEGIN to COMMIT's answer); null if it failed. */
  transferSeconds: number | null;
  /** Payload key bits per wall second; null if it failed. */
  goodputBitsPerSecond: number | null;
}

/** One direction of the relay during the noisy run (transports/cable.ts DirectionStats). */
export interface NoiseRelayDirection {
  bytesIn: number;
  bytesOut: number;
  corrupted: number;
  dropped: number;
  inserted: number;
}

/** The line-noise suite's report: the same inject over a noisy and a clean cable of one baud. */
export interface NoiseReport {
  /** Fraction of bytes with a bit flipped (0.01 for 1%); R/2 dropped, R/10 inserted, both ways. */
  rate: number;
  seed: number;
  baud: number;
  /** The batch's payload, bits. */
  bits: number;
  clean: NoiseRun;
  noisy: NoiseRun;
  /** noisy / clean goodput, or null if a run failed. Reported, never asserted. */
  ratio: number | null;
  /** The relay's counters during the noisy run: host to module, module to host. */
  relay: { toDevice: NoiseRelayDirection; toHost: NoiseRelayDirection };
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isRun = (x: unknown): x is NoiseRun =>
  isObj(x) &&
  (x['exitCode'] === null || Number.isInteger(x['exitCode'])) &&
  isNum(x['seconds']) &&
  (x['transferSeconds'] === null || isNum(x['transferSeconds'])) &&
  (x['goodputBitsPerSecond'] === null || isNum(x['goodputBitsPerSecond']));
const isDirection = (x: unknown): x is NoiseRelayDirection => isObj(x) && ['bytesIn', 'bytesOut', 'corrupted', 'dropped', 'inserted'].every((k) => isCount(x[k]));

/** Check a noise report (the suite's file is input from another process): the report, or undefined. */
export function checkNoiseReport(x: unknown): NoiseReport | undefined {
  if (!isObj(x) || !isNum(x['rate']) || x['rate'] > 1 || !isCount(x['seed']) || !isCount(x['baud']) || !isCount(x['bits'])) return undefined;
  if (!isRun(x['clean']) || !isRun(x['noisy']) || !(x['ratio'] === null || isNum(x['ratio']))) return undefined;
  const relay = x['relay'];
  if (!isObj(relay) || !isDirection(relay['toDevice']) || !isDirection(relay['toHost'])) return undefined;
  const pick = (d: NoiseRelayDirection): NoiseRelayDirection => ({ bytesIn: d.bytesIn, bytesOut: d.bytesOut, corrupted: d.corrupted, dropped: d.dropped, inserted: d.inserted });
  const run = (r: NoiseRun): NoiseRun => ({ exitCode: r.exitCode, seconds: r.seconds, transferSeconds: r.transferSeconds, goodputBitsPerSecond: r.goodputBitsPerSecond });
  return { rate: x['rate'], seed: x['seed'], baud: x['baud'], bits: x['bits'], clean: run(x['clean']), noisy: run(x['noisy']), ratio: x['ratio'], relay: { toDevice: pick(relay['toDevice']), toHost: pick(relay['toHost']) } };
}

/** A suite's report file (written by another process), checked: null when absent or malformed. */
function readReport<T>(file: string, check: (x: unknown) => T | undefined): T | null {
  if (!existsSync(file)) return null;
  try {
    return check(JSON.parse(readFileSync(file, 'utf8'))) ?? null;
  } catch {
    return null;
  }
}

/** `1%`, `0.001%`: a fraction as the percentage the user typed. */
export function formatRate(rate: number): string {
  return `${Number((rate * 100).toPrecision(6))}%`;
}

const kbits = (bps: number | null) => (bps === null ? 'failed' : `${(bps / 1000).toFixed(1)} kbit/s`);

/** `        noise 1% at 921600 baud, seed 7: clean 80.1 kbit/s, noisy 70.2 kbit/s, ratio 0.876; relay: 41 corrupted, 20 dropped, 4 inserted` */
export function formatNoise(r: NoiseReport): string {
  const sum = (k: 'corrupted' | 'dropped' | 'inserted') => r.relay.toDevice[k] + r.relay.toHost[k];
  return (
    `        noise ${formatRate(r.rate)} at ${r.baud} baud, seed ${r.seed}: clean ${kbits(r.clean.goodputBitsPerSecond)}, noisy ${kbits(r.noisy.goodputBitsPerSecond)}` +
    `, ratio ${r.ratio ?? '-'}; relay: ${sum('corrupted')} corrupted, ${sum('dropped')} dropped, ${sum('inserted')} inserted`
  );
}

/** The device suite's report: the module on --port and the goodput of its DIAG sink transfer. */
export interface DeviceReport {
  /** The port as given to the suite (`auto` resolved). */
  port: string;
  /** --baud, or null (a serial port then runs at 115200; a pty or TCP unpaced). */
  baud: number | null;
  /** From PARAMS; null if it did not answer. */
  firmware: string | null;
  maxFrame: number | null;
  window: number | null;
  maxChunk: number | null;
  /** The bulk transfer; null if it did not complete. */
  bulk: DeviceBulk | null;
}

export interface DeviceBulk {
  bytes: number;
  /** SINK_BEGIN's answer to the last chunk's. */
  seconds: number;
  /** Payload bits per second over those seconds. */
  goodputBitsPerSecond: number;
  /** Goodput over the line's payload capacity (8N1: baud/10 bytes a second); null without --baud. */
  lineRateFraction: number | null;
  /** Go-backs and resends of the transfer. */
  restarts: number;
}

const isNumOrNull = (x: unknown): x is number | null => x === null || isCount(x);

/** Check a device report (the suite's file is input from another process): the report, or undefined. */
export function checkDeviceReport(x: unknown): DeviceReport | undefined {
  if (!isObj(x) || typeof x['port'] !== 'string' || !isNumOrNull(x['baud']) || !(x['firmware'] === null || typeof x['firmware'] === 'string')) return undefined;
  if (!isNumOrNull(x['maxFrame']) || !isNumOrNull(x['window']) || !isNumOrNull(x['maxChunk'])) return undefined;
  const b = x['bulk'];
  let bulk: DeviceBulk | null = null;
  if (b !== null) {
    if (!isObj(b) || !isCount(b['bytes']) || !isNum(b['seconds']) || !isCount(b['goodputBitsPerSecond']) || !(b['lineRateFraction'] === null || isNum(b['lineRateFraction'])) || !isCount(b['restarts'])) return undefined;
    bulk = { bytes: b['bytes'], seconds: b['seconds'], goodputBitsPerSecond: b['goodputBitsPerSecond'], lineRateFraction: b['lineRateFraction'], restarts: b['restarts'] };
  }
  return { port: x['port'], baud: x['baud'], firmware: x['firmware'], maxFrame: x['maxFrame'], window: x['window'], maxChunk: x['maxChunk'], bulk };
}

/** `        device /dev/ttyUSB0 at 115200 baud: qkt-fw 0.1.0; 1048576 bytes in 95.21 s, 88.1 kbit/s, 0.956 of the line rate` */
export function formatDevice(r: DeviceReport): string {
  const b = r.bulk;
  const bulk = b
    ? `${b.bytes} bytes in ${b.seconds.toFixed(2)} s, ${kbits(b.goodputBitsPerSecond)}${b.lineRateFraction !== null ? `, ${b.lineRateFraction} of the line rate` : ''}${b.restarts ? `, ${b.restarts} go-backs` : ''}`
    : 'bulk transfer did not complete';
  return `        device ${r.port}${r.baud ? ` at ${r.baud} baud` : ''}: ${r.firmware ?? 'no PARAMS answer'}; ${bulk}`;
}

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
