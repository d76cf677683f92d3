// One direction of a shaped link in real time: drives a Shaper (shaper.ts) with a timer, hands the
// bytes it delivers to a sink, and tells the writer when its backlog has gone down (for pausing a
// source). The in-process shaped pair (shaped-duplex.ts) and the TCP relay (shaped-relay.ts) use it.
import { Shaper } from './shaper.js';
import type { ShapeOptions, ShaperStats } from './shaper.js';

/** Time and timers, injected for tests; default performance.now() and setTimeout. */
export interface TimerClock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Call `fn` after `ms`; returns a cancel function. */
  setTimer(fn: () => void, ms: number): () => void;
}

export const realTimerClock: TimerClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

/**
 * Bytes a source may have waiting in one direction (in the shaper, plus what its sink has not
 * flushed) before it is paused; it is resumed at half. 16 KiB: about 14 s of backlog at 9.6 kbit/s,
 * 0.5 s at 256 kbit/s, so the queue delay a stalled reader causes stays visible and bounded, while
 * the source's kernel buffers (its TCP window) hold the rest, as on a real bottleneck.
 */
export const DEFAULT_HIGH_WATER_BYTES = 16 * 1024;

export interface ShapedChannelOptions {
  shape: ShapeOptions;
  /** Receives delivered bytes, in order; bytes due in the same tick come as one chunk. */
  onData(bytes: Uint8Array): void;
  /** Called after each batch of deliveries (the backlog went down). */
  onProgress?(): void;
  clock?: TimerClock;
}

export class ShapedChannel {
  readonly #shaper: Shaper;
  readonly #clock: TimerClock;
  readonly #o: ShapedChannelOptions;
  #cancel: (() => void) | undefined;
  #timerAt = Infinity;
  #onEnded: (() => void) | undefined;
  #destroyed = false;

  constructor(options: ShapedChannelOptions) {
    this.#o = options;
    this.#shaper = new Shaper(options.shape);
    this.#clock = options.clock ?? realTimerClock;
  }

  get stats(): ShaperStats {
    return this.#shaper.stats;
  }

  /** Bytes written and not yet handed to onData. */
  get pendingBytes(): number {
    return this.#shaper.pendingBytes;
  }

  write(bytes: Uint8Array): void {
    if (this.#destroyed || this.#onEnded) return;
    this.#shaper.write(bytes, this.#clock.now());
    this.#schedule();
  }

  /** No more writes: call `onEnded` once everything written has been handed on (a FIN behind the data). */
  end(onEnded: () => void): void {
    if (this.#destroyed || this.#onEnded) return;
    this.#onEnded = onEnded;
    this.#schedule();
  }

  /** Stop at once; what is still in the link is dropped (a reset). */
  destroy(): void {
    this.#destroyed = true;
    this.#cancel?.();
    this.#cancel = undefined;
  }

  #schedule(): void {
    if (this.#destroyed) return;
    const at = this.#shaper.nextEventAt();
    if (at === undefined) {
      this.#cancel?.();
      this.#cancel = undefined;
      this.#timerAt = Infinity;
      if (this.#onEnded && this.#shaper.pendingBytes === 0) {
        const ended = this.#onEnded;
        this.#onEnded = () => undefined;
        this.#destroyed = true;
        ended();
      }
      return;
    }
    if (this.#cancel && this.#timerAt <= at) return; // an earlier look is already due
    this.#cancel?.();
    this.#timerAt = at;
    this.#cancel = this.#clock.setTimer(() => this.#tick(), Math.max(0, at - this.#clock.now()));
  }

  #tick(): void {
    this.#cancel = undefined;
    this.#timerAt = Infinity;
    if (this.#destroyed) return;
    const due = this.#shaper.advance(this.#clock.now());
    if (due.length > 0) {
      const bytes = due.length === 1 ? due[0]!.bytes : Buffer.concat(due.map((d) => d.bytes));
      this.#o.onData(bytes);
      this.#o.onProgress?.();
    }
    this.#schedule();
  }
}
