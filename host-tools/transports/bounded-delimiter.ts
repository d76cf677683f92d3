// DelimiterParser with a cap on its buffer: a line that never sends the delimiter (noise, a
// wrong baud rate, a device printing text) must not grow host memory without bound.
import type { TransformCallback } from 'node:stream';
import { DelimiterParser, type DelimiterOptions } from '@serialport/parser-delimiter';

export interface BoundedDelimiterOptions extends DelimiterOptions {
  /** Most bytes held while waiting for a delimiter; default 64 KiB. */
  maxBuffer?: number;
}

export const DEFAULT_MAX_BUFFER = 64 * 1024;

/**
 * Pushes one chunk per delimited frame, like DelimiterParser. Overflow policy: when the bytes
 * held without a delimiter exceed `maxBuffer`, they are pushed on as-is and `overflows` is
 * incremented. Nothing is dropped here: the stream stays lossless, and the framer above, which
 * owns the frame-size limit, counts and drops the oversize frame (one place decides, one
 * counter the device reports). The held buffer never exceeds `maxBuffer` after a write.
 */
export class BoundedDelimiterParser extends DelimiterParser {
  readonly maxBuffer: number;
  /** How many times held bytes were flushed without a delimiter. */
  overflows = 0;

  constructor({ maxBuffer = DEFAULT_MAX_BUFFER, ...options }: BoundedDelimiterOptions) {
    if (!Number.isInteger(maxBuffer) || maxBuffer < 1) {
      throw new RangeError(`maxBuffer must be a positive integer, got ${maxBuffer}`);
    }
    super(options);
    this.maxBuffer = maxBuffer;
  }

  // Same splitting as DelimiterParser._transform, but it only concatenates when bytes are
  // held, and it bounds what it keeps.
  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    let data = this.buffer.length > 0 ? Buffer.concat([this.buffer, chunk]) : chunk;
    const keep = this.includeDelimiter ? this.delimiter.length : 0;
    let position: number;
    while ((position = data.indexOf(this.delimiter)) !== -1) {
      this.push(data.subarray(0, position + keep));
      data = data.subarray(position + this.delimiter.length);
    }
    if (data.length > this.maxBuffer) {
      // Overflow: hand on what is held. (A multi-byte delimiter split exactly at this point is
      // lost as a delimiter; ours is the single byte 0x00, which cannot be split.)
      this.overflows++;
      this.push(data);
      data = Buffer.alloc(0);
    }
    // Copy when keeping a slice of a caller's chunk, so that chunk's memory is not pinned.
    this.buffer = data === chunk || data.buffer === chunk.buffer ? Buffer.from(data) : data;
    cb();
  }
}
