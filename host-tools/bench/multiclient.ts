// `qkt bench multiclient`: an 8 Mbit inject into a module served on TCP (file-backed flash, every
// chunk verified and fsynced), alone; with a status loop (a new connection, PARAMS and STATUS
// every 100 ms, as `qkt status` in a shell loop but faster) and audit reads (AUDIT_LOG every
// 100 ms on a third connection); and with both loops back to back (a flood). Every connection is
// paced at 921600 baud both ways, so the ratio is about the link and the module's one dispatcher.
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { injectBatch } from '../link/inject.js';
import { LinkClient } from '../link/client.js';
import { connectTcp, parseTcpAddress } from '../transports/tcp.js';
import { paced } from '../transports/pacing.js';
import { startTerminalHost } from '../terminal-host.js';

/** What the other connections do while the inject runs. */
export type Load = 'alone' | 'status+audit' | 'flood';

/** Pause between the loops' requests under the 'status+audit' load. */
const LOOP_PAUSE_MS = 100;

export interface MulticlientRun {
  load: Load;
  seconds: number;
  /** Sealed bytes per second into the module. */
  goodputBytesPerSecond: number;
  /** Goodput / line rate (baud / 10 bytes per second). */
  lineRateFraction: number;
  restarts: number;
  /** Requests the other connections completed while the inject ran. */
  statusRequests: number;
  auditRequests: number;
  /** Round trip of the other connections' requests while the inject ran, ms. */
  otherLatencyMsP50: number | null;
  otherLatencyMsMax: number | null;
}

