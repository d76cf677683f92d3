// `qkt bench flash`: the key pool on a file-backed default 2 MiB NOR image: mount time, consume
// latency against one fsync, append throughput, write amplification, wear spread, a power-cut sample.

import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_GEOMETRY } from '../../firmware/flash/block-device.js';
import { PowerCutError } from '../../firmware/flash/errors.js';
import { prng } from '../../firmware/flash/faults.js';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { DEFAULT_MAX_KEY_BITS, KeyPool } from '../../firmware/keypool/key-pool.js';

export interface FlashBenchOptions {
  quick?: boolean;
  /** Scratch directory for the image files (created if missing; the bench's files are removed after). */
  dir: string;
}

interface Spread {
  min: number;
  max: number;
  mean: number;
}

export interface FlashBenchResult {
  bench: 'flash';
  date: string;
  node: string;
  quick: boolean;
  geometry: { size: number; sectorSize: number; pageSize: number };
  poolKeyBits: number;
  /** KeyPool.mount of a full 8 Mbit pool on the open file-backed device. */
  mount: { samples: number; medianMs: number; maxMs: number; openImageMs: number };
  /** consume(enc, keyBytes) with its flash record and fsync, against an fsync of one dirty page in the same file. */
  consume: { keyBytes: number; samples: number; medianMs: number; p99Ms: number; fsyncMedianMs: number; ratioToFsync: number };
  /** Staged append of the full pool in chunkBytes writes, each durable (fsync) before the next. */
  append: { bits: number; chunkBytes: number; seconds: number; bitsPerSecond: number };
  /** Flash bytes programmed (plus erased) per key byte stored and consumed, over the file-backed run. */
  writeAmplification: { keyBytes: number; programBytes: number; erasedBytes: number; programRatio: number; totalRatio: number };
  /** Erase counts after fill/consume/recycle cycles of the full pool (memory image). */
  wear: { cycles: number; keyBits: number; dataSectors: Spread; journalSectors: Spread };
  /** Cuts at sampled flash operations of a scenario on the full 8 Mbit pool, each remounted and checked. */
  powerCut: { scenarioOps: number; cutPoints: number; failures: string[] };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : 0;
};
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : 0;
};
const spread = (xs: number[]): Spread => ({
  min: Math.min(...xs),
  max: Math.max(...xs),
  mean: Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 100) / 100,
});
const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;

function keyMaterial(n: number, seed: number): Uint8Array {
  // Deterministic stand-in for QKD key: the bench checks bytes, it does not need secrecy.
  const r = prng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = Math.floor(r() * 4294967296);
    out[i] = v & 0xff;
    if (i + 1 < n) out[i + 1] = (v >>> 8) & 0xff;
    if (i + 2 < n) out[i + 2] = (v >>> 16) & 0xff;
    if (i + 3 < n) out[i + 3] = v >>> 24;
  }
  return out;
}

function fill(pool: KeyPool, batchId: number, seq: number, data: Uint8Array, chunk: number): void {
  const st = pool.stage({ batchId, seq, purpose: 'any', bits: data.length * 8 });
  for (let o = 0; o < data.length; o += chunk) st.write(o, data.subarray(o, Math.min(data.length, o + chunk)));
  st.commit();
}

