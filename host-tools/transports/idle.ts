// Idle timeout for a device's end of a connection: a peer that sends nothing for `ms` is closed,
// so a half-open TCP connection (the host's machine gone, no FIN ever coming) does not hold one
// of a module's connection slots, or the transfer it owned, forever (docs/protocol.md 4.9).
import type { Transport } from '../../firmware/link/transport.js';

/**
 * Wrap `inner`: every received chunk restarts a timer of `ms`; when it runs out, `inner` is
 * closed (and `onIdle` told, for a log line). Only the receive direction counts: bytes the device
 * sends to a dead peer are taken by the kernel and prove nothing about the peer.
 */
export function closeWhenIdle(inner: Transport, ms: number, onIdle?: () => void): Transport {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`idle timeout must be a positive number of ms, got ${ms}`);
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const arm = () => {
    if (ended) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      onIdle?.();
      void inner.close();
    }, ms);
    timer.unref();
  };
  inner.onClose(() => {
    ended = true;
    clearTimeout(timer);
  });
  arm();
  return {
    description: inner.description,
    write: (bytes) => inner.write(bytes),
    onData: (listener) =>
      inner.onData((chunk) => {
        arm();
        listener(chunk);
      }),
    onClose: (listener) => inner.onClose(listener),
    close: () => inner.close(),
  };
}
