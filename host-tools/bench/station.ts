// `qkt bench station`: what mutual TLS costs the master station. Genuine OTP uplinks from a module
// are opened by the station in process (Station.openUplink, the floor) and through the service on
// loopback mutual TLS 1.3 (request/response, one at a time); and full TLS handshakes per second.
// Quote the ratios: absolute rates vary with load on shared machines.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { createTerminal } from '../../firmware/terminal.js';
import { Group, KeysCmd, StationCmd } from '../../firmware/link/groups.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { injectBatch } from '../link/inject.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal } from '../kmd/enroll.js';
import { exportBatch, readOutbox } from '../kmd/export.js';
import { ensurePki, pkiDir } from '../kmd/serve.js';
import { Station } from '../station/station.js';
import { openStationStore } from '../station/open-store.js';
import { startStationServer } from '../station/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from '../station/certs.js';
import { connectStation } from '../station/connect.js';

export interface StationBenchResult {
  bench: 'station';
  date: string;
  node: string;
  uplinks: number;
  uplinkBytes: number;
  /** Uplinks opened per second by Station.openUplink in process (no link, no TLS). */
  inProcessPerSecond: number;
  /** Uplinks opened per second through `station run`'s service over loopback mutual TLS 1.3. */
  tlsPerSecond: number;
  /** tlsPerSecond / inProcessPerSecond. */
  tlsRatio: number;
  handshakes: number;
  /** Full mutual TLS 1.3 handshakes (connect, verify both certificates, close) per second. */
  handshakesPerSecond: number;
}

export async function benchStation(o: { uplinks?: number; handshakes?: number; log?: (s: string) => void } = {}): Promise<StationBenchResult> {
  const n = o.uplinks ?? 400;
  const handshakes = o.handshakes ?? 50;
  const bytes = 64;
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-station-'));
  try {
    const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 2 ** 23 });
    enrollTerminal(home, 'T1', join(dir, 'T1.img'));
    const bits = 2 ** 23;
    const e = exportBatch(home, 'T1', bits);
    const flash = NorFlash.open(join(dir, 'T1.img'));
    const [host, device] = createInProcessPair();
    createTerminal({ flash, transport: device });
    const module = new LinkClient(host);
    try {
      const params = await module.negotiate();
      await injectBatch(module, params, readOutbox(e));
      const uplinks = async (count: number): Promise<Uint8Array[]> => {
        const out: Uint8Array[] = [];
        const s = (await module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
        for (let i = 0; i < count; i++) out.push((await module.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(bytes).fill(i & 0xff) }))['m'] as Uint8Array);
        return out;
      };
      o.log?.(`station: ${n} OTP uplinks of ${bytes} bytes opened in process, then over mutual TLS; ${handshakes} handshakes`);
      // In process: the station's own work (read keys, verify, take them durably, activate).
      // Each series starts with one untimed uplink: it mounts the pool and activates the batch.
      const [warm, ...first] = await uplinks(n + 1);
      const store = openStationStore(home.path('station'));
      const station = new Station(store);
      station.openUplink('T1', warm!);
      let t0 = performance.now();
      for (const m of first) station.openUplink('T1', m);
      const inProcessSeconds = (performance.now() - t0) / 1000;
      station.close();

      // Through the service on loopback mutual TLS.
      const cert = await home.locked(async () => {
        await ensurePki(home);
        return ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1'));
      });
      await issueStationClientCert(pkiDir(home), { kind: 'terminal', id: 'T1', generation: home.terminal('T1').generation ?? 1 }, join(dir, 't1'));
      const pems = readClientPems(join(dir, 't1'));
      const server = await startStationServer({ stationDir: home.path('station'), listen: 'tls:127.0.0.1:0', tls: cert.pems });
      try {
        const [warm2, ...second] = await uplinks(n + 1);
        const client = new LinkClient(await connectStation(server.address, pems));
        await client.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: warm2! });
        t0 = performance.now();
        for (const m of second) await client.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m });
        const tlsSeconds = (performance.now() - t0) / 1000;
        await client.close();
        t0 = performance.now();
        for (let i = 0; i < handshakes; i++) await (await connectStation(server.address, pems)).close();
        const handshakeSeconds = (performance.now() - t0) / 1000;
        const inProcessPerSecond = n / inProcessSeconds;
        const tlsPerSecond = n / tlsSeconds;
        return {
          bench: 'station',
          date: new Date().toISOString(),
          node: process.version,
          uplinks: n,
          uplinkBytes: bytes,
          inProcessPerSecond: Math.round(inProcessPerSecond),
          tlsPerSecond: Math.round(tlsPerSecond),
          tlsRatio: Math.round((tlsPerSecond / inProcessPerSecond) * 1000) / 1000,
          handshakes,
          handshakesPerSecond: Math.round(handshakes / handshakeSeconds),
        };
      } finally {
        await server.close();
      }
    } finally {
      await module.close();
      flash.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatStationBench(r: StationBenchResult): string {
  return [
    `### station: OTP uplinks of ${r.uplinkBytes} bytes, opened one at a time (${r.node}, ${r.date.slice(0, 10)})`,
    '',
    '| path | uplinks/s | ratio |',
    '|---|---:|---:|',
    `| in process (Station.openUplink) | ${r.inProcessPerSecond} | 1.000 |`,
    `| \`station run\` service over loopback mutual TLS 1.3 (plus the link round trip and the inbox append) | ${r.tlsPerSecond} | ${r.tlsRatio.toFixed(3)} |`,
    '',
    `Full mutual TLS 1.3 handshakes (P-256, both certificates verified), connect to close: ${r.handshakesPerSecond}/s (${r.handshakes} in a row).`,
  ].join('\n');
}
