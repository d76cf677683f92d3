// `qkt bench traffic`: the paper's Tables I and II (section VI) regenerated from service traffic
// (docs/traffic.md). Terminals of classes A-E send their traffic at the field's pace (T = one
// minute) through their crypto modules to the master station, each over its own shaped network
// link (`qkt net relay`'s shaper), at once; the KMD's supply is the paper's 11 kbit/s online key.
// Table I: per class, access delay (median, p99), cipher rate, key use rate, packet loss. Table
// II: per transmission rate class, one terminal's link at that rate carrying half its rate in
// sealed messages (class E's mix, scaled), access delay and packet loss.
import { CLASSES, runTraffic } from '../station/traffic.js';
import type { ClassId, TrafficResult } from '../station/traffic.js';
import { startTrafficRig } from '../station/traffic-rig.js';
import { startShapedRelay } from '../transports/shaped-relay.js';
import type { ShapedRelay } from '../transports/shaped-relay.js';
import type { ShapeOptions } from '../transports/shaper.js';
import type { LinkClient } from '../link/client.js';

/** The paper's Table I (OTP, 11 kbit/s online key, T = 1 min) and Table II, as printed. */
export const PAPER_TABLE_I: Record<ClassId, { accessDelayS: number; cipherKbps: number; keyUseRate: number; lossBelowPercent: number }> = {
  A: { accessDelayS: 0.05, cipherKbps: 9.78, keyUseRate: 0.889, lossBelowPercent: 2.03 },
  B: { accessDelayS: 0.05, cipherKbps: 9.12, keyUseRate: 0.829, lossBelowPercent: 1.85 },
  C: { accessDelayS: 0.06, cipherKbps: 8.64, keyUseRate: 0.785, lossBelowPercent: 1.62 },
  D: { accessDelayS: 0.06, cipherKbps: 4.58, keyUseRate: 0.416, lossBelowPercent: 1.05 },
  E: { accessDelayS: 0.09, cipherKbps: 4.18, keyUseRate: 0.38, lossBelowPercent: 0.96 },
};
export const PAPER_TABLE_II: Array<{ kbps: number; accessDelayBelowS: number; lossBelowPercent: number }> = [
  { kbps: 9.6, accessDelayBelowS: 1, lossBelowPercent: 1.98 },
  { kbps: 19.2, accessDelayBelowS: 1, lossBelowPercent: 2.15 },
  { kbps: 38.4, accessDelayBelowS: 1, lossBelowPercent: 2.42 },
  { kbps: 56.0, accessDelayBelowS: 2, lossBelowPercent: 2.63 },
  { kbps: 64.0, accessDelayBelowS: 2, lossBelowPercent: 3.36 },
];

export interface NetworkShape {
  /** bit/s of each terminal's link (Table I), both ways. */
  rate: number;
  latencyMs: number;
  jitterMs: number;
  /** Probability a TCP segment is lost (and sent again after the RTO). */
  loss: number;
}

export interface TrafficBenchResult {
  bench: 'traffic';
  date: string;
  node: string;
  mode: 'otp';
  tMs: number;
  supplyBitsPerSecond: number;
  /** Seconds of traffic per run. */
  seconds: number;
  deadlineMs: number;
  seed: number;
  network: NetworkShape;
  tableI: Array<TrafficResult & { paper: (typeof PAPER_TABLE_I)[ClassId] }>;
  tableII: Array<{ kbps: number; offeredShare: number; scale: number; result: TrafficResult; paper: (typeof PAPER_TABLE_II)[number] }>;
}

const FIELD_T_MS = 60_000;

function shape(n: NetworkShape, seed: number): ShapeOptions {
  return { rate: n.rate, latencyMs: n.latencyMs, jitterMs: n.jitterMs, loss: n.loss, seed };
}

/** A relay in front of the station shaped as `n`, and a connection through it with `t`'s certificate. */
async function viaRelay(stationAddress: string, n: NetworkShape, seed: number): Promise<ShapedRelay> {
  const target = stationAddress.replace(/^tls:/, '');
  return startShapedRelay({ listen: '127.0.0.1:0', target, up: shape(n, seed), down: shape(n, seed ^ 0x5bd1e995) });
}

