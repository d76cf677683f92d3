// A TCP relay through a shaped network link (`qkt net relay`): listens, and for each connection
// accepted connects to the target and carries both byte streams through a shaper per direction
// (shaper.ts), so a terminal front end and the master station talk as over a 9.6 kbit/s link with
// latency, jitter and loss. Bytes are never altered (mutual TLS runs through it), only delayed.
import net from 'node:net';
import { DEFAULT_HIGH_WATER_BYTES, ShapedChannel } from './shaped-channel.js';
import type { TimerClock } from './shaped-channel.js';
import { resolveShape, wireMs } from './shaper.js';
import type { ShapeOptions, ShaperStats } from './shaper.js';
import { parseHostPort } from './tcp.js';

export interface ShapedRelayOptions {
  /** HOST:PORT to listen on (port 0: any free port; see `address`). */
  listen: string;
  /** HOST:PORT each accepted connection is carried to. */
  target: string;
  /** Client to target (terminal to station). Its seed is the base of every connection's seeds. */
  up: ShapeOptions;
  /** Target to client. */
  down: ShapeOptions;
  /** A source is paused while its direction holds more than this; default DEFAULT_HIGH_WATER_BYTES. */
  highWaterBytes?: number;
  clock?: TimerClock;
  /** Connections coming and going, for a log. */
  events?: {
    connected?(id: number, from: string): void;
    closed?(id: number, stats: { up: ShaperStats; down: ShaperStats }, error?: Error): void;
  };
}

export interface ShapedRelayStats {
  /** Connections accepted so far, and open now. */
  connections: number;
  open: number;
  /** Sums over every connection, closed ones included (queue delay: mean over segments, max of maxima). */
  up: ShaperStats;
  down: ShaperStats;
}

export interface ShapedRelay {
  readonly address: { host: string; port: number };
  readonly stats: ShapedRelayStats;
  /** Stop listening and reset every open connection; idempotent. */
  close(): Promise<void>;
}

/**
 * The seed of connection `n` (0, 1, ...) in one direction: the same --seed and the same order of
 * connections give the same losses and jitter. Up uses (seed + n x golden ratio), down that xor'd
 * with a constant, as `qkt link` derives its back direction (cable.ts backSeed).
 */
export const connectionSeed = (seed: number, n: number, direction: 'up' | 'down'): number => {
  const s = (seed + Math.imul(n, 0x9e3779b9)) >>> 0;
  return direction === 'up' ? s : (s ^ 0x5bd1e995) >>> 0;
};

export function sumStats(all: readonly ShaperStats[]): ShaperStats {
  const out: ShaperStats = { bytesIn: 0, bytesOut: 0, segments: 0, lostSegments: 0, retransmissions: 0, queueDelayMs: { mean: 0, max: 0 }, pendingBytes: 0 };
  let delayTotal = 0;
  for (const s of all) {
    out.bytesIn += s.bytesIn;
    out.bytesOut += s.bytesOut;
    out.segments += s.segments;
    out.lostSegments += s.lostSegments;
    out.retransmissions += s.retransmissions;
    out.pendingBytes += s.pendingBytes;
    delayTotal += s.queueDelayMs.mean * s.segments;
    out.queueDelayMs.max = Math.max(out.queueDelayMs.max, s.queueDelayMs.max);
  }
  out.queueDelayMs.mean = out.segments === 0 ? 0 : delayTotal / out.segments;
  return out;
}

/**
 * Start the relay. Per connection, each direction has its own shaper; a FIN is passed on after the
 * bytes before it have been delivered (half-close is kept: one side may end while the other still
 * sends), an error or reset on either socket resets the other at once. The RTO of each direction is
 * reckoned from the real round trip: both latencies, a full segment one way and an ACK the other.
 */