export interface MulticlientBenchResult {
  bench: 'multiclient';
  date: string;
  node: string;
  baud: number;
  /** The machine's 1-minute load average at the start and the end (2 cores here): noise shows as load. */
  loadAverage: [number, number];
  keyBits: number;
  sealedBytes: number;
  runs: MulticlientRun[];
  /** Per round (alone, status+audit, flood, back to back): goodput under that load / goodput alone. */
  pairRatios: { 'status+audit': number[]; flood: number[] };
  /** The median of pairRatios['status+audit'] (issue 9: at least 0.9, a drop of less than 10%). */
  goodputRatio: number;
  /** The median of pairRatios.flood: the module's one dispatcher under back-to-back requests. */
  floodGoodputRatio: number;
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function connect(address: string, baud: number): Promise<LinkClient> {
  const { host, port } = parseTcpAddress(address);
  const client = new LinkClient(paced(await connectTcp(host, port), { baud }), { baud, baseTimeoutMs: 5000 });
  await client.negotiate();
  return client;
}

/** One inject into a freshly enrolled module, with or without the other two clients. */
async function runOnce(load: MulticlientRun['load'], bits: number, baud: number): Promise<MulticlientRun & { sealedBytes: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-multiclient-'));
  try {
    const image = join(dir, 'module.img');
    const deviceKey = new Uint8Array(randomBytes(32));
    const flash = NorFlash.open(image);
    try {
      enrollFlash(flash, { terminalId: 'B1', deviceKey });
    } finally {
      flash.close();
    }
    const sealed = sealBatch({
      deviceKey,
      header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'B1', seq: 1, purpose: 'any', bits, chunkSize: 4096, createdAt: Date.now() },
      keys: new Uint8Array(randomBytes(bits / 8)),
    });
    deviceKey.fill(0);
    const host = await startTerminalHost({ flashPath: image, listen: 'tcp:127.0.0.1:0', baud });
    const clients: LinkClient[] = [];
    try {
      const injector = await connect(host.address, baud);
      clients.push(injector);
      let running = true;
      const latencies: number[] = [];
      const counts = { status: 0, audit: 0 };
      const timed = async (what: 'status' | 'audit', c: LinkClient) => {
        const t0 = performance.now();
        if (what === 'status') await c.request(Group.SYSTEM, SystemCmd.STATUS, {}, { expectBytes: 1024 });
        else await c.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 32 }, { expectBytes: 4096 });
        if (!running) return;
        latencies.push(performance.now() - t0);
        counts[what]++;
      };
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      const flood = async (what: 'status' | 'audit') => {
        const c = await connect(host.address, baud);
        clients.push(c);
        while (running) await timed(what, c);
      };
      // As `qkt status` run in a loop: a connection each time, PARAMS, STATUS, close.
      const statusLoop = async () => {
        while (running) {
          const c = await connect(host.address, baud);
          try {
            await timed('status', c);
          } finally {
            await c.close();
          }
          await sleep(LOOP_PAUSE_MS);
        }
      };
      const auditLoop = async () => {
        const c = await connect(host.address, baud);
        clients.push(c);
        while (running) {
          await timed('audit', c);
          await sleep(LOOP_PAUSE_MS);
        }
      };
      const others = load === 'alone' ? [] : load === 'flood' ? [flood('status'), flood('audit')] : [statusLoop(), auditLoop()];
      if (others.length) await sleep(200); // the other clients under way first
      const t0 = performance.now();
      const r = await injectBatch(injector, injector.params!, sealed);
      const seconds = (performance.now() - t0) / 1000;
      running = false;
      await Promise.all(others);
      const stored = (host.status()['pool'] as { storedKeyBits: number }).storedKeyBits;
      if (stored !== bits) throw new Error(`bench injection stored ${stored} bits, expected ${bits}`);
      const goodput = sealed.length / seconds;
      return {
        load,
        seconds: round(seconds, 4),
        goodputBytesPerSecond: Math.round(goodput),
        lineRateFraction: round(goodput / (baud / 10), 4),
        restarts: r.restarts,
        statusRequests: counts.status,
        auditRequests: counts.audit,
        otherLatencyMsP50: latencies.length ? round(median(latencies), 1) : null,
        otherLatencyMsMax: latencies.length ? round(Math.max(...latencies), 1) : null,
        sealedBytes: sealed.length,
      };
    } finally {
      for (const c of clients) await c.close().catch(() => undefined);
      await host.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchMulticlient(o: { bits?: number; baud?: number; repeats?: number; log?: (s: string) => void } = {}): Promise<MulticlientBenchResult> {
  const bits = o.bits ?? 2 ** 23;
  const baud = o.baud ?? 921_600;
  const runs: MulticlientRun[] = [];
  let sealedBytes = 0;
  // Rounds of (alone, status+audit, flood) back to back, so a change in machine load during the
  // run hits the cases of a round alike; each loaded case is compared with its round's alone.
  const pairRatios: MulticlientBenchResult['pairRatios'] = { 'status+audit': [], flood: [] };
  const loadStart = round(loadavg()[0]!, 2);
  for (let i = 0; i < (o.repeats ?? 3); i++) {
    let alone = NaN;
    for (const load of ['alone', 'status+audit', 'flood'] as const) {
      o.log?.(`multiclient: ${bits} key bits over TCP at ${baud} baud, ${load === 'alone' ? 'alone' : load === 'flood' ? 'beside back-to-back STATUS and AUDIT_LOG on two connections' : 'beside a status loop and audit reads every 100 ms'}...`);
      const { sealedBytes: n, ...run } = await runOnce(load, bits, baud);
      sealedBytes = n;
      runs.push(run);
      if (load === 'alone') alone = run.goodputBytesPerSecond;
      else pairRatios[load].push(round(run.goodputBytesPerSecond / alone, 4));
    }
  }
  return {
    bench: 'multiclient',
    date: new Date().toISOString(),
    node: process.version,
    baud,
    loadAverage: [loadStart, round(loadavg()[0]!, 2)],
    keyBits: bits,
    sealedBytes,
    runs,
    pairRatios,
    goodputRatio: round(median(pairRatios['status+audit']), 4),
    floodGoodputRatio: round(median(pairRatios.flood), 4),
  };
}

export function formatMulticlientBench(r: MulticlientBenchResult): string {
  return [
    `### Inject beside other clients on one TCP module (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    `${r.keyBits} key bits (${r.sealedBytes} sealed bytes) injected into a module with a file-backed flash over TCP, every connection paced at ${r.baud} baud both ways. ` +
      `Loads on other connections: **status+audit**, a status loop (a new connection, PARAMS and STATUS, every ${LOOP_PAUSE_MS} ms) and AUDIT_LOG reads (32 events) every ${LOOP_PAUSE_MS} ms on a third connection; ` +
      '**flood**, STATUS and AUDIT_LOG back to back on two connections. Module and clients share one process. ' +
      `Machine load average (1 min) ${r.loadAverage[0]} at the start, ${r.loadAverage[1]} at the end.`,
    '',
    `Inject goodput under the load / alone, per round: status+audit ${r.pairRatios['status+audit'].join(', ')}, median **${r.goodputRatio}**; flood ${r.pairRatios.flood.join(', ')}, median **${r.floodGoodputRatio}**.`,
    '',
    '| load | seconds | sealed bytes/s | / line rate | restarts | STATUS done | AUDIT_LOG done | their round trip p50 / max (ms) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...r.runs.map(
      (c) =>
        `| ${c.load} | ${c.seconds} | ${c.goodputBytesPerSecond} | ${c.lineRateFraction} | ${c.restarts} | ${c.statusRequests} | ${c.auditRequests} | ${c.otherLatencyMsP50 ?? '-'} / ${c.otherLatencyMsMax ?? '-'} |`,
    ),
  ].join('\n');
}
