// An in-process shaped network link: two Node Duplex streams joined through one shaper per direction
// (shaper.ts), so a terminal front end and the master station can talk over a 9.6 kbit/s link inside
// one process. A TLS socket runs over either end: tls.connect({ socket: a }) and
// new tls.TLSSocket(b, { isServer: true, ... }).
import { Duplex } from 'node:stream';
import { DEFAULT_HIGH_WATER_BYTES, ShapedChannel } from './shaped-channel.js';
import type { TimerClock } from './shaped-channel.js';
import type { ShapeOptions, ShaperStats } from './shaper.js';

export interface ShapedPairOptions {
  /** a -> b (terminal to station, say). */
  up: ShapeOptions;
  /** b -> a. */
  down: ShapeOptions;
  /** A writer's callback waits while its direction holds more than this; default DEFAULT_HIGH_WATER_BYTES. */
  highWaterBytes?: number;
  clock?: TimerClock;
}

export interface ShapedPair {
  a: Duplex;
  b: Duplex;
  readonly stats: { up: ShaperStats; down: ShaperStats };
}

/**
 * Bytes written to `a` are read at `b` as the `up` link delivers them, and back through `down`.
 * a.end() reaches b as its end of stream once every byte before it has been delivered (a FIN), and
 * back; destroying either end destroys the other at once, dropping what is in flight (a reset).
 * A write's callback is held while its direction has more than highWaterBytes pending, so
 * stream.pipe() and `await once(s, 'drain')` pace a writer to the link. The reading side is not
 * held back (bytes delivered are pushed whatever the reader's buffer), as a TCP receiver with a
 * large window.
 */
export function createShapedPair(options: ShapedPairOptions): ShapedPair {
  const high = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
  if (!(Number.isInteger(high) && high > 0)) throw new RangeError(`highWaterBytes must be a positive whole number, got ${high}`);
  const ends: Duplex[] = [];
  const channels: ShapedChannel[] = [];

  const make = (self: 0 | 1): Duplex => {
    const peer = (): Duplex => ends[self === 0 ? 1 : 0]!;
    let held: (() => void) | undefined;
    const channel = new ShapedChannel({
      shape: self === 0 ? options.up : options.down,
      onData: (bytes) => void peer().push(bytes),
      onProgress: () => {
        if (held && channel.pendingBytes <= high) {
          const cb = held;
          held = undefined;
          cb();
        }
      },
      ...(options.clock ? { clock: options.clock } : {}),
    });
    channels[self] = channel;
    return new Duplex({
      read() {
        // Delivered bytes are pushed as they come (see above).
      },
      write(chunk: Buffer, _encoding, callback) {
        channel.write(chunk);
        if (channel.pendingBytes > high) held = () => callback();
        else callback();
      },
      final(callback) {
        channel.end(() => void peer().push(null));
        callback();
      },
      destroy(error, callback) {
        channel.destroy();
        channels[self === 0 ? 1 : 0]!.destroy();
        if (!peer().destroyed) peer().destroy();
        callback(error);
      },
    });
  };
  ends.push(make(0), make(1));
  return {
    a: ends[0]!,
    b: ends[1]!,
    get stats() {
      return { up: channels[0]!.stats, down: channels[1]!.stats };
    },
  };
}