export async function benchFlash(opts: FlashBenchOptions): Promise<FlashBenchResult> {
  const quick = opts.quick ?? false;
  mkdirSync(opts.dir, { recursive: true });
  const path = join(opts.dir, `qkt-bench-flash-${process.pid}.img`);
  const cleanup = () => {
    rmSync(path, { force: true });
    rmSync(`${path}.wear`, { force: true });
  };
  cleanup();
  const geometry = { ...DEFAULT_GEOMETRY };
  const poolBytes = DEFAULT_MAX_KEY_BITS / 8;
  const chunk = 4096;
  const keyBytes = 32;
  try {
    // --- append throughput: stage the whole 8 Mbit pool in 4 KiB durable writes
    let flash = NorFlash.open(path, geometry);
    let pool = KeyPool.format(flash);
    flash.resetStats();
    const data = keyMaterial(poolBytes, 1);
    const ta = performance.now();
    fill(pool, 1, 1, data, chunk);
    const appendSeconds = (performance.now() - ta) / 1000;

    const fillStats = { ...flash.stats };
    // --- mount of the full pool (device open once; mount is what boots do)
    flash.close();
    const to = performance.now();
    flash = NorFlash.open(path, geometry);
    const openImageMs = performance.now() - to;
    const mounts: number[] = [];
    for (let i = 0; i < (quick ? 5 : 15); i++) {
      const t0 = performance.now();
      pool = KeyPool.mount(flash);
      mounts.push(performance.now() - t0);
    }

    // --- consume latency vs fsync of one dirty page, interleaved so both see the same disk load
    const n = quick ? 200 : 2000;
    const consumes: number[] = [];
    const fsyncs: number[] = [];
    const probeSector = 3; // last sector of the secure area, which the pool never touches
    flash.erase(probeSector);
    let probe = 0;
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      pool.consume('enc', keyBytes);
      consumes.push(performance.now() - t0);
      if (i % 2 === 0) {
        flash.program(probeSector * geometry.sectorSize + (probe++ % geometry.sectorSize), Uint8Array.of(0));
        if (probe % geometry.sectorSize === 0) flash.erase(probeSector);
        const t1 = performance.now();
        flash.sync();
        fsyncs.push(performance.now() - t1);
      }
    }
    const consumedBytes = n * keyBytes;
    const st = flash.stats;
    const probeBytes = probe;
    const wa = {
      keyBytes: poolBytes + consumedBytes,
      programBytes: fillStats.programBytes + st.programBytes - probeBytes,
      // the probe sector's erases are the bench's, not the pool's
      erasedBytes: (fillStats.erases + st.erases - 1 - Math.floor(probe / geometry.sectorSize)) * geometry.sectorSize,
    };
    flash.close();

    // --- wear spread: full fill / consume / recycle cycles in memory
    const cycles = quick ? 3 : 12;
    const mem = NorFlash.memory(geometry);
    let mpool = KeyPool.format(mem);
    const wearKey = 256;
    for (let c = 0; c < cycles; c++) {
      fill(mpool, 100 + c, 100 + c, keyMaterial(poolBytes, 100 + c), chunk);
      while (mpool.status().storedKeyBits >= wearKey * 8) mpool.consume('enc', wearKey);
      mpool.maintain();
      if (c % 4 === 3) mpool = KeyPool.mount(mem);
    }
    const counts = [...mem.eraseCounts()];
    const dataSectors = spread(counts.slice(4 + 8));
    const journalSectors = spread(counts.slice(4, 4 + 8));

    const powerCut = sweepFullPool(quick ? 40 : 300);
    return {
      bench: 'flash',
      date: new Date().toISOString(),
      node: process.version,
      quick,
      geometry,
      poolKeyBits: DEFAULT_MAX_KEY_BITS,
      mount: { samples: mounts.length, medianMs: round(median(mounts)), maxMs: round(Math.max(...mounts)), openImageMs: round(openImageMs) },
      consume: {
        keyBytes,
        samples: n,
        medianMs: round(median(consumes)),
        p99Ms: round(pct(consumes, 99)),
        fsyncMedianMs: round(median(fsyncs)),
        ratioToFsync: round(median(consumes) / median(fsyncs), 2),
      },
      append: { bits: poolBytes * 8, chunkBytes: chunk, seconds: round(appendSeconds), bitsPerSecond: Math.round((poolBytes * 8) / appendSeconds) },
      writeAmplification: {
        ...wa,
        programRatio: round(wa.programBytes / wa.keyBytes, 3),
        totalRatio: round((wa.programBytes + wa.erasedBytes) / wa.keyBytes, 3),
      },
      wear: { cycles, keyBits: cycles * DEFAULT_MAX_KEY_BITS, dataSectors, journalSectors },
      powerCut,
    };
  } finally {
    cleanup();
  }
}

/**
 * Power cuts on the full-size pool: a scenario (format, inject 8 Mbit, consume, stage a second
 * batch, commit, consume) replayed from scratch and cut at `samples` operations spread evenly
 * over it (modes rotating clean/after/torn). After each cut: remount (never NOT_FORMATTED once
 * formatted), then keys served before the cut are never served again, the next key is the
 * injected one, and the staged batch resumes at its durable offset.
 */
