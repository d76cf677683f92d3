// `qkt link A B --baud N [--noise R] [--seed S]`: a virtual cable between two ptys or TCP ends,
// paced like a UART at N baud both ways, with seeded byte noise (a bit flipped in R of bytes, R/2
// dropped, garbage inserted at R/10), until Ctrl-C. The relay is transports/cable.ts, the same the
// benchmarks' paced cable runs, so a noisy run seen on the bench can be reproduced with its seed.
import { randomInt } from 'node:crypto';
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { joinCable, listenTcpEnd, ptyEnd } from '../../transports/cable.js';
import type { CableEnd, CableStats, TcpEndListener } from '../../transports/cable.js';
import { parseHostPort } from '../../transports/tcp.js';

export interface LinkResult {
  event: 'ready';
  a: string;
  b: string;
  baud: number;
  /** Fraction of bytes corrupted (0.001 for 0.1%). */
  noise: number;
  seed: number;
  pid: number;
}

/** `0.1%` or a fraction `0.001`; from 0 to 100%. `option` names it in the refusal (`qkt bench --rates` too). */
export function parseNoise(text: string, option = '--noise'): number {
  const m = /^(\d+(?:\.\d+)?|\.\d+)(%?)$/.exec(text.trim());
  const r = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(r >= 0 && r <= 1)) throw new CliError(`${option} must be a percentage of bytes from 0% to 100% (e.g. 0.1%), got ${JSON.stringify(text)}`, Exit.USAGE);
  return r;
}

type Spec = { kind: 'pty' } | { kind: 'tcp'; host: string; port: number };

function parseEnd(text: string): Spec {
  if (text === 'pty') return { kind: 'pty' };
  if (text.startsWith('tcp:')) {
    try {
      const { host, port } = parseHostPort(text, 'tcp');
      return { kind: 'tcp', host, port };
    } catch (e) {
      throw new CliError(`${text}: ${(e as Error).message}`, Exit.USAGE);
    }
  }
  throw new CliError(`cable end ${JSON.stringify(text)} is neither pty nor tcp:HOST:PORT`, Exit.USAGE);
}

const counters = (name: string, s: CableStats['aToB']) =>
  `${name}: ${s.bytesIn} bytes in, ${s.bytesOut} out, ${s.corrupted} corrupted, ${s.dropped} dropped, ${s.inserted} inserted`;

export default defineCommand<LinkResult>({
  async run(v, positionals, io) {
    if (positionals.length !== 2) throw new CliError('give two cable ends: qkt link A B --baud N (each pty or tcp:HOST:PORT)', Exit.USAGE);
    const specs = positionals.map(parseEnd);
    const baud = int(v, 'baud', 300, 12_000_000)!;
    const noiseText = str(v, 'noise');
    const noise = noiseText === undefined ? 0 : parseNoise(noiseText);
    const seed = int(v, 'seed', 0, 0xffffffff) ?? randomInt(0, 0x1_0000_0000);

    // Make every end first (ptys exist, ports are bound), then say ready, then wait for TCP peers.
    const opened: { label: string; end?: CableEnd; listener?: TcpEndListener }[] = [];
    const closeAll = async () => {
      for (const o of opened) {
        if (o.end) {
          await o.end.transport.close().catch(() => undefined);
          await o.end.dispose?.().catch(() => undefined);
        } else await o.listener?.close().catch(() => undefined);
      }
    };
    try {
      for (const s of specs) {
        if (s.kind === 'pty') {
          const end = await ptyEnd();
          opened.push({ label: end.path, end });
        } else {
          const listener = await listenTcpEnd(s.host, s.port);
          const h = listener.address.host;
          opened.push({ label: `tcp:${h.includes(':') ? `[${h}]` : h}:${listener.address.port}`, listener });
        }
      }
    } catch (e) {
      await closeAll();
      throw e;
    }
    const result: LinkResult = { event: 'ready', a: opened[0]!.label, b: opened[1]!.label, baud, noise, seed, pid: process.pid };
    const noisy = noise > 0 ? `, noise ${noise * 100}% (seed ${seed})` : '';
    io.ready(result, `cable ${result.a} <-> ${result.b} at ${baud} baud${noisy}; Ctrl-C to stop`);

    // TCP ends: wait for their one connection (or a stop).
    const stop = io.stopped.then(() => undefined);
    for (const o of opened) {
      if (o.end) continue;
      const end = await Promise.race([o.listener!.end, stop]);
      if (!end) break;
      o.end = end;
      io.log(`${o.label}: connected (${end.description})`);
    }
    if (opened.every((o) => o.end)) {
      const relay = joinCable(opened[0]!.end!, opened[1]!.end!, { baud, noise: { rate: noise, seed } });
      const why = await Promise.race([io.stopped.then(() => undefined), relay.ended]);
      if (why) io.log(`cable ended: ${why.message}`);
      await relay.close();
      io.log(counters('A->B', relay.stats.aToB));
      io.log(counters('B->A', relay.stats.bToA));
    }
    await closeAll();
    return result;
  },
});
