// `qkt bench noise`: the link on a noisy line, as a user meets it. For each noise rate (the relay
// of transports/cable.ts: a bit flipped in R of bytes, R/2 dropped, a garbage byte inserted at
// R/10, both ways) on a cable paced at 115200 baud: one `qkt inject` of a sealed batch against a
// `qkt terminal run`, spawn to exit, then a check on the module's flash that the pool holds the
// batch exactly once; then ZMODEM (lrzsz) of the same sealed bytes on a new cable of the same rate
// and seed. Every run is bounded by a timeout and reports how it ended instead of throwing, so a
// link that gives up (or a ZMODEM that hangs) is a row in the table, not a crashed bench.
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { CableStats } from '../transports/cable.js';
import { injectFixture, lrzszAvailable, LRZSZ_MISSING, pacedCable, runCliInject, zmodemRun } from './wall-clock.js';
import type { Cable, CliInjectOutcome, InjectFixture } from './wall-clock.js';

/** 0 (clean), 0.01%, 0.1%, 1%, 5%: the rates of issue 11's "Must show". */
export const NOISE_RATES: readonly number[] = [0, 0.0001, 0.001, 0.01, 0.05];

export interface NoiseBenchOptions {
  /** Key bits in the batch (default 8 Mbit). */
  bits?: number;
  /** Fractions of bytes (0.001 = 0.1%); a clean run (0) is always made first, for the ratios. */
  rates?: readonly number[];
  seed?: number;
  baud?: number;
  /** A fixed bound on every run, in seconds; default max(factor x the clean run, floor). */
  timeoutSeconds?: number;
  /** A fixed bound on every ZMODEM run, in seconds; default as `timeoutSeconds`. */
  zmodemTimeoutSeconds?: number;
  timeoutFactor?: number;
  timeoutFloorSeconds?: number;
  /** false: no ZMODEM runs (reported as skipped, with the reason). Default: run when lrzsz is here. */
  zmodem?: boolean;
  log?: (line: string) => void;
}

/** What the module's flash holds after a run, read in-process from its image (the terminal has exited). */
export interface PoolCheck {
  storedBitsBefore: number;
  storedBitsAfter: number;
  /** Committed batches with this batch's id. */
  copies: number;
  /** One copy, and the stored bits grew by exactly the batch. */
  exactlyOnce: boolean;
  /** Bits of this batch staged durably but not committed (a transfer that stopped part way), or 0. */
  stagedDurableBits: number;
}

export type Outcome = 'ok' | 'failed' | 'timed out';

export interface QktNoiseRun {
  outcome: Outcome;
  exitCode: number | null;
  /** Spawn of `qkt inject` to its exit. */
  wallSeconds: number;
  /** Key bits / wall seconds; null unless ok. */
  goodputBitsPerSecond: number | null;
  /** Goodput over the clean run's; null unless both ok. */
  ratioToClean: number | null;
  /** `qkt inject --json`'s own transfer time and resumes (ok runs only: under --json the notes of a lost and resumed transfer are silent). */
  transferSeconds: number | null;
  resumes: number | null;
  /** The failing run's last stderr line. */
  error?: string;
  pool: PoolCheck;
  relay: CableStats;
}

export type ZmodemNoiseRun =
  | {
      outcome: Outcome;
      /** Spawn of sz to sz's exit (the sender's view, as `qkt inject`'s spawn to exit). */
      seconds: number;
      /** Spawn of sz to both exited: rz sometimes waits for sz's last bytes, and is stopped 2 s after sz if its file is whole (wall-clock.ts). */
      bothExitedSeconds: number;
      rzStopped: boolean;
      /** Key bits / seconds (the same numerator as qkt's); null unless ok. */
      goodputBitsPerSecond: number | null;
      ratioToClean: number | null;
      szCode: number | null;
      rzCode: number | null;
      error?: string;
      relay: CableStats;
    }
  | { outcome: 'skipped'; reason: string };

