// `qkt kmd serve`: the KMD's services in one process: the ETSI GS QKD 014 key delivery API
// (mutual TLS by default) and, optionally, the download interface for carriers on a serial port
// or TCP. Runs until stopped. It holds the home's service lock (`serve.lock`) for its life: one
// service per home, the one writer of the ETSI 014 key store (sae-keys.json); every change to
// the rest of the home (a supply take, an export, a batch taken by a carrier) holds the home's
// lock for that change only, so CLI commands run beside it.
import { existsSync } from 'node:fs';
import { createCa, issueServerCert, readServerTls, hasSaeCert } from './pki.js';
import { SaeStore } from './sae-store.js';
import { startEtsi014Server } from './etsi014.js';
import type { KmdHome } from './home.js';
import { serveLockOptions } from './home.js';
import type { KeySupply } from './supply.js';
import { lockSync } from '../lock.js';
import { serveDownload } from './download.js';
import { openSerial } from '../transports/serial.js';
import { isTcpAddress, parseTcpAddress } from '../transports/tcp.js';
import { listenDownloadPort } from './download-port.js';
import type { DownloadPortOptions } from './download-port.js';

export function pkiDir(home: KmdHome): string {
  return home.path('pki');
}

/** The KMD's CA and TLS server certificate, made on first use. */
export async function ensurePki(home: KmdHome): Promise<void> {
  const dir = pkiDir(home);
  if (!existsSync(`${dir}/ca.crt`)) await createCa(dir, { commonName: `qkt KMD ${home.config.kmdId} CA` });
  if (!existsSync(`${dir}/server.crt`)) await issueServerCert(dir, ['localhost', '127.0.0.1', '::1']);
}

export interface KmdServer {
  etsi014Url: string;
  download?: string;
  close(): Promise<void>;
}

/** The home's supply, each take made holding the home's lock (CLI exports take from it too). */
function lockedSupply(home: KmdHome): KeySupply {
  const supply = home.supply();
  return {
    availableBits: () => supply.availableBits(),
    take: (bits, consumer) => home.lockedSync(() => supply.take(bits, consumer)),
  };
}

export interface KmdServerOptions {
  listen: string;
  download?: string;
  plainHttp?: boolean;
  log?: (line: string) => void;
  /** Limits of the download interface on TCP (download-port.ts; defaults DOWNLOAD_PORT_LIMITS). */
  downloadLimits?: Omit<DownloadPortOptions, 'log'>;
}

export async function startKmdServer(home: KmdHome, o: KmdServerOptions): Promise<KmdServer> {
  const serveLock = lockSync(home.dir, serveLockOptions(home.dir));
  try {
    return await startLocked(home, o, () => serveLock.release());
  } catch (e) {
    serveLock.release();
    throw e;
  }
}

async function startLocked(home: KmdHome, o: KmdServerOptions, unlock: () => void): Promise<KmdServer> {
  const log = o.log ?? (() => undefined);
  const { host, port } = parseTcpAddress(o.listen);
  await home.locked(() => ensurePki(home));
  const store = new SaeStore({ path: home.path('sae-keys.json'), supply: lockedSupply(home), knownSae: (id) => hasSaeCert(pkiDir(home), id) });
  const etsi = await startEtsi014Server({
    host,
    port,
    store,
    kmeId: home.config.kmdId,
    ...(o.plainHttp ? { allowPlainHttp: true } : { tls: readServerTls(pkiDir(home)) }),
    log,
  });
  const closers: Array<() => Promise<void>> = [async () => unlock(), () => etsi.close()];
  let download: string | undefined;
  if (o.download) {
    if (isTcpAddress(o.download)) {
      const a = parseTcpAddress(o.download);
      // Each connection is its own download session, within the port's limits on strangers.
      const { listener } = await listenDownloadPort(home, a.host, a.port, { ...o.downloadLimits, log });
      download = `tcp:${listener.address.host}:${listener.address.port}`;
      closers.push(() => listener.close());
    } else {
      const t = await openSerial(o.download);
      serveDownload(home, t, log);
      download = o.download;
      closers.push(() => t.close());
    }
  }
  return {
    etsi014Url: etsi.url,
    ...(download ? { download } : {}),
    close: async () => {
      for (const c of closers.reverse()) await c();
    },
  };
}
