// `qkt bench inject`: a full 8 Mbit sealed batch injected into a module whose flash is a file
// image (so every chunk is made durable with a real fsync), over a socat pty pair, unpaced and
// paced at 921600 baud. Reports the transfer's time and goodput as a fraction of the line rate;
// then the same as a user sees it, wall clock from `qkt inject`'s spawn to its exit, and a ZMODEM
// transfer (lrzsz) of the same sealed bytes over the same paced cable, as a ratio (wall-clock.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { createTerminal } from '../../firmware/terminal.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import { injectBatch } from '../link/inject.js';
import { openLinkRig } from './link-rig.js';
import type { RigTransport } from './link-rig.js';
import { cliInject, injectFixture, lrzszAvailable, LRZSZ_MISSING, pacedCable, ptyCable, zmodemTransfer } from './wall-clock.js';
import type { Cable } from './wall-clock.js';

export interface InjectBenchCase {
  name: string;
  transport: RigTransport;
  baud: number | null;
  keyBits: number;
  sealedBytes: number;
  seconds: number;
  /** Key bits per second delivered into the pool. */
  keyBitsPerSecond: number;
  /** Sealed bytes / (seconds * baud/10): how full the line was. */
  lineRateFraction: number | null;
  /** Key bytes / (seconds * baud/10): the same, counting only key material. */
  keyLineRateFraction: number | null;
  restarts: number;
}

/** `qkt inject` as a user runs it: spawn to exit, median of `runs`. */
export interface WallClockCase {
  name: string;
  /** How the line rate is made: none, a pacing relay between two pty pairs, or both programs given --baud. */
  cable: 'pty' | 'relay' | 'both-ends';
  baud: number | null;
  sealedBytes: number;
  runs: number;
  /** Median spawn-to-exit time and the transfer time `qkt inject` reported in that run. */
  wallSeconds: number;
  transferSeconds: number;
  /** wallSeconds - transferSeconds: start, handshake, status, receipt, exit. */
  overheadSeconds: number;
  /** Sealed bytes / wall time / (baud/10). */
  wallLineRateFraction: number | null;
  transferLineRateFraction: number | null;
  allWallSeconds: number[];
}

export interface ZmodemCase {
  name: string;
  baud: number;
  bytes: number;
  runs: number;
  /** Median spawn of sz to both sz and rz exited. */
  seconds: number;
  lineRateFraction: number;
  allSeconds: number[];
}

export interface InjectBenchResult {
  bench: 'inject';
  date: string;
  node: string;
  cases: InjectBenchCase[];
  wallClock?: WallClockCase[];
  /** The ZMODEM run on the relay cable, or why there is none. */
  zmodem?: ZmodemCase | { missing: string };
  /** qkt's wall-clock goodput over ZMODEM's, same bytes, same paced cable, same run. */
  qktOverZmodem?: number | null;
}