export interface NoiseRateCase {
  /** Fraction of bytes with a bit flipped (drops rate/2, inserts rate/10). */
  rate: number;
  /** Bound on each run of this rate, seconds. */
  timeoutSeconds: { qkt: number; zmodem: number | null };
  qkt: QktNoiseRun;
  zmodem: ZmodemNoiseRun;
  /** qkt goodput / ZMODEM goodput at this rate; null unless both ok. */
  qktOverZmodem: number | null;
}

export interface NoiseBenchResult {
  bench: 'noise';
  date: string;
  node: string;
  machine: { cpu: string; cores: number; loadAverageBefore: number[]; loadAverageAfter: number[] };
  baud: number;
  seed: number;
  keyBits: number;
  sealedBytes: number;
  /** Sealed bytes at baud/10 bytes a second: the clean floor of either tool. */
  lineSeconds: number;
  batchId: string;
  cases: NoiseRateCase[];
}

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

/** Run the noise bench; never throws for a run that fails, only for a setup that does. */
export async function benchNoise(o: NoiseBenchOptions = {}): Promise<NoiseBenchResult> {
  const bits = o.bits ?? 2 ** 23;
  const baud = o.baud ?? 115_200;
  const seed = (o.seed ?? 1) >>> 0;
  const rates = [0, ...(o.rates ?? NOISE_RATES).filter((r) => r !== 0)];
  for (const r of rates) if (!(r >= 0 && r <= 1)) throw new RangeError(`noise rate must be a fraction from 0 to 1, got ${r}`);
  const factor = o.timeoutFactor ?? 20;
  const floor = o.timeoutFloorSeconds ?? 300;
  const zmodemMissing = o.zmodem === false ? 'ZMODEM not asked for' : lrzszAvailable() ? undefined : LRZSZ_MISSING;
  const loadBefore = loadavg().map((x) => r4(x));
  const log = o.log ?? (() => undefined);

  log(`noise: making a KMD, a module image and a carrier with a ${bits}-bit batch...`);
  const fx = injectFixture(bits);
  try {
    const sealed = readFileSync(fx.batchFile);
    const header = parseSealedHeader(new Uint8Array(sealed)).header;
    const batchId = Buffer.from(header.batchId).toString('hex');
    const before = poolOnCopy(fx);
    const lineSeconds = fx.sealedBytes / (baud / 10);
    // Before the clean run there is nothing to scale: the line time stands in for it.
    const bound = (clean: number | undefined) => o.timeoutSeconds ?? Math.max(factor * (clean ?? lineSeconds), floor);
    let cleanQkt: QktNoiseRun | undefined;
    let cleanZ: Extract<ZmodemNoiseRun, { seconds: number }> | undefined;
    const cases: NoiseRateCase[] = [];
    for (const [i, rate] of rates.entries()) {
      const noise = { rate, seed };
      const qktTimeout = bound(cleanQkt?.outcome === 'ok' ? cleanQkt.wallSeconds : undefined);
      log(`noise ${pct(rate)}: qkt inject of ${fx.sealedBytes} sealed bytes at ${baud} baud, seed ${seed} (bound ${Math.round(qktTimeout)} s)...`);
      const q = await qktRun(fx, await pacedCable(baud, noise), i, qktTimeout, bits, batchId, before);
      if (rate === 0) cleanQkt = q;
      q.ratioToClean = q.goodputBitsPerSecond !== null && cleanQkt?.goodputBitsPerSecond ? r4(q.goodputBitsPerSecond / cleanQkt.goodputBitsPerSecond) : null;
      log(`noise ${pct(rate)}: qkt ${q.outcome} in ${q.wallSeconds} s${q.error ? `: ${q.error}` : ''}; pool exactly once: ${q.pool.exactlyOnce}`);

      let z: ZmodemNoiseRun;
      let zTimeout: number | null = null;
      if (zmodemMissing) z = { outcome: 'skipped', reason: zmodemMissing };
      else {
        zTimeout = o.zmodemTimeoutSeconds ?? bound(cleanZ?.outcome === 'ok' ? cleanZ.seconds : undefined);
        log(`noise ${pct(rate)}: ZMODEM (sz/rz) of the same bytes on a new cable, same rate and seed (bound ${Math.round(zTimeout)} s)...`);
        const zr = await zmodemNoiseRun(await pacedCable(baud, noise), fx.batchFile, zTimeout, bits);
        if (rate === 0) cleanZ = zr;
        zr.ratioToClean = zr.goodputBitsPerSecond !== null && cleanZ?.goodputBitsPerSecond ? r4(zr.goodputBitsPerSecond / cleanZ.goodputBitsPerSecond) : null;
        log(`noise ${pct(rate)}: ZMODEM ${zr.outcome} in ${zr.seconds} s${zr.error ? `: ${zr.error}` : ''}`);
        z = zr;
      }
      const zGood = 'goodputBitsPerSecond' in z ? z.goodputBitsPerSecond : null;
      cases.push({
        rate,
        timeoutSeconds: { qkt: Math.round(qktTimeout), zmodem: zTimeout === null ? null : Math.round(zTimeout) },
        qkt: q,
        zmodem: z,
        qktOverZmodem: q.goodputBitsPerSecond !== null && zGood ? r4(q.goodputBitsPerSecond / zGood) : null,
      });
    }
    return {
      bench: 'noise',
      date: new Date().toISOString(),
      node: process.version,
      machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, loadAverageBefore: loadBefore, loadAverageAfter: loadavg().map((x) => r4(x)) },
      baud,
      seed,
      keyBits: bits,
      sealedBytes: fx.sealedBytes,
      lineSeconds: r4(lineSeconds),
      batchId,
      cases,
    };
  } finally {
    fx.close();
  }
}

