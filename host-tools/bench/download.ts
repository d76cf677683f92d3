// `qkt bench download`: a carrier downloads one sealed batch through the KMD's download interface
// (every READ sealed under the session key, docs/protocol.md 3.11.8) on an in-process cable,
// unpaced and paced at 921600 baud. Reports goodput and, from the same run, the share of the
// time the session MACs take (the same seals and opens, timed on their own).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DownloadCmd } from '../../firmware/link/groups.js';
import { createInProcessPair } from '../transports/inproc.js';
import { paced } from '../transports/pacing.js';
import { LinkClient } from '../link/client.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal } from '../kmd/enroll.js';
import { exportBatches } from '../kmd/export.js';
import { enrollCarrier, readCarrierKey } from '../kmd/carriers.js';
import { serveDownload } from '../kmd/download.js';
import { authenticate, pendingList, readPending } from '../kmd/download-client.js';
import { TO_CARRIER, TO_KMD, open, seal } from '../kmd/download-session.js';

export interface DownloadBenchCase {
  name: string;
  baud: number | null;
  sealedBytes: number;
  reads: number;
  seconds: number;
  /** Sealed bytes per second onto the carrier's side. */
  bytesPerSecond: number;
  /** Sealed bytes / (seconds * baud/10): how full the line was. */
  lineRateFraction: number | null;
  /** Seconds the session MACs of this download take on their own (both ends: seal and open of every request and response). */
  macSeconds: number;
  /** macSeconds / seconds. */
  macShare: number;
}

export interface DownloadBenchResult {
  bench: 'download';
  date: string;
  node: string;
  keyBits: number;
  cases: DownloadBenchCase[];
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

export async function benchDownload(o: { bits: number; log: (line: string) => void }): Promise<DownloadBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-download-'));
  try {
    const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 2 * o.bits });
    enrollTerminal(home, 'B1', join(dir, 'B1.img'));
    enrollCarrier(home, 'car1', join(dir, 'car1'));
    exportBatches(home, ['B1'], o.bits);
    const cases: DownloadBenchCase[] = [];
    for (const baud of [null, 921_600]) {
      const name = `in-process${baud ? ` @${baud}` : ' unpaced'}`;
      o.log(`download: ${name}, ${o.bits} key bits...`);
      const [hostEnd, deviceEnd] = createInProcessPair({ names: ['carrier', 'kmd'] });
      const pace = (t: typeof hostEnd) => (baud ? paced(t, { baud }) : t);
      serveDownload(home, pace(deviceEnd));
      const client = new LinkClient(pace(hostEnd), { baseTimeoutMs: 5000, ...(baud ? { baud } : {}) });
      try {
        const params = await client.negotiate();
        const dl = await authenticate(client, readCarrierKey(join(dir, 'car1')), 'car1', home.config.kmdId);
        const p = pendingList(await dl.request(DownloadCmd.NOTIFY, {}))[0]!;
        let reads = 0;
        const t0 = performance.now();
        const bytes = await readPending(dl, params, p, () => reads++);
        const seconds = (performance.now() - t0) / 1000;
        dl.end();
        // The same MAC work on its own: per READ, the carrier seals its request and opens the
        // response, the KMD opens the request and seals the response.
        const key = new Uint8Array(32).fill(1);
        const m0 = performance.now();
        for (let off = 0, c = 1; off < bytes.length; off += params.maxChunk, c++) {
          const req = seal(key, TO_KMD, DownloadCmd.READ, c, { b: p.batchId, o: off, n: params.maxChunk });
          open(key, TO_KMD, DownloadCmd.READ, req);
          const res = seal(key, TO_CARRIER, DownloadCmd.READ, c, { d: bytes.subarray(off, off + params.maxChunk) });
          open(key, TO_CARRIER, DownloadCmd.READ, res);
        }
        const macSeconds = (performance.now() - m0) / 1000;
        cases.push({
          name,
          baud,
          sealedBytes: bytes.length,
          reads,
          seconds: round(seconds),
          bytesPerSecond: Math.round(bytes.length / seconds),
          lineRateFraction: baud ? round(bytes.length / (seconds * (baud / 10))) : null,
          macSeconds: round(macSeconds, 4),
          macShare: round(macSeconds / seconds),
        });
      } finally {
        await hostEnd.close();
        await deviceEnd.close();
      }
    }
    return { bench: 'download', date: new Date().toISOString(), node: process.version, keyBits: o.bits, cases };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatDownloadBench(r: DownloadBenchResult): string {
  const lines = [
    `# Download interface: one ${r.keyBits / 2 ** 20} Mbit sealed batch, every READ sealed (session MAC)`,
    '',
    `${r.date}, Node ${r.node}; one run each. MAC share: the session MACs of the same download timed on their own, over the download's wall time.`,
    '',
    '| link | sealed bytes | READs | seconds | bytes/s | line rate used | MAC seconds | MAC share |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of r.cases) {
    lines.push(`| ${c.name} | ${c.sealedBytes} | ${c.reads} | ${c.seconds} | ${c.bytesPerSecond} | ${c.lineRateFraction === null ? '-' : `${Math.round(c.lineRateFraction * 100)} %`} | ${c.macSeconds} | ${Math.round(c.macShare * 1000) / 10} % |`);
  }
  return lines.join('\n');
}
