// `qkt bench inject`, wall-clock part: the CLI as a user runs it (`node bin/qkt.js inject ...`
// spawned against a `qkt terminal run` on a pty pair, spawn to exit), and a ZMODEM transfer
// (lrzsz `sz`/`rz`) of the same sealed bytes over the same paced cable in the same run. The
// paced cable is two socat pty pairs joined by a relay in this process that paces each direction
// like a UART (both programs on it run unpaced, as they would behind real UARTs).
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { joinCable, ptyEnd } from '../transports/cable.js';
import type { NoiseOptions } from '../transports/cable.js';
import { createPtyPair } from '../transports/pty-pair.js';
import { qktBin } from './start.js';

/** A cable between two pty paths: `host` for the host program, `device` for the other end. */
export interface Cable {
  host: string;
  device: string;
  description: string;
  close(): Promise<void>;
}

/** A plain socat pty pair: no line rate. */
export async function ptyCable(): Promise<Cable> {
  const p = await createPtyPair();
  return { host: p.a, device: p.b, description: `pty pair ${p.a} <-> ${p.b}, unpaced`, close: () => p.close() };
}

/**
 * Two pty pairs joined by a pacing relay (transports/cable.ts, the relay `qkt link` runs): bytes
 * written at `host` come out at `device` at most at baud/10 bytes a second, and back, with seeded
 * byte noise if asked. A fast sender is held back by the kernel's pty buffer, as by a slow UART.
 */
export async function pacedCable(baud: number, noise?: NoiseOptions): Promise<Cable> {
  const host = await ptyEnd();
  let device;
  try {
    device = await ptyEnd();
  } catch (e) {
    await host.transport.close();
    await host.dispose?.();
    throw e;
  }
  const relay = joinCable(host, device, { baud, ...(noise ? { noise } : {}) });
  const noisy = noise && noise.rate > 0 ? `, noise ${noise.rate * 100}% seed ${noise.seed}` : '';
  return {
    host: host.path,
    device: device.path,
    description: `pty ${host.path} <-> relay paced at ${baud} baud${noisy} <-> pty ${device.path}`,
    close: () => relay.close(),
  };
}

