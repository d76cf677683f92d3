// Fault injection for the HIL rig: line noise (bit flips, garbage bytes), lost chunks and a cable
// pull after N bytes, deterministic from a seed so a failing run can be replayed exactly.
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';

export type FaultDirection = 'receive' | 'send' | 'both';

export interface FaultOptions {
  noise?: {
    /** Probability that any one bit is flipped, e.g. 1e-5. */
    bitErrorRate: number;
    /** PRNG seed; the same seed and the same chunks give the same faults. Default 1. */
    seed?: number;
    /** Probability, per chunk, of 1-8 random bytes being inserted before it (noise on an idle line). */
    garbageRate?: number;
  };
  /** Probability that a whole chunk is lost (a write that never arrives, a dropped USB packet). */
  dropChunkRate?: number;
  /** Which way the noise and drops hit; default 'receive' (what this end reads is corrupted). */
  direction?: FaultDirection;
  /**
   * Cable pull after this many bytes have crossed in either direction: the byte that reaches the
   * count is the last one through, then the link ends with an error, as if unplugged.
   */
  pullAfterBytes?: number;
}

export interface FaultStats {
  /** Payload bytes that crossed the wrapper, both directions. */
  bytes: number;
  flippedBits: number;
  garbageBytes: number;
  droppedChunks: number;
  pulled: boolean;
}

export interface FaultyTransport extends Transport {
  readonly stats: Readonly<FaultStats>;
  /** Pull the cable now. */
  pull(reason?: string): void;
}

/** mulberry32: small, fast, good enough for fault patterns; not for anything secret. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/** Faults for one direction, with its own PRNG so the pattern does not depend on interleaving. */
class Channel {
  readonly #rnd: () => number;
  #skip = 0;
  constructor(
    seed: number,
    private readonly ber: number,
    private readonly garbageRate: number,
    private readonly dropRate: number,
    private readonly stats: FaultStats,
  ) {
    this.#rnd = mulberry32(seed);
    this.#skip = this.#gap();
  }

  // Bits until the next error: geometric with p = ber, so the cost is per error, not per bit.
  #gap(): number {
    if (this.ber <= 0) return Infinity;
    if (this.ber >= 1) return 0;
    return Math.floor(Math.log(1 - this.#rnd()) / Math.log(1 - this.ber));
  }

  /** The chunk as it comes out of the noisy line, or undefined if it was lost. Never mutates `chunk`. */
  apply(chunk: Uint8Array): Uint8Array | undefined {
    if (this.dropRate > 0 && this.#rnd() < this.dropRate) {
      this.stats.droppedChunks++;
      return undefined;
    }
    let out = chunk;
    if (this.garbageRate > 0 && this.#rnd() < this.garbageRate) {
      const n = 1 + Math.floor(this.#rnd() * 8);
      out = new Uint8Array(n + chunk.length);
      for (let i = 0; i < n; i++) out[i] = Math.floor(this.#rnd() * 256);
      out.set(chunk, n);
      this.stats.garbageBytes += n;
    }
    const bits = out.length * 8;
    if (this.#skip < bits) {
      if (out === chunk) out = Uint8Array.from(chunk);
      let bit = this.#skip;
      while (bit < bits) {
        out[bit >> 3]! ^= 1 << (bit & 7);
        this.stats.flippedBits++;
        bit += 1 + this.#gap();
      }
      this.#skip = bit - bits;
    } else {
      this.#skip -= bits;
    }
    return out;
  }
}

/**
 * Wrap `inner` with faults. Faults apply to chunks as they cross: for writes, to the bytes of
 * each write() call; for reads, to each chunk inner delivers. A dropped write still resolves
 * (the sender cannot know). After a pull, inner is closed, onClose gets the pull error, and
 * writes reject with it.
 */
export function withFaults(inner: Transport, options: FaultOptions = {}): FaultyTransport {
  const rate = (name: string, v: number | undefined) => {
    if (v === undefined) return 0;
    if (!(v >= 0 && v <= 1)) throw new RangeError(`${name} must be in [0, 1], got ${v}`);
    return v;
  };
  const ber = rate('noise.bitErrorRate', options.noise?.bitErrorRate);
  const garbageRate = rate('noise.garbageRate', options.noise?.garbageRate);
  const dropRate = rate('dropChunkRate', options.dropChunkRate);
  const pullAfter = options.pullAfterBytes;
  if (pullAfter !== undefined && !(Number.isInteger(pullAfter) && pullAfter >= 0)) {
    throw new RangeError(`pullAfterBytes must be a non-negative integer, got ${pullAfter}`);
  }
  const direction = options.direction ?? 'receive';
  const seed = options.noise?.seed ?? 1;
  const stats: FaultStats = { bytes: 0, flippedBits: 0, garbageBytes: 0, droppedChunks: 0, pulled: false };
  const clean = (chunk: Uint8Array) => chunk;
  const channel = (on: boolean, s: number) => (on ? new Channel(s, ber, garbageRate, dropRate, stats) : { apply: clean });
  const rx = channel(direction !== 'send', seed);
  const tx = channel(direction !== 'receive', seed ^ 0x5bd1e995);

  const core = new EndpointCore(`${inner.description} with faults`);
  let closing: Promise<void> | undefined;
  let pullError: Error | undefined;

  const pull = (reason?: string) => {
    if (core.ended || closing) return;
    stats.pulled = true;
    pullError = new Error(`${core.description}: cable pulled (${reason ?? 'fault injection'})`);
    core.end(pullError);
    void inner.close();
  };
  /** How much of an n-byte chunk may still cross before the pull, and whether it triggers it. */
  const budget = (n: number): { pass: number; pullNow: boolean } => {
    if (pullAfter === undefined) return { pass: n, pullNow: false };
    const pass = Math.max(0, Math.min(n, pullAfter - stats.bytes));
    return { pass, pullNow: stats.bytes + pass >= pullAfter };
  };

  inner.onData((chunk) => {
    if (core.ended) return;
    const { pass, pullNow } = budget(chunk.length);
    stats.bytes += pass;
    const out = pass > 0 ? rx.apply(pass < chunk.length ? chunk.subarray(0, pass) : chunk) : undefined;
    if (out) core.deliver(out);
    if (pullNow) pull(`after ${pullAfter} bytes`);
  });
  inner.onClose((error) => core.end(closing ? undefined : error));

  const write = async (bytes: Uint8Array): Promise<void> => {
    checkBytes(bytes);
    if (closing || core.ended) throw pullError ?? core.closedError();
    const { pass, pullNow } = budget(bytes.length);
    stats.bytes += pass;
    const out = pass > 0 ? tx.apply(bytes.subarray(0, pass)) : undefined;
    const sent = out ? inner.write(out) : Promise.resolve();
    if (pullNow) {
      pull(`after ${pullAfter} bytes`);
      await sent.catch(() => {});
      // The cable went mid-write (or exactly at its end): the sender sees the write fail.
      throw pullError;
    }
    await sent;
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await inner.close();
      core.end();
    })();
    return closing;
  };
  return Object.assign(makeTransport(core, write, close), { stats, pull });
}
