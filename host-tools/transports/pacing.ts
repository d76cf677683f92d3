// Baud pacing: makes a pty, TCP or in-process link behave like a UART at a line rate (8N1:
// baud/10 bytes per second) in both directions, like a real 9600-921600 baud cable, for
// `--baud` on a pty or TCP, benchmarks and timing tests. Writes leave at the line rate, and
// received bytes are handed on no faster than the line rate: a paced end talking to an unpaced
// peer (an unpaced host on a pty) still takes its bytes as a UART at that rate would.
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';

export interface PacingClock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** Stops and restarts reading from the inner transport (a serial parser's or socket's pause/resume). */
export interface ReadFlow {
  pause(): void;
  resume(): void;
}

export interface PacingOptions {
  /** Line rate in bit/s. */
  baud: number;
  /** Bits on the wire per byte: 10 for 8N1 (start + 8 data + stop), 11 for 8E1 or 8N2. */
  bitsPerByte?: number;
  /** Target duration of one slice, so bytes trickle rather than arrive in bursts. Default 4 ms. */
  sliceMs?: number;
  /** Hand a slice on without sleeping while its end is at most this far ahead of the line. Default 2 ms. */
  aheadMs?: number;
  /**
   * While fed continuously, lateness up to this much (timer overshoot, a slow event loop tick,
   * the process descheduled on a loaded machine) is caught up, so the long-run rate does not fall
   * below the line rate, as a UART goes on sending from its buffer while the CPU is busy; beyond it
   * the line clock restarts from now (the consumer was slower than the line). Default 100 ms.
   */
  catchUpMs?: number;
  /**
   * Pace the receive direction too (default true): bytes from the inner transport are handed to
   * onData() no faster than the line rate, as a UART receiver sees them. false passes them
   * through as they come (for a wrapper whose peer is paced already and where latency matters).
   */
  receive?: boolean;
  /**
   * Back-pressure for the receive direction: paused while more than `receiveHighWater` bytes
   * wait to be handed on, resumed when they are handed on, so a faster peer is held back by the
   * kernel (pty buffer, TCP window) rather than by this process's memory.
   */
  readFlow?: ReadFlow;
  /** Received bytes held before pausing readFlow. Default 16 KiB. */
  receiveHighWater?: number;
  /**
   * Received bytes held at most: past this, further bytes are dropped and counted in `overruns`,
   * as a UART's receiver overruns when nobody empties it. Default 1 MiB.
   */
  receiveLimit?: number;
  /** Injected for tests; default performance.now() and setTimeout. */
  clock?: PacingClock;
}

export interface PacedTransport extends Transport {
  /** Bytes handed to the inner transport so far. */
  readonly bytesSent: number;
  /** Bytes handed on to onData() so far. */
  readonly bytesReceived: number;
  /** Received bytes dropped because more than `receiveLimit` were waiting (0 with readFlow). */
  readonly overruns: number;
}

const realClock: PacingClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

interface Job {
  bytes: Uint8Array;
  offset: number;
  resolve?: () => void;
  reject?: (error: Error) => void;
}

/**
 * One direction of the line. A virtual line clock `nextFree` says when the line finishes the
 * bytes already passed: each slice ends at max(now, nextFree) + len*bits/baud, and is handed on
 * once its end is no more than `aheadMs` in the future (a UART hands a byte on when its stop bit
 * is in). Because nextFree advances by exact durations while the queue is non-empty, timer
 * jitter does not accumulate: the long-run rate is the line rate.
 */
class Line {
  readonly queue: Job[] = [];
  queuedBytes = 0;
  passed = 0;
  private pumping = false;
  private nextFree = -Infinity;

  constructor(
    private readonly msPerByte: number,
    private readonly sliceBytes: number,
    private readonly aheadMs: number,
    private readonly catchUpMs: number,
    private readonly clock: PacingClock,
    private readonly stopped: () => Error | undefined,
    private readonly pass: (slice: Uint8Array) => void | Promise<void>,
    private readonly drained: () => void = () => undefined,
    /**
     * Receive side: a gap of at most catchUpMs before bytes arrive is not idle line time (the
     * sender was late: a timer, a descheduled process, or its own pacer catching up) and is
     * caught up like lateness, so a paced receiver behind a paced sender does not add the
     * sender's jitter to its own. A send side starts from now after any gap.
     */
    private readonly gapsAreLateness = false,
  ) {}

  push(job: Job): void {
    this.queue.push(job);
    this.queuedBytes += job.bytes.length - job.offset;
    if (!this.pumping) void this.pump();
  }

