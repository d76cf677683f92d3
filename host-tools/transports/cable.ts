// A virtual cable: a relay between two raw byte ends (pty, TCP socket, in-process) that paces
// each direction like a UART at a baud rate and, optionally, adds seeded byte noise (a bit flipped
// in R of bytes, R/2 dropped, a garbage byte inserted at R/10), both directions. Used by
// `qkt link`, `qkt monitor` (unpaced, with a tap that sees every byte), the benchmarks' paced
// cable (bench/wall-clock.ts) and the HIL suite.
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Transport } from '../../firmware/link/transport.js';
import { mulberry32 } from './faults.js';
import { paced } from './pacing.js';
import { createPtyPair } from './pty-pair.js';
import type { PtyPair } from './pty-pair.js';
import { openSerial } from './serial.js';
import { listenTcp, socketTransport } from './tcp.js';

/** One end of the cable: raw bytes in (no frame splitting), writes out, optional read flow control. */
export interface CableEnd {
  readonly description: string;
  /** Written to (unpaced; the relay paces) and closed by the relay. */
  readonly transport: Transport;
  /** Install the receiver of raw bytes read at this end. */
  listen(onData: (chunk: Uint8Array) => void): void;
  /** Stop and restart reading (back-pressure from a slow line); absent: unbounded buffering. */
  pause?(): void;
  resume?(): void;
  /** Extra teardown after the transport is closed (a socat process, a listener). */
  dispose?(): Promise<void>;
}

export interface NoiseOptions {
  /** Fraction of bytes with one bit flipped, e.g. 0.001 for 0.1%; drops are rate/2, inserts rate/10. */
  rate: number;
  /** PRNG seed (32-bit unsigned); each direction has its own stream derived from it. */
  seed: number;
}

export interface DirectionStats {
  /** Bytes read at the source end. */
  bytesIn: number;
  /** Bytes handed to the destination end (after noise). */
  bytesOut: number;
  corrupted: number;
  dropped: number;
  inserted: number;
}

export interface CableStats {
  /** A to B, and B to A. */
  aToB: DirectionStats;
  bToA: DirectionStats;
}

export interface Relay {
  readonly stats: Readonly<CableStats>;
  /** Resolves when either end goes away (with its error, if any) or close() is called. */
  readonly ended: Promise<Error | undefined>;
  /** Close both ends; idempotent. */
  close(): Promise<void>;
}

/**
 * Byte noise for one direction: per byte, a garbage byte is inserted before it with probability
 * rate/10, then it is dropped with probability rate/2 or has one random bit flipped with
 * probability rate. Per byte, so the output depends only on the seed and the input bytes, not on
 * how they were split into chunks.
 */
