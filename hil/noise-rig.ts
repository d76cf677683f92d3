// Test support for the line-noise suite (hil/noise.test.ts, `qkt hil run --noise R`): a module
// (`qkt terminal run` on TCP) behind a paced, noisy virtual cable (transports/cable.ts, the relay
// `qkt link` runs) whose host end is a pty, and one `qkt inject` through it, timed spawn to exit.
// The pool is read before and after straight over TCP, off the cable, so the count is the truth
// whatever the noise did to the line.
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectTcpEnd, joinCable, ptyEnd } from '../host-tools/transports/cable.js';
import type { CableEnd, CableStats } from '../host-tools/transports/cable.js';
import { parseNoise } from '../host-tools/cli/commands/link.js';
import { parseBits } from '../host-tools/units.js';
import type { NoiseReport, NoiseRun } from '../host-tools/cli/commands/hil.js';
import { QKT_BIN, runQkt, startQkt } from './cli.js';
import type { Background } from './cli.js';
import type { Test } from 'tap';

/** The paper's initial offline load: 3 Mbit = 3,145,728 bits. */
export const NOISE_BITS = 3 * 2 ** 20;
/** The line rate of the suite's cable: 3 Mbit takes some 5 s over it clean (measured 4.9 s spawn to exit). */
export const NOISE_BAUD = 921_600;
/**
 * Under `npm test` (QKT_HIL_NOISE unset) the suite runs at this rate (0.1%: chunks shrink to a
 * few hundred bytes, some 4,000 go-backs); `qkt hil run --noise R` sets the rate it is asked for.
 */
export const DEFAULT_NOISE = 0.001;
/** ... and with this seed, so that `npm test` meets the same faults each run (`hil run` picks one at random). */
export const DEFAULT_SEED = 11;

export interface NoiseSettings {
  rate: number;
  seed: number;
  baud: number;
  /** The batch's payload: 3 Mbit, or QKT_HIL_NOISE_BITS (a smaller one for the rig's own test). */
  bits: number;
  /** Where to write the report for `qkt hil run` (QKT_HIL_NOISE_REPORT), or undefined. */
  reportFile: string | undefined;
}

/** The suite's settings from `qkt hil run` (QKT_HIL_NOISE, QKT_HIL_NOISE_SEED, QKT_HIL_NOISE_REPORT), or the defaults. */
export function noiseSettings(env: NodeJS.ProcessEnv = process.env): NoiseSettings {
  const rateText = env['QKT_HIL_NOISE'];
  const seedText = env['QKT_HIL_NOISE_SEED'];
  const seed = seedText === undefined || seedText === '' ? DEFAULT_SEED : Number(seedText);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`QKT_HIL_NOISE_SEED must be an integer from 0 to 4294967295, got ${JSON.stringify(seedText)}`);
  return {
    rate: rateText === undefined || rateText === '' ? DEFAULT_NOISE : parseNoise(rateText),
    seed,
    baud: NOISE_BAUD,
    bits: env['QKT_HIL_NOISE_BITS'] ? parseBits(env['QKT_HIL_NOISE_BITS']) : NOISE_BITS,
    reportFile: env['QKT_HIL_NOISE_REPORT'] || undefined,
  };
}

export interface PoolDoc {
  pool: { storedKeyBits: number; batches: Array<{ batchId: string; bits: number }> };
}

export interface InjectDoc {
  batchId: string;
  bits: number;
  seconds: number;
  resumedFromBits: number;
}

/** One run: the inject's exit and documents, the pool before and after, the relay's counters. */
export interface CableRun {
  code: number | null;
  stderr: string;
  inject: InjectDoc | undefined;
  wallSeconds: number;
  before: PoolDoc;
  after: PoolDoc;
  relay: CableStats;
}