export async function benchInjectCase(transport: RigTransport, baud: number | null, bits: number): Promise<InjectBenchCase> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-inject-'));
  const flash = NorFlash.open(join(dir, 'module.img'));
  try {
    const deviceKey = new Uint8Array(randomBytes(32));
    enrollFlash(flash, { terminalId: 'B1', deviceKey });
    const sealed = sealBatch({
      deviceKey,
      header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'B1', seq: 1, purpose: 'any', bits, chunkSize: 4096, createdAt: Date.now() },
      keys: new Uint8Array(randomBytes(bits / 8)),
    });
    const rig = await openLinkRig(transport, baud ?? undefined, createTerminal({ flash }));
    try {
      const t0 = performance.now();
      const r = await injectBatch(rig.session.client, rig.session.params, sealed);
      const seconds = (performance.now() - t0) / 1000;
      const stored = rig.terminal.status()['pool'] as { storedKeyBits: number };
      if (stored.storedKeyBits !== bits) throw new Error(`bench injection stored ${stored.storedKeyBits} bits, expected ${bits}`);
      const line = baud ? baud / 10 : null;
      return {
        name: `${transport}${baud ? ` @${baud}` : ' unpaced'}`,
        transport,
        baud,
        keyBits: bits,
        sealedBytes: sealed.length,
        seconds: Math.round(seconds * 1e4) / 1e4,
        keyBitsPerSecond: Math.round(bits / seconds),
        lineRateFraction: line ? Math.round((sealed.length / seconds / line) * 1e4) / 1e4 : null,
        keyLineRateFraction: line ? Math.round((bits / 8 / seconds / line) * 1e4) / 1e4 : null,
        restarts: r.restarts,
      };
    } finally {
      await rig.close();
    }
  } finally {
    flash.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

export async function benchInject(o: { bits?: number; bauds?: number[]; transport?: RigTransport; wallClock?: boolean; runs?: number; log?: (s: string) => void } = {}): Promise<InjectBenchResult> {
  const bits = o.bits ?? 2 ** 23;
  const cases: InjectBenchCase[] = [];
  for (const baud of [null, ...(o.bauds ?? [921_600])]) {
    o.log?.(`inject: ${bits} key bits over ${o.transport ?? 'pty'}${baud ? ` paced at ${baud} baud` : ' unpaced'}...`);
    cases.push(await benchInjectCase(o.transport ?? 'pty', baud, bits));
  }
  const result: InjectBenchResult = { bench: 'inject', date: new Date().toISOString(), node: process.version, cases };
  if (o.wallClock === false) return result;
  const runs = o.runs ?? 3;
  const baud = o.bauds?.[0] ?? 921_600;
  const fx = injectFixture(bits);
  try {
    const wall: WallClockCase[] = [];
    const zmodem = lrzszAvailable() ? [] as number[] : undefined;
    if (!zmodem) o.log?.(`inject: ${LRZSZ_MISSING}`);
    const kinds: Array<{ cable: WallClockCase['cable']; name: string; open: () => Promise<Cable>; progBaud?: number; line: number | null }> = [
      { cable: 'pty', name: 'qkt inject, pty unpaced', open: ptyCable, line: null },
      { cable: 'relay', name: `qkt inject, cable paced at ${baud} (relay)`, open: () => pacedCable(baud), line: baud },
      { cable: 'both-ends', name: `qkt inject --baud ${baud}, terminal run --baud ${baud}, pty`, open: ptyCable, progBaud: baud, line: baud },
    ];
    const runsOf = kinds.map(() => [] as Array<{ wallSeconds: number; transferSeconds: number }>);
    let n = 0;
    // Interleaved rounds: a burst of load on the shared machine hits every case alike.
    for (let round = 0; round < runs; round++) {
      for (const [i, k] of kinds.entries()) {
        o.log?.(`inject: wall clock, ${k.name}, run ${round + 1}/${runs}...`);
        const cable = await k.open();
        try {
          runsOf[i]!.push(await cliInject(fx, cable, n++, k.progBaud));
          if (zmodem && k.cable === 'relay') {
            o.log?.(`inject: ZMODEM (sz/rz) of the same ${fx.sealedBytes} bytes on the same cable, run ${round + 1}/${runs}...`);
            zmodem.push((await zmodemTransfer(cable, fx.batchFile)).seconds);
          }
        } finally {
          await cable.close();
        }
      }
    }
    for (const [i, k] of kinds.entries()) {
      const rs = runsOf[i]!;
      const wallSeconds = median(rs.map((r) => r.wallSeconds));
      const transferSeconds = median(rs.map((r) => r.transferSeconds));
      const line = k.line ? k.line / 10 : null;
      wall.push({
        name: k.name,
        cable: k.cable,
        baud: k.line,
        sealedBytes: fx.sealedBytes,
        runs: rs.length,
        wallSeconds: r4(wallSeconds),
        transferSeconds: r4(transferSeconds),
        overheadSeconds: r4(wallSeconds - transferSeconds),
        wallLineRateFraction: line ? r4(fx.sealedBytes / wallSeconds / line) : null,
        transferLineRateFraction: line ? r4(fx.sealedBytes / transferSeconds / line) : null,
        allWallSeconds: rs.map((r) => r4(r.wallSeconds)),
      });
    }
    result.wallClock = wall;
    if (zmodem) {
      const seconds = median(zmodem);
      result.zmodem = { name: `sz -b -8 / rz -b -y, cable paced at ${baud} (relay)`, baud, bytes: fx.sealedBytes, runs: zmodem.length, seconds: r4(seconds), lineRateFraction: r4(fx.sealedBytes / seconds / (baud / 10)), allSeconds: zmodem.map(r4) };
      const relay = wall.find((w) => w.cable === 'relay')!;
      result.qktOverZmodem = r4(seconds / relay.wallSeconds);
    } else {
      result.zmodem = { missing: LRZSZ_MISSING };
      result.qktOverZmodem = null;
    }
  } finally {
    fx.close();
  }
  return result;
}

export function formatInjectBench(r: InjectBenchResult): string {
  return [
    `### Batch injection (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    'Module flash is a file image: each 4 KiB chunk is verified (AES-256-GCM), staged and fsynced; the batch is committed atomically.',
    '',
    '| case | key bits | sealed bytes | seconds | key bits/s | sealed / line rate | key / line rate | restarts |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...r.cases.map((c) => `| ${c.name} | ${c.keyBits} | ${c.sealedBytes} | ${c.seconds} | ${c.keyBitsPerSecond} | ${c.lineRateFraction ?? '-'} | ${c.keyLineRateFraction ?? '-'} | ${c.restarts} |`),
    ...(r.wallClock
      ? [
          '',
          `#### As a user runs it: \`qkt inject\` spawned against \`qkt terminal run\`, spawn to exit (median of ${r.wallClock[0]?.runs ?? 0})`,
          '',
          'Transfer = the time `qkt inject` reports (BEGIN to COMMIT answered); overhead = wall - transfer (node start, module loading, port open, PARAMS, STATUS, receipt, exit). Line-rate fractions count sealed bytes.',
          '',
          '| case | sealed bytes | wall s | transfer s | overhead s | wall / line rate | transfer / line rate | all wall s |',
          '|---|---:|---:|---:|---:|---:|---:|---|',
          ...r.wallClock.map((w) => `| ${w.name} | ${w.sealedBytes} | ${w.wallSeconds} | ${w.transferSeconds} | ${w.overheadSeconds} | ${w.wallLineRateFraction ?? '-'} | ${w.transferLineRateFraction ?? '-'} | ${w.allWallSeconds.join(', ')} |`),
          '',
          r.zmodem && 'missing' in r.zmodem
            ? `ZMODEM: ${r.zmodem.missing}.`
            : r.zmodem
              ? `ZMODEM on the same paced cable, same bytes, same run (${r.zmodem.name}): ${r.zmodem.seconds} s median of ${r.zmodem.runs} (${r.zmodem.allSeconds.join(', ')}), ${r.zmodem.lineRateFraction} of the line rate. **qkt wall-clock goodput / ZMODEM goodput: ${r.qktOverZmodem}**.`
              : '',
        ]
      : []),
  ].join('\n');
}
