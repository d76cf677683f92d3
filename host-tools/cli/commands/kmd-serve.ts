// `qkt kmd serve` and `qkt kmd sae add`: the KMD's network services and its SAE certificates.
import { existsSync } from 'node:fs';
import { defineCommand, str, CliError, Exit } from '../command.js';
import { changeKmd, openKmd, kmdCli } from '../home.js';
import { ensurePki, pkiDir, startKmdServer } from '../../kmd/serve.js';
import { issueSaeCert, hasSaeCert } from '../../kmd/pki.js';
import { enrollCarrier } from '../../kmd/carriers.js';

export const kmdServe = defineCommand({
  async run(v, _p, io) {
    const home = openKmd(v);
    const server = await startKmdServer(home, {
      listen: str(v, 'listen')!,
      ...(str(v, 'download') ? { download: str(v, 'download')! } : {}),
      plainHttp: v['plain-http'] === true,
      log: io.log,
    });
    const ready = { event: 'ready', kmdId: home.config.kmdId, etsi014: server.etsi014Url, download: server.download ?? null, pid: process.pid };
    io.ready(ready, [`KMD ${ready.kmdId}: ETSI GS QKD 014 on ${ready.etsi014}/api/v1/keys/`, ...(ready.download ? [`download interface on ${ready.download}`] : []), 'Ctrl-C to stop'].join('\n'));
    await io.stopped;
    await server.close();
    return ready;
  },
});

export const kmdSaeAdd = defineCommand({
  async run(v) {
    const id = str(v, 'sae')!;
    return changeKmd(v, async (home) => {
      await ensurePki(home);
      if (hasSaeCert(pkiDir(home), id)) throw new CliError(`SAE ${id} already has a certificate`, Exit.STATE);
      const p = await issueSaeCert(pkiDir(home), id);
      return { sae: id, cert: p.certPath, key: p.keyPath, ca: `${pkiDir(home)}/ca.crt` };
    });
  },
  render: (r) => `SAE ${r.sae}: certificate ${r.cert}, key ${r.key}; trust ${r.ca}`,
});

export const kmdEnrollCarrier = defineCommand({
  async run(v) {
    const dir = str(v, 'dir')!;
    // As carrier load: a mistyped path or an unmounted drive's mount point makes no carrier on the system disk.
    if (!existsSync(dir) && v['init'] !== true) {
      throw new CliError(`carrier ${dir} does not exist: is the drive mounted? (qkt ports lists the drives; to make a new carrier folder there, add --init)`, Exit.CARRIER);
    }
    return changeKmd(v, (home) => kmdCli(() => enrollCarrier(home, str(v, 'carrier')!, dir)));
  },
  render: (r) => `carrier ${r.carrierId} enrolled at ${r.dir}`,
});
