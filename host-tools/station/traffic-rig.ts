// A small network for service traffic, in one process: a KMD (its supply at a given rate), one
// enrolled terminal module per class with a batch injected, and the master station serving the
// KMD home's station store on loopback mutual TLS 1.3. The bench (`qkt bench traffic`) and the
// tests use it; each terminal's station connection can be routed through a relay (a shaped
// network) by `via`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { createTerminal } from '../../firmware/terminal.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { injectBatch } from '../link/inject.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal } from '../kmd/enroll.js';
import { exportBatch, readOutbox } from '../kmd/export.js';
import { ensurePki, pkiDir } from '../kmd/serve.js';
import { startStationServer } from './serve.js';
import type { StationServer } from './serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from './certs.js';
import type { TlsPems } from '../transports/tls.js';
import { connectStation } from './connect.js';

export interface RigTerminal {
  id: string;
  /** The module, negotiated. */
  module: LinkClient;
  pems: TlsPems;
  /** A new negotiated connection to the station with this terminal's certificate, at `address` (default: the station's own). */
  connect(address?: string): Promise<LinkClient>;
}

export interface TrafficRig {
  dir: string;
  home: KmdHome;
  station: StationServer;
  terminals: RigTerminal[];
  close(): Promise<void>;
}

/**
 * `ids.length` terminals, each with one batch of `bits` injected (the paper's initial offline
 * load is 3 Mbit), and a running station. close() ends everything and removes the folder.
 */
export async function startTrafficRig(o: { ids: string[]; bits: number; supplyBitsPerSecond: number; inboxMaxBytes?: number }): Promise<TrafficRig> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-traffic-'));
  const cleanup: Array<() => Promise<void> | void> = [() => rmSync(dir, { recursive: true, force: true })];
  const close = async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  };
  try {
    const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: o.supplyBitsPerSecond, stockBits: o.bits * o.ids.length });
    const cert = await home.locked(async () => {
      await ensurePki(home);
      return ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1'));
    });
    const terminals: RigTerminal[] = [];
    for (const id of o.ids) {
      enrollTerminal(home, id, join(dir, `${id}.img`));
      const e = exportBatch(home, id, o.bits);
      const flash = NorFlash.open(join(dir, `${id}.img`));
      const [host, device] = createInProcessPair();
      createTerminal({ flash, transport: device });
      const module = new LinkClient(host);
      cleanup.push(async () => {
        await module.close();
        flash.close();
      });
      const params = await module.negotiate();
      await injectBatch(module, params, readOutbox(e));
      await issueStationClientCert(pkiDir(home), { kind: 'terminal', id, generation: home.terminal(id).generation ?? 1 }, join(dir, `cert-${id}`));
      const pems = readClientPems(join(dir, `cert-${id}`));
      terminals.push({
        id,
        module,
        pems,
        connect: async (address) => {
          const c = new LinkClient(await connectStation(address ?? station.address, pems), { baseTimeoutMs: 10_000, retries: 0 });
          await c.negotiate();
          return c;
        },
      });
    }
    const station = await startStationServer({ stationDir: home.path('station'), listen: 'tls:127.0.0.1:0', tls: cert.pems, ...(o.inboxMaxBytes ? { inboxMaxBytes: o.inboxMaxBytes } : {}) });
    cleanup.push(() => station.close());
    return { dir, home, station, terminals, close };
  } catch (e) {
    await close();
    throw e;
  }
}