/** One inject on `cable` (closed here), its outcome and the pool check on its image. */
async function qktRun(fx: InjectFixture, cable: Cable, run: number, timeoutSeconds: number, bits: number, batchId: string, before: PoolView): Promise<QktNoiseRun> {
  let r: CliInjectOutcome;
  let relay: CableStats;
  try {
    r = await runCliInject(fx, cable, run, { timeoutMs: timeoutSeconds * 1000 });
  } finally {
    relay = snapshot(cable.stats);
    await cable.close();
  }
  const after = poolOnImage(r.image);
  const copies = after.batches.filter((b) => b.batchId === batchId).length;
  const pool: PoolCheck = {
    storedBitsBefore: before.storedKeyBits,
    storedBitsAfter: after.storedKeyBits,
    copies,
    exactlyOnce: copies === 1 && after.storedKeyBits - before.storedKeyBits === bits,
    // STATUS names a staging batch by its pool id, the first 4 bytes of the batch id (8 hex digits).
    stagedDurableBits: after.staging && after.staging.batchId.length >= 8 && batchId.startsWith(after.staging.batchId) ? after.staging.durableBits : 0,
  };
  const lines = r.stderr.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const outcome: Outcome = r.timedOut ? 'timed out' : r.code === 0 ? 'ok' : 'failed';
  let doc: { seconds?: unknown; resumes?: unknown } = {};
  if (outcome === 'ok') {
    try {
      doc = JSON.parse(r.stdout) as typeof doc;
    } catch {
      // an ok exit without its JSON document: reported as a note below
    }
  }
  const transferSeconds = typeof doc.seconds === 'number' ? doc.seconds : null;
  const resumes = typeof doc.resumes === 'number' ? doc.resumes : null;
  const wallSeconds = r4(r.wallSeconds);
  return {
    outcome,
    exitCode: r.code,
    wallSeconds,
    goodputBitsPerSecond: outcome === 'ok' ? Math.round(bits / wallSeconds) : null,
    ratioToClean: null,
    transferSeconds,
    resumes,
    ...(outcome === 'ok' ? {} : { error: r.timedOut ? `stopped by the bench after ${Math.round(timeoutSeconds)} s${lines.length ? `; its last line: ${lines[lines.length - 1]}` : ''}` : (lines[lines.length - 1] ?? `exit ${r.code}, nothing on stderr`) }),
    pool,
    relay,
  };
}