function sweepFullPool(samples: number): FlashBenchResult['powerCut'] {
  const geometry = DEFAULT_GEOMETRY;
  const A = keyMaterial(DEFAULT_MAX_KEY_BITS / 8, 7);
  const B = keyMaterial(256 * 1024, 8);
  const run = (flash: NorFlash, served: { a: number }) => {
    let pool = KeyPool.format(flash);
    fill(pool, 1, 1, A, 4096);
    for (let i = 0; i < 300; i++) served.a = (pool.consume('enc', 1024).keyId.bitOffset / 8) + 1024;
    const st = pool.stage({ batchId: 2, seq: 2, purpose: 'any', bits: B.length * 8 });
    for (let o = 0; o < B.length; o += 4096) st.write(o, B.subarray(o, o + 4096));
    pool = KeyPool.mount(flash);
    pool.staging()!.commit();
    for (let i = 0; i < 300; i++) served.a = (pool.consume('enc', 1024).keyId.bitOffset / 8) + 1024;
  };
  const ref = NorFlash.memory(geometry);
  run(ref, { a: 0 });
  const total = ref.faults.mutations;
  const failures: string[] = [];
  const modes = ['clean', 'after', 'torn'] as const;
  let cuts = 0;
  for (let k = 0; k < samples; k++) {
    const at = 1 + Math.floor(((k + 0.5) * total) / samples);
    const flash = NorFlash.memory(geometry);
    const served = { a: 0 };
    flash.faults.cutAfter(at, modes[k % 3], k + 1);
    try {
      run(flash, served);
      failures.push(`op ${at}: cut not reached`);
      continue;
    } catch (e) {
      if (!(e instanceof PowerCutError)) {
        failures.push(`op ${at}: ${(e as Error).name} ${(e as Error).message}`);
        continue;
      }
    }
    cuts++;
    flash.reboot();
    try {
      const pool = KeyPool.mount(flash);
      const s = pool.status();
      const a = s.batches.find((b) => b.batchId === 1);
      if (a) {
        if (a.consumedBits / 8 < served.a) failures.push(`op ${at}: batch 1 frontier went back`);
        const k = pool.consumeById({ batchId: 1, bitOffset: a.consumedBits }, 64);
        const off = k.keyId.bitOffset / 8;
        if (!k.key.every((b, i) => b === A[off + i])) failures.push(`op ${at}: key after recovery differs from injected`);
      }
      const stg = pool.staging();
      if (stg) {
        const src = stg.batchId === 1 ? A : B;
        const off = stg.durableOffset;
        for (let o = off; o < src.length; o += 65536) stg.write(o, src.subarray(o, Math.min(src.length, o + 65536)));
        stg.commit();
        const got = pool.consumeById({ batchId: stg.batchId, bitOffset: 0 }, 64);
        if (!got.key.every((b, i) => b === src[i])) failures.push(`op ${at}: resumed batch differs`);
      }
    } catch (e) {
      // Only a cut inside the initial format may leave no pool.
      if (!(e instanceof PoolError && e.code === 'NOT_FORMATTED' && at <= 600)) failures.push(`op ${at}: ${(e as Error).name} ${(e as Error).message}`);
    }
  }
  return { scenarioOps: total, cutPoints: cuts, failures: failures.slice(0, 20) };
}

export function formatFlashBenchMarkdown(r: FlashBenchResult): string {
  const g = r.geometry;
  const rows: Array<[string, string]> = [
    ['flash', `${g.size / 1048576} MiB file image, ${g.sectorSize} B sectors, ${g.pageSize} B pages`],
    ['pool', `${r.poolKeyBits.toLocaleString('en')} bits (8 Mbit)`],
    ['mount, full pool (median of ' + r.mount.samples + ')', `${r.mount.medianMs} ms (max ${r.mount.maxMs} ms; image open ${r.mount.openImageMs} ms)`],
    [`consume ${r.consume.keyBytes} B, durable (median / p99)`, `${r.consume.medianMs} ms / ${r.consume.p99Ms} ms`],
    ['fsync of one dirty page (median)', `${r.consume.fsyncMedianMs} ms`],
    ['consume / fsync', `${r.consume.ratioToFsync}x`],
    [`append (${r.append.chunkBytes} B durable writes)`, `${Math.round(r.append.bitsPerSecond).toLocaleString('en')} bit/s (${r.append.seconds} s for ${r.append.bits.toLocaleString('en')} bits)`],
    ['write amplification (programmed / key bytes)', `${r.writeAmplification.programRatio} (with erases: ${r.writeAmplification.totalRatio})`],
    [`erase counts after ${r.wear.cycles} full cycles: data sectors`, `min ${r.wear.dataSectors.min}, max ${r.wear.dataSectors.max}, mean ${r.wear.dataSectors.mean}`],
    ['erase counts: journal sectors', `min ${r.wear.journalSectors.min}, max ${r.wear.journalSectors.max}, mean ${r.wear.journalSectors.mean}`],
    ['power cuts on the full pool', `${r.powerCut.cutPoints} cut points over ${r.powerCut.scenarioOps.toLocaleString('en')} ops, ${r.powerCut.failures.length} failures`],
  ];
  return [
    `## flash${r.quick ? ' (quick)' : ''}: ${r.date}, node ${r.node}`,
    '',
    '| measure | result |',
    '|---|---|',
    ...rows.map(([a, b]) => `| ${a} | ${b} |`),
    '',
  ].join('\n');
}