/** True when lrzsz's sz and rz run here. */
export function lrzszAvailable(): boolean {
  return ['sz', 'rz'].every((cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore', timeout: 5000 }).status === 0);
}

export const LRZSZ_MISSING = 'lrzsz (sz/rz) is not installed: no ZMODEM comparison (Debian/Ubuntu: apt-get install lrzsz)';

/** Run `cmd args` with stdin and stdout on the pty `path`; resolves with its exit code. */
function onPty(cmd: string, args: string[], path: string, cwd: string): { pid: number; done: Promise<number | null>; stderr: () => string } {
  const fd = openSync(path, 'r+');
  const child = spawn(cmd, args, { cwd, stdio: [fd, fd, 'pipe'] });
  closeSync(fd);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const done = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  return { pid: child.pid!, done, stderr: () => err };
}

export interface ZmodemRun {
  bytes: number;
  seconds: number;
}

/** `sz -b -8 FILE` at the host end and `rz -b -y` at the device end: spawn of sz to both exited; the file must arrive intact. */
export async function zmodemTransfer(cable: Cable, file: string): Promise<ZmodemRun> {
  const into = mkdtempSync(join(tmpdir(), 'qkt-bench-rz-'));
  try {
    // Now and then ZMODEM's opening exchange is lost on a fresh socat pty (a plain pair as well as
    // this relay) and sz/rz wait 30 s before trying again: the bench reports the median of its runs.
    const t0 = performance.now();
    const sz = onPty('sz', ['-b', '-8', file], cable.host, into);
    const rz = onPty('rz', ['-b', '-y'], cable.device, into);
    const timer = setTimeout(() => {
      for (const p of [sz.pid, rz.pid]) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }, 300_000);
    const [szCode, rzCode] = await Promise.all([sz.done, rz.done]).finally(() => clearTimeout(timer));
    const seconds = (performance.now() - t0) / 1000;
    if (szCode !== 0 || rzCode !== 0) throw new Error(`ZMODEM transfer failed: sz exit ${szCode}, rz exit ${rzCode}: ${sz.stderr().slice(-200)} ${rz.stderr().slice(-200)}`);
    const got = readdirSync(into);
    const original = readFileSync(file);
    if (got.length !== 1 || !readFileSync(join(into, got[0]!)).equals(original)) throw new Error('ZMODEM transfer: the received file differs from the sent one');
    return { bytes: original.length, seconds };
  } finally {
    rmSync(into, { recursive: true, force: true });
  }
}

/** A KMD home with terminal T1 enrolled and a carrier holding a batch of `bits` for it, made with the CLI. */
export interface InjectFixture {
  dir: string;
  image: string;
  carrier: string;
  batchFile: string;
  sealedBytes: number;
  close(): void;
}

function qktSync(args: string[]): string {
  const r = spawnSync(process.execPath, [qktBin(), ...args, '--json'], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`bench setup: qkt ${args.slice(0, 2).join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

export function injectFixture(bits: number): InjectFixture {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-wall-'));
  try {
    const home = join(dir, 'kmd');
    qktSync(['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
    qktSync(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'T1.img')]);
    qktSync(['carrier', 'load', '--home', home, '--carrier', join(dir, 'carrier'), '--terminal', 'T1', '--bits', String(bits), '--init']);
    const name = readdirSync(join(dir, 'carrier', 'batches')).find((f) => f.startsWith('T1-'))!;
    const batchFile = join(dir, 'carrier', 'batches', name);
    return { dir, image: join(dir, 'T1.img'), carrier: join(dir, 'carrier'), batchFile, sealedBytes: statSync(batchFile).size, close: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Pause between the module's "ready" and the inject's spawn. */
export const SETTLE_MS = 1000;

export interface CliInjectRun {
  /** Spawn of `qkt inject` to its exit. */
  wallSeconds: number;
  /** The transfer time `qkt inject` reports itself (BEGIN to COMMIT's answer). */
  transferSeconds: number;
}

/**
 * One `qkt inject` as a user runs it, into a fresh copy of the fixture's module and carrier:
 * `qkt terminal run` on the cable's device end (ready first, not timed), then `qkt inject` on its
 * host end, timed from spawn to exit. `baud` is given to both programs (they pace themselves).
 */
export async function cliInject(fx: InjectFixture, cable: Cable, run: number, baud?: number): Promise<CliInjectRun> {
  const work = join(fx.dir, `run-${run}`);
  mkdirSync(work);
  const image = join(work, 'T1.img');
  const carrier = join(work, 'carrier');
  cpSync(fx.image, image);
  cpSync(fx.carrier, carrier, { recursive: true });
  const bin = qktBin();
  const paceArgs = baud ? ['--baud', String(baud)] : [];
  const term = spawn(process.execPath, [bin, 'terminal', 'run', '--flash', image, '--port', cable.device, ...paceArgs, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const termExit = new Promise<void>((resolve) => term.once('close', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      let err = '';
      term.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
      term.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('"ready"')) resolve();
      });
      term.once('close', (code) => reject(new Error(`qkt terminal run exited ${code}: ${err.trim()}`)));
    });
    // A user starts the inject well after the module is up. Right after "ready" a first request
    // is sometimes lost on a fresh pty (about 1 run in 4 within half a second: a 1.5 s timeout and a
    // retry), which is measured and reported on its own, not folded into these figures.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const t0 = performance.now();
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [bin, 'inject', '--carrier', carrier, '--port', cable.host, ...paceArgs, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.once('error', reject);
      p.once('close', (code) => resolve({ code, stdout, stderr }));
    });
    const wallSeconds = (performance.now() - t0) / 1000;
    if (r.code !== 0) throw new Error(`qkt inject exited ${r.code}: ${r.stderr.trim()}`);
    const doc = JSON.parse(r.stdout) as { seconds: number };
    return { wallSeconds, transferSeconds: doc.seconds };
  } finally {
    if (term.exitCode === null && term.signalCode === null) term.kill('SIGTERM');
    await termExit;
  }
}