async function zmodemNoiseRun(cable: Cable, file: string, timeoutSeconds: number, bits: number): Promise<Extract<ZmodemNoiseRun, { seconds: number }>> {
  let relay: CableStats;
  let z;
  try {
    z = await zmodemRun(cable, file, { timeoutMs: timeoutSeconds * 1000, stopReceiverWhenDone: true });
  } finally {
    relay = snapshot(cable.stats);
    await cable.close();
  }
  const seconds = r4(z.senderSeconds);
  return {
    outcome: z.outcome,
    seconds,
    bothExitedSeconds: r4(z.seconds),
    goodputBitsPerSecond: z.outcome === 'ok' ? Math.round(bits / seconds) : null,
    ratioToClean: null,
    szCode: z.szCode,
    rzCode: z.rzCode,
    rzStopped: z.rzStopped,
    ...(z.error ? { error: z.error } : {}),
    relay,
  };
}

const zero = () => ({ bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 });
function snapshot(s: Readonly<CableStats> | undefined): CableStats {
  return { aToB: { ...(s?.aToB ?? zero()) }, bToA: { ...(s?.bToA ?? zero()) } };
}

/** The pool part of STATUS, as read back from an image. */
interface PoolView {
  storedKeyBits: number;
  batches: Array<{ batchId: string; bits: number }>;
  staging: { batchId: string; durableBits: number } | null;
}

/** The module's pool as its STATUS would give it, from the image file (mounted in this process). */
function poolOnImage(image: string): PoolView {
  const flash = NorFlash.open(image);
  try {
    return checkPool(createTerminal({ flash }).status()['pool'], image);
  } finally {
    flash.close();
  }
}

