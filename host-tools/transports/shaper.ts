// A shaped network link, one direction, as TCP sees it: a pure scheduler with an injected clock
// (times are arguments). Bytes written are cut into segments, serialised at a bottleneck rate, delayed
// by latency and seeded jitter, and each segment is lost with a seeded probability and then resent
// after a retransmission timeout (RFC 6298). Nothing is ever corrupted, reordered or lost for good:
// TCP hands its reader every byte in order, only later. Used by shaped-channel.ts (real time), the
// in-process shaped pair (shaped-duplex.ts) and the TCP relay `qkt net relay` (shaped-relay.ts).
//
// What is modelled and what is not:
// - The bottleneck: one segment on the wire at a time, each taking (payload + overheadBytes) x 8 /
//   rate seconds; a lost segment took its wire time too, and so does its retransmission.
// - Segmentation: bytes queue as written and leave in segments of up to `mssBytes` taken when the
//   bottleneck is free, so small writes behind a busy link share a segment, as TCP coalesces queued
//   bytes (Nagle off: a write to an idle link leaves at once, however small).
// - Loss: per transmission, probability `loss`; the segment is resent RTO after its last bit left,
//   the RTO doubling per consecutive loss of that segment (RFC 6298 section 5.5, "back off the
//   timer") up to 60 s (section 2.5 allows a maximum of at least 60 s). Retransmissions go before
//   new data once their timer has fired. Fast retransmit (RFC 5681 3.2) is not modelled: every loss
//   costs a full RTO, as on the short, small-window exchanges of a terminal's link.
// - Order: the receiver hands bytes on in order; a segment that arrives early (less jitter, or
//   behind a lost one) waits for the one before it.
// - Not modelled: congestion window, slow start, receive window (the source is paused instead, see
//   shaped-channel.ts), duplicate delivery, reordering on the wire beyond what the receiver hides.
import { mulberry32 } from './faults.js';

/** Default maximum segment size: RFC 1122 4.2.2.6 / RFC 9293 3.7.1's default send MSS of 536 bytes. */
export const DEFAULT_MSS_BYTES = 536;
/** Default per-segment header bytes on the wire: IPv4 (20) + TCP (20) without options. */
export const DEFAULT_OVERHEAD_BYTES = 40;
/** Lower bound of the default RTO: Linux's TCP_RTO_MIN (RFC 6298 2.4 asks 1 s; stacks use 200 ms). */
export const MIN_RTO_MS = 200;
/** Upper bound of a backed-off RTO (RFC 6298 2.5: a maximum of at least 60 s may be placed). */
export const MAX_RTO_MS = 60_000;

export interface ShapeOptions {
  /** Bottleneck rate in bit/s (9600 for 9.6 kbit/s); header bytes count against it too. */
  rate: number;
  /** One-way propagation delay in ms, added to every segment after its last bit left. Default 0. */
  latencyMs?: number;
  /** Each segment's delay is latency + a uniform draw in [-jitter, +jitter] ms (never below 0). Default 0. */
  jitterMs?: number;
  /** Probability (0 <= loss < 1) that one transmission of a segment is lost. Default 0. */
  loss?: number;
  /** PRNG seed (32-bit unsigned) of the loss and jitter draws. Default 1. */
  seed?: number;
  /** Maximum segment payload in bytes. Default DEFAULT_MSS_BYTES (536). */
  mssBytes?: number;
  /** Header bytes sent with each segment (and each retransmission). Default DEFAULT_OVERHEAD_BYTES (40). */
  overheadBytes?: number;
  /**
   * Round-trip time of an unloaded link, for the RTO. Default: 2 x latency + the wire time of one
   * full segment + that of an ACK (overheadBytes), the reverse path taken as this one (the TCP relay
   * passes the real reverse direction's figures).
   */
  baseRttMs?: number;
  /** Initial RTO in ms. Default max(MIN_RTO_MS, 2 x baseRttMs). */
  rtoMs?: number;
}

/** Counters of one direction, JSON-friendly. */
export interface ShaperStats {
  /** Bytes written into the link. */
  bytesIn: number;
  /** Bytes handed on to the reader. */
  bytesOut: number;
  /** Segments formed (each counted once, however often it was sent). */
  segments: number;
  /** Segments lost at least once. */
  lostSegments: number;
  /** Retransmissions sent (a segment lost twice counts 2). */
  retransmissions: number;
  /** Time from a segment's first byte being written to its first transmission: mean and max, ms. */
  queueDelayMs: { mean: number; max: number };
  /** Bytes written and not yet handed on. */
  pendingBytes: number;
}

/** Bytes the reader gets, and the (scheduled) time at which it gets them. */
export interface Delivery {
  at: number;
  bytes: Uint8Array;
}