export class ByteNoise {
  readonly #rnd: () => number;
  constructor(
    private readonly rate: number,
    seed: number,
    private readonly stats: DirectionStats,
  ) {
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`noise rate must be in [0, 1], got ${rate}`);
    this.#rnd = mulberry32(seed);
  }

  apply(chunk: Uint8Array): Uint8Array {
    if (this.rate === 0) return chunk;
    const out: number[] = [];
    for (const byte of chunk) {
      if (this.#rnd() < this.rate / 10) {
        out.push(Math.floor(this.#rnd() * 256));
        this.stats.inserted++;
      }
      const r = this.#rnd();
      if (r < this.rate / 2) {
        this.stats.dropped++;
      } else if (r < this.rate / 2 + this.rate) {
        out.push(byte ^ (1 << Math.floor(this.#rnd() * 8)));
        this.stats.corrupted++;
      } else {
        out.push(byte);
      }
    }
    return Uint8Array.from(out);
  }
}

/** The noise seed of the B-to-A direction (A to B uses the seed itself): replayable from the seed alone. */
export const backSeed = (seed: number): number => (seed ^ 0x5bd1e995) >>> 0;

const newStats = (): DirectionStats => ({ bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 });

export interface CableOptions {
  /** Line rate: each direction carries at most baud/10 bytes a second (8N1). Absent: unpaced. */
  baud?: number;
  noise?: NoiseOptions;
  /**
   * Sees every chunk as it is handed to the far end (after noise), `from` naming the end it was
   * read at. Called synchronously with a copy the tap may keep; what it throws is its own bug and
   * is swallowed, so a tap can never stall the relay.
   */
  tap?: (from: 'a' | 'b', bytes: Uint8Array) => void;
}

/**
 * Join two ends: bytes read at `a` come out at `b` no faster than baud/10 bytes a second (8N1),
 * with noise if asked, and back. A direction with more than 64 KiB waiting pauses its source, so a
 * fast sender is held back by the kernel (pty buffer, TCP window), as by a slow UART.
 */
export function joinCable(a: CableEnd, b: CableEnd, options: CableOptions): Relay {
  const stats: CableStats = { aToB: newStats(), bToA: newStats() };
  const out = (tr: Transport): Transport => (options.baud === undefined ? tr : paced(tr, { baud: options.baud, receive: false }));
  const outA = out(a.transport);
  const outB = out(b.transport);
  let closing: Promise<void> | undefined;
  let finish: (error: Error | undefined) => void = () => undefined;
  const ended = new Promise<Error | undefined>((resolve) => (finish = resolve));

  const direction = (from: CableEnd, name: 'a' | 'b', out: Transport, s: DirectionStats, seed: number | undefined) => {
    const noise = options.noise && options.noise.rate > 0 ? new ByteNoise(options.noise.rate, seed!, s) : undefined;
    let waiting = 0;
    let paused = false;
    from.listen((chunk) => {
      if (closing) return;
      s.bytesIn += chunk.length;
      const bytes = noise ? noise.apply(chunk) : Uint8Array.from(chunk);
      if (bytes.length === 0) return;
      s.bytesOut += bytes.length;
      if (options.tap) {
        try {
          options.tap(name, Uint8Array.from(bytes));
        } catch {
          // the relay forwards regardless (see CableOptions.tap)
        }
      }
      waiting += bytes.length;
      if (waiting > 64 * 1024 && from.pause && !paused) {
        paused = true;
        from.pause();
      }
      out.write(bytes).then(
        () => {
          waiting -= bytes.length;
          if (paused && waiting <= 32 * 1024) {
            paused = false;
            from.resume?.();
          }
        },
        () => undefined, // the cable is being closed
      );
    });
  };
  const seed = options.noise?.seed ?? 0;
  direction(a, 'a', outB, stats.aToB, seed >>> 0);
  direction(b, 'b', outA, stats.bToA, backSeed(seed));
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await Promise.allSettled([outA.close(), outB.close()]);
      await Promise.allSettled([a.dispose?.(), b.dispose?.()]);
      finish(undefined);
    })();
    return closing;
  };
  a.transport.onClose((error) => finish(error ?? new Error(`${a.description}: closed`)));
  b.transport.onClose((error) => finish(error ?? new Error(`${b.description}: closed`)));
  return { stats, ended, close };
}

/**
 * A pty end: a socat pty pair; the user's program opens `path`, the relay reads and writes the
 * other side raw (not through the serial transport's 0x00 splitter, which holds bytes until a 0x00).
 */
export async function ptyEnd(): Promise<CableEnd & { path: string }> {
  const pair: PtyPair = await createPtyPair();
  let port;
  try {
    port = await openSerial(pair.b);
  } catch (e) {
    await pair.close();
    throw e;
  }
  const raw = port.port;
  return {
    path: pair.a,
    description: `pty ${pair.a}`,
    transport: port,
    listen: (onData) => {
      raw.unpipe(port.parser);
      raw.on('data', (chunk: Buffer) => onData(chunk));
      raw.resume(); // unpipe() left the stream paused
    },
    pause: () => raw.pause(),
    resume: () => raw.resume(),
    dispose: () => pair.close(),
  };
}

/** A TCP end being listened for: `address` is bound now, `end` resolves with the first connection. */
export interface TcpEndListener {
  readonly address: { host: string; port: number };
  readonly end: Promise<CableEnd>;
  /** Stop listening (and close an accepted connection); idempotent. */
  close(): Promise<void>;
}

/**
 * A TCP end: listen on HOST:PORT and take the first connection accepted; later ones are closed at
 * once (one cable, one peer).
 */
export async function listenTcpEnd(host: string, port: number): Promise<TcpEndListener> {
  let accept: (v: CableEnd) => void = () => undefined;
  const end = new Promise<CableEnd>((resolve) => (accept = resolve));
  let first = true;
  const listener = await listenTcp(host, port, (transport, socket) => {
    if (!first) {
      socket.destroy();
      return;
    }
    first = false;
    accept({
      description: transport.description,
      transport,
      listen: (onData) => transport.onData(onData),
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      dispose: () => listener.close(),
    });
  });
  return { address: listener.address, end, close: () => listener.close() };
}

/**
 * An existing serial device (/dev/ttyUSB0, a USB CDC-ACM port, a /dev/pts/N another program made)
 * opened raw at `baudRate`; the relay reads its bytes as they come, not split at 0x00.
 */
export async function serialEnd(path: string, baudRate?: number): Promise<CableEnd & { path: string }> {
  const port = await openSerial(path, baudRate === undefined ? {} : { baudRate });
  const raw = port.port;
  return {
    path,
    description: `serial ${path}`,
    transport: port,
    listen: (onData) => {
      raw.unpipe(port.parser);
      raw.on('data', (chunk: Buffer) => onData(chunk));
      raw.resume();
    },
    pause: () => raw.pause(),
    resume: () => raw.resume(),
  };
}

/** A TCP end connected to HOST:PORT (a module served by `qkt terminal run --listen tcp:...`). */
export async function connectTcpEnd(host: string, port: number): Promise<CableEnd> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port });
    s.once('error', reject);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
  });
  const transport = socketTransport(socket, `tcp ${host.includes(':') ? `[${host}]` : host}:${port}`);
  return {
    description: transport.description,
    transport,
    listen: (onData) => transport.onData(onData),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
  };
}