export async function benchTraffic(o: { seconds?: number; seed?: number; network?: Partial<NetworkShape>; log?: (s: string) => void } = {}): Promise<TrafficBenchResult> {
  const seconds = o.seconds ?? 30;
  const seed = o.seed ?? 1;
  const supply = 11_000;
  const deadlineMs = 3000;
  const network: NetworkShape = { rate: 64_000, latencyMs: 20, jitterMs: 5, loss: 0.01, ...o.network };
  const classes: ClassId[] = ['A', 'B', 'C', 'D', 'E'];
  const rates = PAPER_TABLE_II.map((r) => r.kbps);
  const ids = [...classes.map((c) => `T${c}`), ...rates.map((_, i) => `R${i + 1}`)];
  o.log?.(`traffic: ${ids.length} terminals, ${seconds} s of traffic each at T = 1 min over shaped links, the station on mutual TLS`);
  // 3 Mbit each: the paper's initial offline key; class A spends about 10 kbit/s.
  const rig = await startTrafficRig({ ids, bits: 3 * 2 ** 20, supplyBitsPerSecond: supply });
  const relays: ShapedRelay[] = [];
  const links: LinkClient[] = [];
  try {
    const connect = async (id: string, n: NetworkShape, s: number): Promise<LinkClient> => {
      const relay = await viaRelay(rig.station.address, n, s);
      relays.push(relay);
      const c = await rig.terminals.find((t) => t.id === id)!.connect(`tls:127.0.0.1:${relay.address.port}`);
      links.push(c);
      return c;
    };
    // Table I: the five classes at once, each on its own link.
    const tableI = await Promise.all(
      classes.map(async (c, i) => {
        const t = rig.terminals.find((x) => x.id === `T${c}`)!;
        const station = await connect(t.id, network, seed + i);
        const r = await runTraffic({ terminal: t.module, station, terminalId: t.id, cls: CLASSES[c], tMs: FIELD_T_MS, durationMs: seconds * 1000, seed: seed + i, mode: 'otp', supplyBitsPerSecond: supply, deadlineMs });
        o.log?.(`  class ${c}: ${r.messages} messages, cipher ${(r.cipherBitsPerSecond / 1000).toFixed(2)} kbit/s, key use ${r.keyUseRate}, loss ${(r.lossRate * 100).toFixed(2)}%`);
        return { ...r, paper: PAPER_TABLE_I[c] };
      }),
    );
    // Table II: class E's mix scaled so the sealed messages fill half of each rate class.
    const eCipher = tableI.find((r) => r.class === 'E')!.cipherBitsPerSecond;
    const offeredShare = 0.5;
    const tableII = await Promise.all(
      PAPER_TABLE_II.map(async (p, i) => {
        const id = `R${i + 1}`;
        const t = rig.terminals.find((x) => x.id === id)!;
        const station = await connect(id, { ...network, rate: p.kbps * 1000 }, seed + 100 + i);
        const scale = (offeredShare * p.kbps * 1000) / eCipher;
        const result = await runTraffic({ terminal: t.module, station, terminalId: id, cls: CLASSES.E, tMs: FIELD_T_MS, durationMs: seconds * 1000, seed: seed + 100 + i, mode: 'otp', supplyBitsPerSecond: supply, deadlineMs, scale });
        o.log?.(`  ${p.kbps} kbit/s: ${result.messages} messages, delay median ${result.accessDelayMs?.median ?? '-'} ms, loss ${(result.lossRate * 100).toFixed(2)}%`);
        return { kbps: p.kbps, offeredShare, scale: Math.round(scale * 1000) / 1000, result, paper: p };
      }),
    );
    return { bench: 'traffic', date: new Date().toISOString(), node: process.version, mode: 'otp', tMs: FIELD_T_MS, supplyBitsPerSecond: supply, seconds, deadlineMs, seed, network, tableI, tableII };
  } finally {
    for (const l of links) await l.close().catch(() => undefined);
    for (const r of relays) await r.close().catch(() => undefined);
    await rig.close();
  }
}

const ms = (x: number | undefined) => (x === undefined ? '-' : (x / 1000).toFixed(3));

export function formatTrafficBench(r: TrafficBenchResult): string {
  const n = r.network;
  return [
    `### traffic: Tables I and II of the paper, regenerated (${r.node}, ${r.date.slice(0, 10)})`,
    '',
    `OTP, online key supply ${r.supplyBitsPerSecond / 1000} kbit/s, T = ${r.tMs / 1000} s, ${r.seconds} s of traffic per terminal, all terminals at once; ` +
      `each terminal on its own shaped TCP link (${n.rate / 1000} kbit/s for Table I, ${n.latencyMs} ms latency, ±${n.jitterMs} ms jitter, ${(n.loss * 100).toFixed(1)}% of segments lost and sent again after the RTO), ` +
      `the station on mutual TLS 1.3. A message counts as lost when the station has not opened it ${r.deadlineMs / 1000} s after it existed, or refused it. Seed ${r.seed}.`,
    '',
    'Table I: per user class (ours | the paper)',
    '',
    '| class | messages | access delay median s | p99 s | paper s | cipher rate kbit/s | paper | key use rate | paper | packet loss % | paper |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...r.tableI.map(
      (t) =>
        `| ${t.class} (${CLASSES[t.class].name}) | ${t.messages} | ${ms(t.accessDelayMs?.median)} | ${ms(t.accessDelayMs?.p99)} | ${t.paper.accessDelayS} | ${(t.cipherBitsPerSecond / 1000).toFixed(2)} | ${t.paper.cipherKbps} | ${t.keyUseRate.toFixed(3)} | ${t.paper.keyUseRate} | ${(t.lossRate * 100).toFixed(2)} | < ${t.paper.lossBelowPercent} |`,
    ),
    '',
    `Table II: per transmission rate class, one terminal whose sealed messages fill ${Math.round((r.tableII[0]?.offeredShare ?? 0) * 100)}% of the link (class E's mix, scaled)`,
    '',
    '| rate class kbit/s | messages | access delay median s | p99 s | paper s | packet loss % | paper |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...r.tableII.map((t) => `| ${t.kbps} | ${t.result.messages} | ${ms(t.result.accessDelayMs?.median)} | ${ms(t.result.accessDelayMs?.p99)} | < ${t.paper.accessDelayBelowS} | ${(t.result.lossRate * 100).toFixed(2)} | < ${t.paper.lossBelowPercent} |`),
    '',
    'How each figure is computed: access delay, from the moment a message exists (its scheduled time) to the station\'s answer that it opened it; cipher rate, the bits of sealed service messages the station opened over the run; key use rate, the key bits the station consumed (the module the same) per second over the 11 kbit/s supply; packet loss, messages not opened within the deadline or refused, over messages sent.',
  ].join('\n');
}
