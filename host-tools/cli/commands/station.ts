// `qkt station run`: the master station service on mutual TLS (see host-tools/station/serve.ts,
// docs/station.md). Its server certificate comes from the KMD home's CA, issued here when needed.
import { defineCommand, int, str, strs, CliError, Exit } from '../command.js';
import type { Io, Values } from '../command.js';
import { openKmd } from '../home.js';
import { startStationServer } from '../../station/serve.js';
import { ensureStationServerCert, serverNames } from '../../station/certs.js';
import { ensurePki, pkiDir } from '../../kmd/serve.js';
import { parseTlsAddress } from '../../transports/tls.js';
import { parseBits } from '../../units.js';
import { checkBrokerUrl } from '../../station/broker.js';
import type { KmdHome } from '../../kmd/home.js';

export default defineCommand({
  async run(v, _p, io) {
    const broker = str(v, 'broker');
    const listenText = str(v, 'listen');
    const share = str(v, 'share');
    if (broker === undefined) {
      if (listenText === undefined) throw new CliError('--listen is required (or --broker); usage: qkt station run --home H (--listen [tls:]HOST:PORT | --broker URL)', Exit.USAGE);
      if (share !== undefined) throw new CliError('--share is the broker subscription\'s group: give it with --broker', Exit.USAGE);
    } else {
      if (broker !== 'embedded') {
        try {
          checkBrokerUrl(broker);
        } catch (e) {
          throw new CliError((e as Error).message, Exit.USAGE);
        }
        if (listenText !== undefined) throw new CliError('--listen is where the embedded broker listens: give it with --broker embedded, not with a broker of its own', Exit.USAGE);
      } else {
        if (listenText !== undefined && listenText.startsWith('tls:')) throw new CliError('--listen: the embedded broker speaks MQTT on HOST:PORT, not tls:', Exit.USAGE);
        if (share !== undefined) throw new CliError('--share: the embedded broker (MQTT 3.1.1) has no shared subscriptions; its one worker is this process', Exit.USAGE);
      }
      for (const o of ['san', 'max-connections']) if (v[o] !== undefined) throw new CliError(`--${o} is for a station on mutual TLS (--listen), not one on a broker`, Exit.USAGE);
      if (share !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(share)) throw new CliError(`--share must be 1-64 of A-Z a-z 0-9 _ -, got ${JSON.stringify(share)}`, Exit.USAGE);
    }
    const home = openKmd(v);
    if (broker !== undefined) return runWorker(home, broker, listenText, share, v, io);
    const listen = listenText!;
    let names: string[];
    try {
      names = serverNames(parseTlsAddress(listen).host, strs(v, 'san'));
    } catch (e) {
      throw new CliError(`--listen/--san: ${(e as Error).message}`, Exit.USAGE);
    }
    // The CA, and the station's server certificate for these names, made under the home's lock
    // once this process holds the station's service lock.
    const tls = () =>
      home.locked(async () => {
        await ensurePki(home);
        return (await ensureStationServerCert(pkiDir(home), names)).pems;
      });
    const inboxMaxBytes = inboxMax(v);
    const maxConnections = int(v, 'max-connections', 1, 1_000_000);
    const server = await startStationServer({ stationDir: home.path('station'), listen, tls, log: io.log, ...(inboxMaxBytes ? { inboxMaxBytes } : {}), ...(maxConnections !== undefined ? { maxConnections } : {}) });
    const ready = {
      event: 'ready',
      listen: server.address,
      serverNames: names,
      serverCert: home.path('pki', 'station', 'server.crt'),
      ca: home.path('pki', 'ca.crt'),
      store: home.path('station'),
      inbox: home.path('station', 'inbox.jsonl'),
      pid: process.pid,
    };
    watchParent();
    io.ready(ready, `master station on ${server.address} (mutual TLS; clients need a certificate from qkt station cert), keys from ${ready.store}; Ctrl-C to stop`);
    await io.stopped;
    await server.close();
    return ready;
  },
});

function inboxMax(v: Values): number | undefined {
  const maxText = str(v, 'inbox-max');
  if (maxText === undefined) return undefined;
  let bits: number;
  try {
    bits = parseBits(maxText);
  } catch (e) {
    throw new CliError(`--inbox-max: ${(e as Error).message}`, Exit.USAGE);
  }
  const bytes = Math.floor(bits / 8);
  if (bytes < 64 * 1024 || bytes > 64 * 2 ** 30) throw new CliError(`--inbox-max must be a size from 64KiB to 64GiB, got ${JSON.stringify(maxText)}`, Exit.USAGE);
  return bytes;
}

/**
 * Started by `qkt fleet run --station process` (QKT_PARENT_PID): stop when that process is gone,
 * even by SIGKILL, instead of serving on with no one to stop it.
 */
function watchParent(): void {
  const parent = Number(process.env['QKT_PARENT_PID']);
  if (Number.isSafeInteger(parent) && parent > 1) {
    setInterval(() => {
      if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
    }, 500).unref();
  }
}

/** `station run --broker`: a worker taking uplinks from the broker's (shared) subscription. */
async function runWorker(home: KmdHome, broker: string, listen: string | undefined, share: string | undefined, v: Values, io: Io): Promise<Record<string, unknown>> {
  const inboxMaxBytes = inboxMax(v);
  const server = await startStationServer({ stationDir: home.path('station'), broker, log: io.log, ...(listen !== undefined ? { listen } : {}), ...(share !== undefined ? { share } : {}), ...(inboxMaxBytes ? { inboxMaxBytes } : {}) });
  const b = server.broker!;
  const ready = {
    event: 'ready',
    broker: b.url,
    embedded: broker === 'embedded',
    mqtt: b.version === 5 ? '5' : '3.1.1',
    share: b.share ?? null,
    store: home.path('station'),
    inbox: home.path('station', 'inbox.jsonl'),
    pid: process.pid,
  };
  watchParent();
  io.ready(
    ready,
    `master station worker on the MQTT broker ${b.url}${broker === 'embedded' ? ' (embedded in this process)' : ''}, ${b.share ? `shared subscription group ${b.share}` : 'its own subscription (one worker)'}, keys from ${ready.store}; Ctrl-C to stop`,
  );
  await io.stopped;
  await server.close();
  return ready;
}