/** A TCP end that serves one connection at a time for as long as it runs (see tcpServerEnd). */
export interface TcpServerEnd extends CableEnd {
  readonly address: { host: string; port: number };
}

/**
 * A TCP end for a relay that outlives its peers (`qkt monitor`): listen on HOST:PORT and carry one
 * connection at a time; when it closes, the next connection takes its place, as a host program is
 * started again on the same cable. Connections arriving while one is open are closed at once.
 * While none is open, bytes written to this end are dropped (a cable with nothing plugged in).
 * The end closes only with close(). `events` hears connections come and go (for a log).
 */
export async function tcpServerEnd(host: string, port: number, events: { connected?(description: string): void; disconnected?(description: string, error?: Error): void } = {}): Promise<TcpServerEnd> {
  let current: { transport: Transport; socket: Socket } | undefined;
  let onData: (chunk: Uint8Array) => void = () => undefined;
  let paused = false;
  const closeListeners: ((error?: Error) => void)[] = [];
  let closing: Promise<void> | undefined;
  const listener = await listenTcp(host, port, (transport, socket) => {
    if (current || closing) {
      socket.destroy();
      return;
    }
    const conn = { transport, socket };
    current = conn;
    if (paused) socket.pause();
    transport.onData((chunk) => onData(chunk));
    transport.onClose((error) => {
      if (current === conn) current = undefined;
      if (!closing) events.disconnected?.(transport.description, error);
    });
    events.connected?.(transport.description);
  });
  const description = listener.description;
  const transport: Transport = {
    description,
    write: async (bytes) => {
      if (closing) throw new Error(`${description}: closed`);
      // No peer, or it is going away: the bytes fall on the floor, as on an unplugged cable.
      await current?.transport.write(bytes).catch(() => undefined);
    },
    onData: (l) => (onData = l),
    onClose: (l) => void closeListeners.push(l),
    close: () => {
      closing ??= listener.close().then(() => {
        for (const l of closeListeners.splice(0)) l(undefined);
      });
      return closing;
    },
  };
  return {
    address: listener.address,
    description,
    transport,
    listen: (l) => (onData = l),
    pause: () => {
      paused = true;
      current?.socket.pause();
    },
    resume: () => {
      paused = false;
      current?.socket.resume();
    },
  };
}
