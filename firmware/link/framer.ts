// Incremental frame splitter (docs/protocol.md, "Frames"): bytes in, CRC-checked frame bodies out.
// A pure state machine with one fixed buffer, as a UART receive path on an MCU has: it resyncs on
// every 0x00, counts and drops corrupt or oversize frames, and never buffers without bound.
import { cobsDecodeInto, cobsMaxEncodedLength } from './cobs.js';
import { CRC_SIZE, MIN_BODY_SIZE, crcOk } from './frame.js';
import { NEED_MARK, SHARD_MARK, ShardCollector, parseNeed } from './fec.js';
import type { Need, ShardCollectorOptions } from './fec.js';

export interface FramerStats {
  /** Valid frames delivered. */
  frames: number;
  /** Frames dropped for bad COBS, a bad CRC or a body too short to hold a header. */
  corrupt: number;
  /** Frames dropped because they exceeded the maximum frame size. */
  oversize: number;
  /** Bytes thrown away by the drops above. */
  droppedBytes: number;
}

/** Bytes a Deframer holds between frames (it grows to its largest frame while one comes). */
const SMALL_BUFFER = 512;

export class Deframer {
  readonly maxBody: number;
  readonly stats: FramerStats = { frames: 0, corrupt: 0, oversize: 0, droppedBytes: 0 };
  /** Frames that come as FEC shards (docs/protocol.md 2.6) are put together here. */
  readonly shards: ShardCollector;
  private readonly viaShards = new WeakSet<Uint8Array>();
  /**
   * The frame being received, COBS-encoded. It starts small and grows to the largest frame's size
   * only while a frame needs it (back to small after it): a host holding thousands of links (a
   * fleet) does not hold a 64 KiB buffer for each one's idle line.
   */
  private encoded: Uint8Array;
  private readonly capacity: number;
  private length = 0;
  /** Set after an overflow: everything up to the next 0x00 belongs to the oversize frame. */
  private discarding = false;

  /**
   * A whole NEED (docs/protocol.md 2.6) came: the peer asks for more shards of a frame. Without
   * a listener a NEED is ignored (a receiver that keeps no frames has nothing to send).
   */
  onNeed: ((need: Need) => void) | undefined;
  /** NEEDs received whole, and damaged ones (not counted as corrupt frames). */
  readonly needStats = { whole: 0, damaged: 0 };
  /** Frames put together from shards and not yet returned (a shard can release several). */
  private pendingFrames: Uint8Array[] = [];

  /** @param maxBody largest body (header + payload + CRC) accepted, before COBS. */
  constructor(maxBody: number, options: ShardCollectorOptions = {}) {
    if (!Number.isInteger(maxBody) || maxBody < MIN_BODY_SIZE) {
      throw new RangeError(`maxBody must be an integer >= ${MIN_BODY_SIZE}`);
    }
    this.maxBody = maxBody;
    this.capacity = cobsMaxEncodedLength(maxBody);
    this.encoded = new Uint8Array(Math.min(this.capacity, SMALL_BUFFER));
    this.shards = new ShardCollector(maxBody, undefined, options);
  }

  /** Whether a body push() returned came as shards (a device answers such a request in shards). */
  cameInShards(body: Uint8Array): boolean {
    return this.viaShards.has(body);
  }

  /**
   * Feed received bytes; returns the bodies (header + payload, CRC stripped) of the frames they
   * completed, in order. The returned arrays are fresh copies the caller may keep.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    let start = 0;
    while (start < chunk.length) {
      const zero = chunk.indexOf(0, start);
      const end = zero === -1 ? chunk.length : zero;
      this.append(chunk, start, end);
      if (zero === -1) break;
      const body = this.finish();
      if (body) frames.push(body);
      if (this.pendingFrames.length > 0) frames.push(...this.pendingFrames.splice(0));
      start = zero + 1;
    }
    return frames;
  }

  private append(chunk: Uint8Array, from: number, to: number): void {
    const n = to - from;
    if (n === 0) return;
    if (this.discarding) {
      this.stats.droppedBytes += n;
      return;
    }
    if (this.length + n > this.encoded.length && this.length + n <= this.capacity) {
      const grown = new Uint8Array(Math.min(this.capacity, Math.max(2 * this.encoded.length, this.length + n)));
      grown.set(this.encoded.subarray(0, this.length));
      this.encoded = grown;
    }
    if (this.length + n > this.encoded.length) {
      // Oversize: drop what we hold and the rest of this frame, up to the next delimiter.
      this.stats.oversize++;
      this.stats.droppedBytes += this.length + n;
      this.length = 0;
      this.discarding = true;
      return;
    }
    this.encoded.set(chunk.subarray(from, to), this.length);
    this.length += n;
  }

  /**
   * A pause in the shards (NEED mode, docs/protocol.md 2.6): NEEDs for the frames being
   * collected, and the frames this releases (held behind one now given up), as push() returns them.
   */
  idle(again: boolean): Uint8Array[] {
    return this.shards.idle(again).map((frame) => this.#shardFrame(frame));
  }

  #shardFrame(frame: Uint8Array): Uint8Array {
    this.stats.frames++;
    const f = frame.slice(0, frame.length - CRC_SIZE);
    this.viaShards.add(f);
    return f;
  }

  /** A delimiter arrived: decode and check what was collected. */
  private finish(): Uint8Array | undefined {
    if (this.discarding) {
      this.discarding = false;
      if (this.encoded.length > SMALL_BUFFER) this.encoded = new Uint8Array(SMALL_BUFFER);
      return undefined;
    }
    const n = this.length;
    this.length = 0;
    if (n === 0) return undefined; // back-to-back delimiters are idle fill, not an error
    const body = new Uint8Array(n);
    const len = cobsDecodeInto(this.encoded, n, body);
    if (this.encoded.length > SMALL_BUFFER) this.encoded = new Uint8Array(SMALL_BUFFER);
    if (len > 0 && body[0] === NEED_MARK) {
      // A NEED (2.6): the peer asks for more shards of a frame. Never a frame (0xFD is no version).
      const need = parseNeed(body.subarray(0, len));
      if (need) {
        this.needStats.whole++;
        this.onNeed?.(need);
      } else {
        // Damaged: dropped and counted as any damaged frame.
        this.needStats.damaged++;
        this.stats.corrupt++;
        this.stats.droppedBytes += n;
      }
      return undefined;
    }
    if (len > 0 && body[0] === SHARD_MARK) {
      // A shard: whole ones are collected, and the frames they complete are checked as any other.
      const before = this.shards.stats.badShards;
      const done = this.shards.pushAll(body.subarray(0, len));
      if (this.shards.stats.badShards > before) {
        this.stats.corrupt++;
        this.stats.droppedBytes += n;
      }
      // The collector gives out only frames whose length and CRC-32 it checked.
      const out = done.map((frame) => this.#shardFrame(frame));
      const first = out.shift();
      this.pendingFrames.push(...out);
      return first;
    }
    if (len < MIN_BODY_SIZE || len > this.maxBody || !crcOk(body.subarray(0, len))) {
      this.stats.corrupt++;
      this.stats.droppedBytes += n;
      return undefined;
    }
    this.stats.frames++;
    return body.slice(0, len - CRC_SIZE);
  }
}