async function status(port: number): Promise<PoolDoc> {
  const r = await runQkt(['status', '--port', `tcp:127.0.0.1:${port}`, '--json']);
  if (r.code !== 0) throw new Error(`qkt status exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as PoolDoc;
}

/** A KMD home with T1 enrolled and a carrier holding `bits` for it, in `dir` (made with the CLI). */
export async function noiseFixture(dir: string, bits: number): Promise<{ image: string; carrier: string }> {
  const home = join(dir, 'kmd');
  const image = join(dir, 'T1.img');
  const carrier = join(dir, 'carrier');
  for (const args of [
    ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s'],
    ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', image],
    ['carrier', 'load', '--home', home, '--carrier', carrier, '--terminal', 'T1', '--bits', String(bits), '--init'],
  ]) {
    const r = await runQkt([...args, '--json'], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`noise fixture: qkt ${args.slice(0, 2).join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return { image, carrier };
}

/**
 * An inject not done by then is stopped (SIGTERM, then SIGKILL) and counted as failed: 3 minutes,
 * or 30 at 0.5% noise and more, where a 3 Mbit batch takes many minutes (docs/bench/noise.md).
 */
export const INJECT_TIMEOUT_MS = 180_000;
export const injectTimeoutMs = (rate: number): number => (rate >= 0.005 ? 10 * INJECT_TIMEOUT_MS : INJECT_TIMEOUT_MS);

/**
 * Into a fresh copy of the fixture's image and carrier (in `work`): the module up, its pool read,
 * then one `qkt inject` through the paced cable at `baud` with `rate` noise from `seed`; then
 * the cable closed, the pool read again, the module stopped (all by pid). `t`'s teardown ends
 * whatever is left should the test end first (a timeout).
 */
export async function injectOverCable(
  t: Test,
  fx: { image: string; carrier: string },
  work: string,
  o: { baud: number; rate: number; seed: number; timeoutMs?: number },
): Promise<CableRun> {
  mkdirSync(work, { recursive: true });
  const image = join(work, 'T1.img');
  const carrier = join(work, 'carrier');
  cpSync(fx.image, image);
  cpSync(fx.carrier, carrier, { recursive: true });
  const baud = String(o.baud);
  let term: Background | undefined;
  let host: Awaited<ReturnType<typeof ptyEnd>> | undefined;
  let device: CableEnd | undefined;
  let relay: ReturnType<typeof joinCable> | undefined;
  try {
    term = await startQkt(['terminal', 'run', '--flash', image, '--listen', 'tcp:127.0.0.1:0', '--baud', baud]);
    const started = term;
    t.teardown(() => started.stop());
    const port = Number(/:(\d+)$/.exec(String(term.ready['port']))?.[1]);
    if (!port) throw new Error(`qkt terminal run: no TCP port in its ready line ${JSON.stringify(term.ready)}`);
    const before = await status(port);
    host = await ptyEnd();
    const pty = host;
    t.teardown(async () => {
      await pty.transport.close().catch(() => undefined);
      await pty.dispose?.(); // socat, by pid
    });
    device = await connectTcpEnd('127.0.0.1', port);
    relay = joinCable(host, device, { baud: o.baud, noise: { rate: o.rate, seed: o.seed } });
    const t0 = performance.now();
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [QKT_BIN, 'inject', '--carrier', carrier, '--port', host!.path, '--baud', baud, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const end = (signal: NodeJS.Signals) => {
        if (p.exitCode === null && p.signalCode === null) p.kill(signal);
      };
      t.teardown(() => end('SIGKILL'));
      let killer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        stderr += `\n(stopped by the suite after ${(o.timeoutMs ?? injectTimeoutMs(o.rate)) / 1000} s)`;
        end('SIGTERM');
        killer = setTimeout(() => end('SIGKILL'), 5000);
      }, o.timeoutMs ?? injectTimeoutMs(o.rate));
      let stdout = '';
      let stderr = '';
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.once('error', reject);
      p.once('close', (code) => {
        clearTimeout(timer);
        clearTimeout(killer);
        resolve({ code, stdout, stderr });
      });
    });
    const wallSeconds = (performance.now() - t0) / 1000;
    await relay.close();
    const stats = structuredClone(relay.stats);
    const after = await status(port);
    return {
      code: r.code,
      stderr: r.stderr,
      inject: r.code === 0 ? (JSON.parse(r.stdout) as InjectDoc) : undefined,
      wallSeconds,
      before,
      after,
      relay: stats,
    };
  } finally {
    await relay?.close();
    if (!relay) {
      await host?.transport.close().catch(() => undefined);
      await host?.dispose?.();
      await device?.transport.close().catch(() => undefined);
    }
    await term?.stop();
  }
}

const goodput = (bits: number, r: CableRun): NoiseRun => ({
  exitCode: r.code,
  seconds: round(r.wallSeconds, 3),
  transferSeconds: r.inject ? round(r.inject.seconds, 3) : null,
  goodputBitsPerSecond: r.code === 0 ? Math.round(bits / r.wallSeconds) : null,
});

const round = (x: number, digits: number) => Number(x.toFixed(digits));

/** The report `qkt hil run --noise` prints: the noisy run against the clean one, the relay's counters. */
export function noiseReport(s: NoiseSettings, clean: CableRun, noisy: CableRun): NoiseReport {
  const bits = s.bits;
  const c = goodput(bits, clean);
  const n = goodput(bits, noisy);
  const { aToB, bToA } = noisy.relay;
  return {
    rate: s.rate,
    seed: s.seed,
    baud: s.baud,
    bits,
    clean: c,
    noisy: n,
    ratio: n.goodputBitsPerSecond !== null && c.goodputBitsPerSecond ? round(n.goodputBitsPerSecond / c.goodputBitsPerSecond, 3) : null,
    relay: { toDevice: { ...aToB }, toHost: { ...bToA } },
  };
}