interface Segment {
  index: number;
  bytes: Uint8Array;
  /** Losses so far. */
  losses: number;
  /** Earliest time it may be (re)sent. */
  readyAt: number;
}

interface Queued {
  bytes: Uint8Array;
  offset: number;
  at: number;
}

const num = (value: unknown, name: string, min: number, max = Infinity, minOpen = false): number => {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name} must be a finite number, got ${String(value)}`);
  if (value < min || value > max || (minOpen && value === min)) throw new RangeError(`${name} must be ${minOpen ? 'above' : 'at least'} ${min}${max < Infinity ? ` and below ${max}` : ''}, got ${value}`);
  return value;
};

/** Wire time in ms of `payload` bytes plus a header at `rate` bit/s. */
export const wireMs = (payload: number, overheadBytes: number, rate: number): number => ((payload + overheadBytes) * 8 * 1000) / rate;

/** The options with every default filled in and checked (RangeError/TypeError naming the option). */
export function resolveShape(o: ShapeOptions): Required<ShapeOptions> {
  if (typeof o !== 'object' || o === null) throw new TypeError('shape options must be an object');
  const rate = num(o.rate, 'rate', 0, Infinity, true);
  const latencyMs = num(o.latencyMs ?? 0, 'latencyMs', 0);
  const jitterMs = num(o.jitterMs ?? 0, 'jitterMs', 0);
  const loss = num(o.loss ?? 0, 'loss', 0);
  if (loss >= 1) throw new RangeError(`loss must be below 1 (a link that loses everything delivers nothing), got ${loss}`);
  const seed = num(o.seed ?? 1, 'seed', 0, 0xffffffff);
  const mssBytes = num(o.mssBytes ?? DEFAULT_MSS_BYTES, 'mssBytes', 1);
  const overheadBytes = num(o.overheadBytes ?? DEFAULT_OVERHEAD_BYTES, 'overheadBytes', 0);
  if (!Number.isInteger(mssBytes) || !Number.isInteger(overheadBytes) || !Number.isInteger(seed)) throw new RangeError('mssBytes, overheadBytes and seed must be whole numbers');
  const baseRttMs = num(o.baseRttMs ?? 2 * latencyMs + wireMs(mssBytes, overheadBytes, rate) + wireMs(0, overheadBytes, rate), 'baseRttMs', 0);
  const rtoMs = num(o.rtoMs ?? Math.max(MIN_RTO_MS, 2 * baseRttMs), 'rtoMs', 0, Infinity, true);
  return { rate, latencyMs, jitterMs, loss, seed, mssBytes, overheadBytes, baseRttMs, rtoMs };
}

/**
 * One direction of a shaped link. Feed it with write(bytes, now) and take what is due with
 * advance(now); nextEventAt() says when to look next. Times are ms on any monotonic clock, and
 * must not go backwards between calls. Deliveries carry their scheduled time, so a caller that looks
 * late still sees (and a test can check) the exact schedule.
 */
export class Shaper {
  readonly options: Readonly<Required<ShapeOptions>>;
  readonly #lossRnd: () => number;
  readonly #jitterRnd: () => number;
  /** Bytes written, not yet in a segment. */
  readonly #queue: Queued[] = [];
  #queuedBytes = 0;
  /** Lost segments waiting for their timer, by readyAt (then index). */
  readonly #retx: Segment[] = [];
  /** Segments through, by index, waiting to be handed on in order: arrival time. */
  readonly #arrived = new Map<number, { bytes: Uint8Array; at: number }>();
  #nextIndex = 0;
  #nextDeliver = 0;
  #lastDeliverAt = -Infinity;
  #linkFree = -Infinity;
  #lastNow = -Infinity;
  #bytesIn = 0;
  #bytesOut = 0;
  #lostSegments = 0;
  #retransmissions = 0;
  #queueDelayTotal = 0;
  #queueDelayMax = 0;

  constructor(options: ShapeOptions) {
    this.options = Object.freeze(resolveShape(options));
    this.#lossRnd = mulberry32(this.options.seed);
    // A second stream for jitter, so the loss pattern does not depend on how many segments got through.
    this.#jitterRnd = mulberry32((this.options.seed ^ 0x9e3779b9) >>> 0);
  }

  /** Queue bytes written at `now` (copied: the caller may reuse its buffer). */
  write(bytes: Uint8Array, now: number): void {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array');
    this.#run(now);
    if (bytes.length === 0) return;
    this.#queue.push({ bytes: Uint8Array.from(bytes), offset: 0, at: now });
    this.#queuedBytes += bytes.length;
    this.#bytesIn += bytes.length;
    this.#run(now); // an idle link starts sending at once
  }

  /** Run the link up to `now` and return what the reader gets by then, in order. */
  advance(now: number): Delivery[] {
    this.#run(now);
    const out: Delivery[] = [];
    for (let d = this.#due(); d !== undefined && d.at <= now; d = this.#due()) {
      this.#arrived.delete(this.#nextDeliver++);
      this.#lastDeliverAt = d.at;
      this.#bytesOut += d.bytes.length;
      out.push(d);
    }
    return out;
  }

  /** When something next happens (a segment goes on the wire, or bytes are due); undefined: idle. */
  nextEventAt(): number | undefined {
    const decide = this.#decisionAt();
    const due = this.#due()?.at;
    if (decide === undefined) return due;
    return due === undefined ? decide : Math.min(decide, due);
  }

  /** Bytes written and not yet handed on (queued, on the wire, lost and waiting, or held for order). */
  get pendingBytes(): number {
    return this.#bytesIn - this.#bytesOut;
  }

  get stats(): ShaperStats {
    const segments = this.#nextIndex;
    return {
      bytesIn: this.#bytesIn,
      bytesOut: this.#bytesOut,
      segments,
      lostSegments: this.#lostSegments,
      retransmissions: this.#retransmissions,
      queueDelayMs: { mean: segments === 0 ? 0 : this.#queueDelayTotal / segments, max: this.#queueDelayMax },
      pendingBytes: this.pendingBytes,
    };
  }

  /** The next segment in order, if it has arrived, with the time it is handed on. */
  #due(): Delivery | undefined {
    const a = this.#arrived.get(this.#nextDeliver);
    // In order (RFC 9293 3.10.7.4: the receiver queues out-of-order segments and hands on in sequence).
    return a && { bytes: a.bytes, at: Math.max(a.at, this.#lastDeliverAt) };
  }

  /** When the bottleneck next puts a segment on the wire, if it has one. */
  #decisionAt(): number | undefined {
    const r = this.#retx[0]?.readyAt;
    const f = this.#queue[0]?.at;
    const ready = r === undefined ? f : f === undefined ? r : Math.min(r, f);
    return ready === undefined ? undefined : Math.max(this.#linkFree, ready);
  }

  /** Make every transmission that starts at or before `now`. */
  #run(now: number): void {
    if (typeof now !== 'number' || Number.isNaN(now)) throw new TypeError('now must be a number');
    if (now < this.#lastNow) throw new RangeError(`time went backwards: ${now} after ${this.#lastNow}`);
    this.#lastNow = now;
    for (let at = this.#decisionAt(); at !== undefined && at <= now; at = this.#decisionAt()) this.#transmit(at);
  }

  #transmit(start: number): void {
    const o = this.options;
    let seg: Segment;
    if (this.#retx[0] && this.#retx[0].readyAt <= start) {
      // RFC 6298 5.4: on expiry, retransmit the earliest segment not acknowledged, before new data.
      seg = this.#retx.shift()!;
      this.#retransmissions++;
    } else {
      seg = { index: this.#nextIndex++, bytes: this.#take(o.mssBytes, start), losses: 0, readyAt: start };
    }
    const end = start + wireMs(seg.bytes.length, o.overheadBytes, o.rate);
    this.#linkFree = end;
    if (o.loss > 0 && this.#lossRnd() < o.loss) {
      if (seg.losses === 0) this.#lostSegments++;
      seg.losses++;
      // RFC 6298 5.5: RTO doubles at each expiry for the same segment; 2.5: bounded (60 s here).
      seg.readyAt = end + Math.min(MAX_RTO_MS, o.rtoMs * 2 ** (seg.losses - 1));
      let i = this.#retx.length;
      while (i > 0 && (this.#retx[i - 1]!.readyAt > seg.readyAt || (this.#retx[i - 1]!.readyAt === seg.readyAt && this.#retx[i - 1]!.index > seg.index))) i--;
      this.#retx.splice(i, 0, seg);
      return;
    }
    const jitter = o.jitterMs === 0 ? 0 : o.jitterMs * (2 * this.#jitterRnd() - 1);
    this.#arrived.set(seg.index, { bytes: seg.bytes, at: end + Math.max(0, o.latencyMs + jitter) });
  }

  /** Up to `max` queued bytes as one segment payload, sent at `start` (for the queue-delay figure). */
  #take(max: number, start: number): Uint8Array {
    const n = Math.min(max, this.#queuedBytes);
    const out = new Uint8Array(n);
    const delay = start - this.#queue[0]!.at;
    this.#queueDelayTotal += delay;
    this.#queueDelayMax = Math.max(this.#queueDelayMax, delay);
    let filled = 0;
    while (filled < n) {
      const q = this.#queue[0]!;
      const k = Math.min(n - filled, q.bytes.length - q.offset);
      out.set(q.bytes.subarray(q.offset, q.offset + k), filled);
      filled += k;
      q.offset += k;
      if (q.offset === q.bytes.length) this.#queue.shift();
    }
    this.#queuedBytes -= n;
    return out;
  }
}