/** The fixture's pool before any inject, read from a scratch copy (the mount may write). */
function poolOnCopy(fx: InjectFixture): PoolView {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-noise-'));
  try {
    cpSync(fx.image, join(dir, 'T1.img'));
    return poolOnImage(join(dir, 'T1.img'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function checkPool(p: unknown, image: string): PoolView {
  const bad = (what: string) => new Error(`bench noise: the pool status of ${image} has no ${what}`);
  if (typeof p !== 'object' || p === null) throw bad('pool');
  const o = p as Record<string, unknown>;
  if (typeof o['storedKeyBits'] !== 'number') throw bad('storedKeyBits');
  if (!Array.isArray(o['batches'])) throw bad('batches');
  const batches = o['batches'].map((b: unknown) => {
    const x = b as Record<string, unknown> | null;
    if (typeof x?.['batchId'] !== 'string' || typeof x['bits'] !== 'number') throw bad('batch id and bits in a batch');
    return { batchId: x['batchId'], bits: x['bits'] };
  });
  const s = o['staging'] as Record<string, unknown> | null | undefined;
  const staging = s && typeof s['batchId'] === 'string' && typeof s['durableBits'] === 'number' ? { batchId: s['batchId'], durableBits: s['durableBits'] } : null;
  return { storedKeyBits: o['storedKeyBits'], batches, staging };
}

/** 0.0001 as `0.01%`, 0 as `0 (clean)`. */
export function pct(rate: number): string {
  return rate === 0 ? '0 (clean)' : `${Number((rate * 100).toPrecision(6))}%`;
}

const kbit = (bps: number | null) => (bps === null ? '-' : (bps / 1000).toFixed(1));
const faults = (s: CableStats) => `${s.aToB.corrupted + s.bToA.corrupted} / ${s.aToB.dropped + s.bToA.dropped} / ${s.aToB.inserted + s.bToA.inserted}`;

function qktSeconds(q: QktNoiseRun): string {
  return q.outcome === 'ok' ? String(q.wallSeconds) : `${q.outcome}${q.exitCode !== null && q.outcome === 'failed' ? ` (exit ${q.exitCode})` : ''} after ${q.wallSeconds}`;
}

function poolText(q: QktNoiseRun, bits: number): string {
  if (q.pool.exactlyOnce) return 'yes';
  const staged = q.pool.stagedDurableBits ? `, ${q.pool.stagedDurableBits} of ${bits} bits staged durably` : '';
  return `no: ${q.pool.copies} copies, +${q.pool.storedBitsAfter - q.pool.storedBitsBefore} bits${staged}`;
}

export function formatNoiseBench(r: NoiseBenchResult): string {
  const rows = r.cases.map((c) => {
    const q = c.qkt;
    const z = c.zmodem;
    const notes = q.resumes !== null ? `${q.resumes} resumes` : '-';
    const zCols = z.outcome === 'skipped' ? ['skipped', '-', '-', '-'] : [z.outcome === 'ok' ? String(z.seconds) : `${z.outcome} after ${z.seconds}`, kbit(z.goodputBitsPerSecond), String(z.ratioToClean ?? '-'), faults(z.relay)];
    return `| ${pct(c.rate)} | ${qktSeconds(q)} | ${kbit(q.goodputBitsPerSecond)} | ${q.ratioToClean ?? '-'} | ${poolText(q, r.keyBits)} | ${notes} | ${faults(q.relay)} | ${zCols.join(' | ')} | ${c.qktOverZmodem ?? '-'} |`;
  });
  const failures = r.cases.flatMap((c) => [
    ...(c.qkt.error ? [`- ${pct(c.rate)}, qkt inject: ${c.qkt.error}`] : []),
    ...(c.zmodem.outcome !== 'skipped' && c.zmodem.error ? [`- ${pct(c.rate)}, ZMODEM: ${c.zmodem.error}`] : []),
  ]);
  const skipped = r.cases.find((c) => c.zmodem.outcome === 'skipped')?.zmodem as { reason: string } | undefined;
  return [
    `### Injection over a noisy line (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    `${r.keyBits} key bits (${r.sealedBytes} sealed bytes, ${r.lineSeconds} s of line time) over a cable paced at ${r.baud} baud (8N1) by the relay of \`qkt link\`, noise seed ${r.seed}: at rate R a bit is flipped in R of the bytes, R/2 are dropped and a random byte is inserted at R/10, both directions. ` +
      `qkt: one \`qkt inject\` spawned against \`qkt terminal run\` (file-backed flash), spawn to exit; the pool is then read from the module's flash (exactly once: one copy of the batch, stored bits grown by exactly the batch). ` +
      `ZMODEM: \`sz -b -8\` / \`rz -b -y\` of the same sealed file on a new cable of the same rate and seed, spawn of sz to its exit (rz must then have the file intact and exit 0; it sometimes waits 30 s for sz's last two bytes, lost at sz's exit, and is then stopped 2 s after sz: \`bothExitedSeconds\`, \`rzStopped\` in the JSON). Goodput is key bits per second for both. Each run is bounded (stopped by pid) by the time in the JSON (\`timeoutSeconds\`).`,
    '',
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, load average ${r.machine.loadAverageBefore.join(' ')} before, ${r.machine.loadAverageAfter.join(' ')} after.`,
    '',
    '| noise | qkt s | qkt kbit/s | qkt / clean | pool exactly once | resumes | qkt relay corrupted / dropped / inserted | ZMODEM s | ZMODEM kbit/s | ZMODEM / clean | ZMODEM relay corrupted / dropped / inserted | qkt / ZMODEM |',
    '|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
    ...(failures.length ? ['', 'How the runs that did not finish ended:', '', ...failures] : []),
    ...(skipped ? ['', `ZMODEM: ${skipped.reason}.`] : []),
  ].join('\n');
}
