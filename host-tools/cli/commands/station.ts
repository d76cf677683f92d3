// `qkt station run`: the master station service on mutual TLS (see host-tools/station/serve.ts,
// docs/station.md). Its server certificate comes from the KMD home's CA, issued here when needed.
import { defineCommand, int, str, strs, CliError, Exit } from '../command.js';
import { openKmd } from '../home.js';
import { startStationServer } from '../../station/serve.js';
import { ensureStationServerCert, serverNames } from '../../station/certs.js';
import { ensurePki, pkiDir } from '../../kmd/serve.js';
import { parseTlsAddress } from '../../transports/tls.js';
import { parseBits } from '../../units.js';

export default defineCommand({
  async run(v, _p, io) {
    const home = openKmd(v);
    const listen = str(v, 'listen')!;
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
    let inboxMaxBytes: number | undefined;
    const maxText = str(v, 'inbox-max');
    if (maxText !== undefined) {
      let bits: number;
      try {
        bits = parseBits(maxText);
      } catch (e) {
        throw new CliError(`--inbox-max: ${(e as Error).message}`, Exit.USAGE);
      }
      inboxMaxBytes = Math.floor(bits / 8);
      if (inboxMaxBytes < 64 * 1024 || inboxMaxBytes > 64 * 2 ** 30) throw new CliError(`--inbox-max must be a size from 64KiB to 64GiB, got ${JSON.stringify(maxText)}`, Exit.USAGE);
    }
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
    // Started by `qkt fleet run --station process` (QKT_PARENT_PID): it stops when that process
    // is gone, even by SIGKILL, instead of serving on with no one to stop it.
    const parent = Number(process.env['QKT_PARENT_PID']);
    if (Number.isSafeInteger(parent) && parent > 1) {
      setInterval(() => {
        if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
      }, 500).unref();
    }
    io.ready(ready, `master station on ${server.address} (mutual TLS; clients need a certificate from qkt station cert), keys from ${ready.store}; Ctrl-C to stop`);
    await io.stopped;
    await server.close();
    return ready;
  },
});
