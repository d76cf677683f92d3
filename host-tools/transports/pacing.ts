// Baud pacing: makes a pty, TCP or in-process link carry only baud/10 bytes per second in the
// write direction (8N1), like a real 9600-921600 baud cable, for benchmarks and timing tests.
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';

export interface PacingClock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export interface PacingOptions {
  /** Line rate in bit/s. */
  baud: number;
  /** Bits on the wire per byte: 10 for 8N1 (start + 8 data + stop), 11 for 8E1 or 8N2. */
  bitsPerByte?: number;
  /** Target duration of one slice, so bytes trickle rather than arrive in bursts. Default 4 ms. */
  sliceMs?: number;
  /** Send without sleeping while at most this far ahead of the line. Default 2 ms. */
  aheadMs?: number;
  /**
   * While fed continuously, lateness up to this much (timer overshoot, a slow event loop tick)
   * is caught up, so the long-run rate does not fall below the line rate; beyond it the line
   * clock restarts from now (the consumer was slower than the line). Default 20 ms.
   */
  catchUpMs?: number;
  /** Injected for tests; default performance.now() and setTimeout. */
  clock?: PacingClock;
}

export interface PacedTransport extends Transport {
  /** Bytes handed to the inner transport so far. */
  readonly bytesSent: number;
}

const realClock: PacingClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

interface Job {
  bytes: Uint8Array;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Wrap `inner` so writes leave at the line rate. A virtual line clock `nextFree` says when the
 * line finishes the bytes already sent: each slice ends at max(now, nextFree) + len*bits/baud,
 * and is handed on once it is no more than `aheadMs` in the future. Because nextFree advances by
 * exact durations while the queue is non-empty, timer jitter does not accumulate: the long-run
 * rate is the line rate. write() resolves when its last slice has been handed on. The receive
 * direction is passed through untouched (pace the other end for the other direction).
 */
export function paced(inner: Transport, options: PacingOptions): PacedTransport {
  const { baud } = options;
  if (!Number.isFinite(baud) || baud <= 0) throw new RangeError(`baud must be a positive number, got ${baud}`);
  const bitsPerByte = options.bitsPerByte ?? 10;
  const msPerByte = (1000 * bitsPerByte) / baud;
  const sliceBytes = Math.max(1, Math.floor((options.sliceMs ?? 4) / msPerByte));
  const aheadMs = options.aheadMs ?? 2;
  const catchUpMs = options.catchUpMs ?? 20;
  const clock = options.clock ?? realClock;

  const core = new EndpointCore(`${inner.description} paced at ${baud} baud`);
  inner.onData((chunk) => core.deliver(chunk));
  const queue: Job[] = [];
  let pumping = false;
  let closing: Promise<void> | undefined;
  let nextFree = -Infinity;
  let bytesSent = 0;

  const failAll = (error: Error) => {
    for (const job of queue.splice(0)) job.reject(error);
  };
  inner.onClose((error) => {
    core.end(closing ? undefined : error);
    failAll(core.closedError());
  });

  const pump = async () => {
    pumping = true;
    // The line was idle until now: it is free from now on, not from some time in the past.
    nextFree = Math.max(nextFree, clock.now());
    try {
      while (queue.length > 0) {
        const job = queue[0]!;
        try {
          while (job.offset < job.bytes.length) {
            if (closing || core.ended) throw core.closedError();
            const slice = job.bytes.subarray(job.offset, job.offset + sliceBytes);
            let now = clock.now();
            if (nextFree < now - catchUpMs) nextFree = now; // too far behind: do not burst
            nextFree += slice.length * msPerByte; // when the last bit of this slice is out
            if (nextFree - now > aheadMs) {
              await clock.sleep(nextFree - now);
              now = clock.now();
            }
            if (closing || core.ended) throw core.closedError();
            await inner.write(slice);
            job.offset += slice.length;
            bytesSent += slice.length;
          }
          queue.shift();
          job.resolve();
        } catch (error) {
          queue.shift();
          job.reject(error instanceof Error ? error : new Error(String(error)));
        }
      }
    } finally {
      pumping = false;
    }
  };

  const write = async (bytes: Uint8Array): Promise<void> => {
    checkBytes(bytes);
    if (closing || core.ended) throw core.closedError();
    return new Promise<void>((resolve, reject) => {
      queue.push({ bytes: Uint8Array.from(bytes), offset: 0, resolve, reject });
      if (!pumping) void pump();
    });
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      failAll(core.closedError());
      await inner.close();
      core.end();
    })();
    return closing;
  };
  // defineProperty, not Object.assign, which would copy the getter's value once.
  return Object.defineProperty(makeTransport(core, write, close), 'bytesSent', { get: () => bytesSent, enumerable: true }) as PacedTransport;
}