  fail(error: Error): void {
    for (const job of this.queue.splice(0)) job.reject?.(error);
    this.queuedBytes = 0;
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    // The line was idle until now: it is free from now on, not from some time in the past.
    const now = this.clock.now();
    if (!this.gapsAreLateness || now - this.nextFree > this.catchUpMs) this.nextFree = Math.max(this.nextFree, now);
    try {
      while (this.queue.length > 0) {
        const job = this.queue[0]!;
        try {
          while (job.offset < job.bytes.length) {
            let stop = this.stopped();
            if (stop) throw stop;
            const slice = job.bytes.subarray(job.offset, job.offset + this.sliceBytes);
            const now = this.clock.now();
            if (this.nextFree < now - this.catchUpMs) this.nextFree = now; // too far behind: do not burst
            this.nextFree += slice.length * this.msPerByte; // when the last bit of this slice is in
            if (this.nextFree - now > this.aheadMs) await this.clock.sleep(this.nextFree - now);
            stop = this.stopped();
            if (stop) throw stop;
            this.passed += slice.length; // counted as handed on when handed (a receiver may look at once)
            await this.pass(slice);
            job.offset += slice.length;
            this.queuedBytes -= slice.length;
            this.drained();
          }
          this.queue.shift();
          job.resolve?.();
        } catch (error) {
          if (this.queue[0] === job) {
            this.queue.shift();
            this.queuedBytes -= job.bytes.length - job.offset;
          }
          job.reject?.(error instanceof Error ? error : new Error(String(error)));
        }
      }
    } finally {
      this.pumping = false;
    }
  }
}

/**
 * Wrap `inner` so it behaves like a UART at `baud`: write() resolves when its last slice has
 * been handed to the inner transport at the line rate, and received bytes reach onData() no
 * faster than the line rate (unless `receive: false`). Each direction has its own line clock
 * (full duplex, as a UART's TX and RX lines are separate).
 */
export function paced(inner: Transport, options: PacingOptions): PacedTransport {
  const { baud } = options;
  if (!Number.isFinite(baud) || baud <= 0) throw new RangeError(`baud must be a positive number, got ${baud}`);
  const bitsPerByte = options.bitsPerByte ?? 10;
  const msPerByte = (1000 * bitsPerByte) / baud;
  const sliceBytes = Math.max(1, Math.floor((options.sliceMs ?? 4) / msPerByte));
  const aheadMs = options.aheadMs ?? 2;
  const catchUpMs = options.catchUpMs ?? 100;
  const clock = options.clock ?? realClock;
  const highWater = options.receiveHighWater ?? 16 * 1024;
  const limit = options.receiveLimit ?? 1024 * 1024;
  const flow = options.readFlow;

  const core = new EndpointCore(`${inner.description} paced at ${baud} baud`);
  let closing: Promise<void> | undefined;
  let overruns = 0;
  let readPaused = false;
  const stopped = () => (closing || core.ended ? core.closedError() : undefined);

  const tx = new Line(msPerByte, sliceBytes, aheadMs, catchUpMs, clock, stopped, (slice) => inner.write(slice));
  const rx = new Line(
    msPerByte,
    sliceBytes,
    aheadMs,
    catchUpMs,
    clock,
    stopped,
    (slice) => core.deliver(slice),
    () => {
      if (readPaused && rx.queuedBytes <= highWater / 2) {
        readPaused = false;
        flow!.resume();
      }
    },
    true,
  );

  if (options.receive === false) {
    inner.onData((chunk) => core.deliver(chunk));
  } else {
    inner.onData((chunk) => {
      if (core.ended || chunk.length === 0) return;
      if (!flow && rx.queuedBytes + chunk.length > limit) {
        overruns += chunk.length; // nobody empties the receiver this fast: a UART overrun
        return;
      }
      rx.push({ bytes: chunk, offset: 0 });
      if (flow && !readPaused && rx.queuedBytes > highWater) {
        readPaused = true;
        flow.pause();
      }
    });
  }
  inner.onClose((error) => {
    // Bytes already received when the peer went away are handed on (they were on the wire).
    if (!closing) for (const job of rx.queue.splice(0)) core.deliver(job.bytes.subarray(job.offset));
    core.end(closing ? undefined : error);
    tx.fail(core.closedError());
    rx.fail(core.closedError());
  });

  const write = async (bytes: Uint8Array): Promise<void> => {
    checkBytes(bytes);
    if (closing || core.ended) throw core.closedError();
    return new Promise<void>((resolve, reject) => tx.push({ bytes: Uint8Array.from(bytes), offset: 0, resolve, reject }));
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      tx.fail(core.closedError());
      rx.fail(core.closedError());
      if (readPaused) flow!.resume();
      await inner.close();
      core.end();
    })();
    return closing;
  };
  // defineProperties, not Object.assign, which would copy the getters' values once.
  return Object.defineProperties(makeTransport(core, write, close), {
    bytesSent: { get: () => tx.passed, enumerable: true },
    bytesReceived: { get: () => (options.receive === false ? 0 : rx.passed), enumerable: true },
    overruns: { get: () => overruns, enumerable: true },
  }) as PacedTransport;
}
