// `qkt net relay --listen HOST:PORT --to HOST:PORT --rate R [--latency D] [--jitter D] [--loss P]
// [--seed S]`: a TCP relay through a shaped network link (transports/shaped-relay.ts), the network
// between terminal front ends and the master station at one of Table II's rate classes, until Ctrl-C.
import { randomInt } from 'node:crypto';
import { defineCommand, int, rateOption, str, CliError, Exit } from '../command.js';
import type { Values } from '../command.js';
import { parseDuration, parseFraction } from '../../units.js';
import { startShapedRelay } from '../../transports/shaped-relay.js';
import type { ShapeOptions, ShaperStats } from '../../transports/shaper.js';
import { DEFAULT_MSS_BYTES, DEFAULT_OVERHEAD_BYTES } from '../../transports/shaper.js';
import { parseHostPort } from '../../transports/tcp.js';

export interface NetRelayReady {
  event: 'ready';
  /** The bound address, HOST:PORT (the real port when 0 was asked). */
  listen: string;
  to: string;
  /** bit/s, each direction. */
  rate: number;
  latencyMs: number;
  jitterMs: number;
  /** Fraction of segment transmissions lost (0.01 for 1%). */
  loss: number;
  seed: number;
  mssBytes: number;
  overheadBytes: number;
  pid: number;
}

export interface NetRelayEnd {
  event: 'end';
  connections: number;
  up: ShaperStats;
  down: ShaperStats;
}

const duration = (v: Values, name: string): number => {
  const x = str(v, name);
  if (x === undefined) return 0;
  try {
    return parseDuration(x);
  } catch (e) {
    throw new CliError(`--${name}: ${(e as Error).message}`, Exit.USAGE);
  }
};

const address = (v: Values, name: string): string => {
  const x = str(v, name)!;
  try {
    const { host, port } = parseHostPort(x, 'tcp');
    return `${host.includes(':') ? `[${host}]` : host}:${port}`;
  } catch (e) {
    throw new CliError(`--${name}: ${(e as Error).message}`, Exit.USAGE);
  }
};

const line = (name: string, s: ShaperStats) =>
  `${name}: ${s.bytesIn} bytes in, ${s.bytesOut} out, ${s.segments} segments, ${s.lostSegments} lost, ${s.retransmissions} retransmissions, queue delay mean ${s.queueDelayMs.mean.toFixed(1)} ms, max ${s.queueDelayMs.max.toFixed(1)} ms`;

export default defineCommand<NetRelayReady>({
  async run(v, _positionals, io) {
    const listen = address(v, 'listen');
    const to = address(v, 'to');
    const rate = rateOption(v, 'rate')!;
    const latencyMs = duration(v, 'latency');
    const jitterMs = duration(v, 'jitter');
    // A timer takes at most 2^31 - 1 ms; a minute each is already no network anyone models.
    for (const [name, ms] of [['latency', latencyMs], ['jitter', jitterMs]] as const) {
      if (ms > 60_000) throw new CliError(`--${name} must be at most 60s, got ${ms} ms`, Exit.USAGE);
    }
    const lossText = str(v, 'loss');
    let loss = 0;
    if (lossText !== undefined) {
      try {
        loss = parseFraction(lossText);
      } catch (e) {
        throw new CliError(`--loss: ${(e as Error).message}`, Exit.USAGE);
      }
      if (loss >= 1) throw new CliError('--loss must be below 100% (a link that loses every segment delivers nothing)', Exit.USAGE);
    }
    const seed = int(v, 'seed', 0, 0xffffffff) ?? randomInt(0, 0x1_0000_0000);
    const shape: ShapeOptions = { rate, latencyMs, jitterMs, loss, seed };
    const relay = await startShapedRelay({
      listen,
      target: to,
      up: shape,
      down: shape,
      events: {
        connected: (id, from) => io.log(`connection ${id} from ${from}`),
        closed: (id, s, error) => io.log(`connection ${id} closed${error ? ` (${error.message})` : ''}: up ${s.up.bytesOut} bytes, ${s.up.lostSegments} lost; down ${s.down.bytesOut} bytes, ${s.down.lostSegments} lost`),
      },
    });
    const h = relay.address.host;
    const ready: NetRelayReady = {
      event: 'ready',
      listen: `${h.includes(':') ? `[${h}]` : h}:${relay.address.port}`,
      to,
      rate,
      latencyMs,
      jitterMs,
      loss,
      seed,
      mssBytes: DEFAULT_MSS_BYTES,
      overheadBytes: DEFAULT_OVERHEAD_BYTES,
      pid: process.pid,
    };
    io.ready(ready, `net relay ${ready.listen} -> ${to} at ${rate / 1000} kbit/s, latency ${latencyMs} ms, jitter ${jitterMs} ms, loss ${loss * 100}% (seed ${seed}); Ctrl-C to stop`);
    await io.stopped;
    const stats = relay.stats;
    await relay.close();
    const end: NetRelayEnd = { event: 'end', connections: stats.connections, up: stats.up, down: stats.down };
    if (io.json) process.stdout.write(JSON.stringify(end) + '\n');
    else {
      io.log(line('up', stats.up));
      io.log(line('down', stats.down));
    }
    return ready;
  },
});
