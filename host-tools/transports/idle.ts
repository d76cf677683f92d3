// Idle timeout for a device's end of a connection: a peer that sends no valid request frame for
// `ms` (or none at all within `firstMs` of connecting) is closed, so a half-open TCP connection or
// a peer trickling bytes does not hold one of a module's connection slots, or the transfer it
// owned, forever (docs/protocol.md 4.9).
import type { Transport } from '../../firmware/link/transport.js';

export interface IdleWatch {
  /** Tell the watch a valid request frame arrived (the link knows; bytes alone prove nothing). */
  frame(): void;
  /** Milliseconds since the last valid frame (or since the connection opened, before the first). */
  idleFor(): number;
  /** True once a valid request frame arrived. */
  framed(): boolean;
}

export interface IdleOptions {
  /** A connection that has sent no valid frame this long after opening is closed (default `ms`). */
  firstMs?: number;
  /** Told when the watch closes the transport, with why (for a log line). */
  onIdle?: (why: 'idle' | 'no-frame') => void;
  /** Clock for idleFor() (default Date.now). */
  now?: () => number;
}

/**
 * Watch `inner`: closed once `firstMs` pass without a first frame(), then whenever `ms` pass
 * without another. Neither received bytes nor sent ones re-arm it: only frame() does, so a peer
 * sending one byte now and then cannot keep a slot, and bytes sent to a dead peer prove nothing.
 */
export function closeWhenIdle(inner: Transport, ms: number, o: IdleOptions = {}): IdleWatch {
  const firstMs = o.firstMs ?? ms;
  for (const v of [ms, firstMs]) {
    if (!Number.isFinite(v) || v <= 0) throw new RangeError(`idle timeout must be a positive number of ms, got ${v}`);
  }
  const now = o.now ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  let last = now();
  let framed = false;
  const arm = (after: number) => {
    if (ended) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      o.onIdle?.(framed ? 'idle' : 'no-frame');
      void inner.close();
    }, after);
    timer.unref();
  };
  inner.onClose(() => {
    ended = true;
    clearTimeout(timer);
  });
  arm(firstMs);
  return {
    frame: () => {
      framed = true;
      last = now();
      arm(ms);
    },
    idleFor: () => now() - last,
    framed: () => framed,
  };
}