export async function startShapedRelay(options: ShapedRelayOptions): Promise<ShapedRelay> {
  const listen = parseHostPort(options.listen, 'tcp');
  const target = parseHostPort(options.target, 'tcp');
  const up = resolveShape(options.up);
  const down = resolveShape(options.down);
  const high = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
  if (!(Number.isInteger(high) && high > 0)) throw new RangeError(`highWaterBytes must be a positive whole number, got ${high}`);
  const rtt = (a: typeof up, b: typeof up) => a.latencyMs + b.latencyMs + wireMs(a.mssBytes, a.overheadBytes, a.rate) + wireMs(0, b.overheadBytes, b.rate);
  const upShape = resolveShape({ ...options.up, baseRttMs: options.up.baseRttMs ?? rtt(up, down) });
  const downShape = resolveShape({ ...options.down, baseRttMs: options.down.baseRttMs ?? rtt(down, up) });

  const finished: { up: ShaperStats; down: ShaperStats }[] = [];
  const live = new Map<number, { up: ShapedChannel; down: ShapedChannel; reset(): void }>();
  let count = 0;

  const onConnection = (client: net.Socket): void => {
    const id = count++;
    const from = `${client.remoteAddress}:${client.remotePort}`;
    const server = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    client.setNoDelay(true);
    server.setNoDelay(true);
    let done = false;
    let failure: Error | undefined;

    const direction = (src: net.Socket, dst: net.Socket, shape: typeof upShape, which: 'up' | 'down') => {
      let paused = false;
      const backlog = () => channel.pendingBytes + dst.writableLength;
      const relieve = () => {
        if (paused && backlog() <= high / 2) {
          paused = false;
          src.resume();
        }
      };
      const channel: ShapedChannel = new ShapedChannel({
        shape: { ...shape, seed: connectionSeed(up.seed, id, which) },
        onData: (bytes) => void (dst.destroyed ? undefined : dst.write(bytes)),
        onProgress: relieve,
        ...(options.clock ? { clock: options.clock } : {}),
      });
      dst.on('drain', relieve);
      src.on('data', (chunk: Buffer) => {
        channel.write(chunk);
        if (!paused && backlog() > high) {
          paused = true;
          src.pause();
        }
      });
      // The FIN follows the data: passed on once everything before it is delivered.
      src.on('end', () => channel.end(() => void (dst.destroyed ? undefined : dst.end())));
      return channel;
    };
    const upCh = direction(client, server, upShape, 'up');
    const downCh = direction(server, client, downShape, 'down');

    const reset = () => {
      upCh.destroy();
      downCh.destroy();
      if (!client.destroyed) client.resetAndDestroy();
      if (!server.destroyed) server.resetAndDestroy();
    };
    const onError = (e: Error) => {
      failure ??= e;
      reset();
    };
    client.on('error', onError);
    server.on('error', onError);
    let closedSockets = 0;
    const onClose = () => {
      if (++closedSockets < 2) {
        // One side gone for good (both halves closed): nothing more can pass; close the other once
        // its pending bytes are through, or at once if it was reset (the 'error' above).
        return;
      }
      if (done) return;
      done = true;
      upCh.destroy();
      downCh.destroy();
      live.delete(id);
      const stats = { up: upCh.stats, down: downCh.stats };
      finished.push(stats);
      options.events?.closed?.(id, stats, failure);
    };
    client.on('close', onClose);
    server.on('close', onClose);
    live.set(id, { up: upCh, down: downCh, reset });
    options.events?.connected?.(id, from);
  };

  const server = net.createServer({ allowHalfOpen: true }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as net.AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    address: { host: bound.address, port: bound.port },
    get stats(): ShapedRelayStats {
      const all = [...finished, ...[...live.values()].map((c) => ({ up: c.up.stats, down: c.down.stats }))];
      return { connections: count, open: live.size, up: sumStats(all.map((s) => s.up)), down: sumStats(all.map((s) => s.down)) };
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of live.values()) c.reset();
      });
      return closing;
    },
  };
}
