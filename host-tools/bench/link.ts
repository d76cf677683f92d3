// `qkt bench link`: goodput of a windowed bulk transfer over a pty pair, unpaced and paced to a
// real line rate, as a fraction of that line rate (8N1: baud/10 bytes per second).
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { DiagCmd, Group } from '../../firmware/link/groups.js';
import { sendBulk } from '../link/bulk-sender.js';
import { openLinkRig } from './link-rig.js';
import type { RigTransport } from './link-rig.js';

export interface LinkBenchCase {
  name: string;
  transport: RigTransport;
  baud: number | null;
  bytes: number;
  seconds: number;
  goodputBytesPerSecond: number;
  lineRateBytesPerSecond: number | null;
  /** goodput / line rate, for paced cases. */
  lineRateFraction: number | null;
  chunkBytes: number;
  window: number;
  restarts: number;
}

export interface LinkBenchResult {
  bench: 'link';
  date: string;
  node: string;
  cases: LinkBenchCase[];
}

export async function benchLinkCase(transport: RigTransport, baud: number | null, bytes: number): Promise<LinkBenchCase> {
  const rig = await openLinkRig(transport, baud ?? undefined);
  try {
    const { client, params } = rig.session;
    const data = randomBytes(bytes);
    const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: bytes }))['t'] as number;
    const t0 = performance.now();
    const res = await sendBulk({
      total: bytes,
      startOffset: 0,
      chunkSize: params.maxChunk,
      window: params.window,
      read: (o, n) => data.subarray(o, o + n),
      sendChunk: (o, d) => client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d }, { expectBytes: 16 }),
      queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    });
    const seconds = (performance.now() - t0) / 1000;
    const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
    if (st['crc'] !== crc32(data) || res.committed !== bytes) throw new Error('bench transfer arrived corrupt');
    const goodput = bytes / seconds;
    const line = baud ? baud / 10 : null;
    return {
      name: `${transport}${baud ? ` @${baud}` : ' unpaced'}`,
      transport,
      baud,
      bytes,
      seconds: round(seconds, 4),
      goodputBytesPerSecond: Math.round(goodput),
      lineRateBytesPerSecond: line,
      lineRateFraction: line ? round(goodput / line, 4) : null,
      chunkBytes: params.maxChunk,
      window: params.window,
      restarts: res.restarts,
    };
  } finally {
    await rig.close();
  }
}

export async function benchLink(o: { bytes?: number; bauds?: number[]; transport?: RigTransport; log?: (s: string) => void } = {}): Promise<LinkBenchResult> {
  const bytes = o.bytes ?? 1024 * 1024;
  const transport = o.transport ?? 'pty';
  const cases: LinkBenchCase[] = [];
  for (const baud of [null, ...(o.bauds ?? [115_200, 921_600])]) {
    o.log?.(`link: ${bytes} bytes over ${transport}${baud ? ` paced at ${baud} baud` : ' unpaced'}...`);
    cases.push(await benchLinkCase(transport, baud, bytes));
  }
  return { bench: 'link', date: new Date().toISOString(), node: process.version, cases };
}

export function formatLinkBench(r: LinkBenchResult): string {
  return [
    `### Link goodput (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    '| case | bytes | seconds | goodput (B/s) | line rate (B/s) | goodput / line rate | chunk | window | restarts |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...r.cases.map(
      (c) =>
        `| ${c.name} | ${c.bytes} | ${c.seconds} | ${c.goodputBytesPerSecond} | ${c.lineRateBytesPerSecond ?? '-'} | ${c.lineRateFraction ?? '-'} | ${c.chunkBytes} | ${c.window} | ${c.restarts} |`,
    ),
  ].join('\n');
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
