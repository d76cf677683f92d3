// `qkt station cert`: issue a client certificate for the master station's TLS service, from the
// KMD home's CA, for one terminal or one operator (host-tools/station/certs.ts, docs/station.md).
import { defineCommand, str, CliError, Exit } from '../command.js';
import { changeKmd } from '../home.js';
import { ensurePki, pkiDir } from '../../kmd/serve.js';
import { describeRole, issueStationClientCert, roleUri, StationCertError } from '../../station/certs.js';
import type { StationRole } from '../../station/certs.js';
import { isId } from '../../kmd/home.js';

export default defineCommand({
  async run(v) {
    const terminal = str(v, 'terminal');
    const operator = str(v, 'operator');
    if ((terminal === undefined) === (operator === undefined)) throw new CliError('give exactly one of --terminal ID or --operator NAME', Exit.USAGE);
    let role: StationRole = terminal !== undefined ? { kind: 'terminal', id: terminal } : { kind: 'operator', id: operator! };
    if (!isId(role.id)) throw new CliError(`--${role.kind} must be 1-32 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(role.id)}`, Exit.USAGE);
    return changeKmd(v, async (home) => {
      if (role.kind === 'terminal' && !home.hasTerminal(role.id)) {
        throw new CliError(`terminal ${JSON.stringify(role.id)} is not enrolled at this KMD; enrol it with qkt kmd enroll`, Exit.STATE);
      }
      // A terminal certificate names the device generation it is for: `kmd enroll --again` retires it.
      if (role.kind === 'terminal') role = { ...role, generation: home.terminal(role.id).generation ?? 1 };
      await ensurePki(home);
      try {
        const p = await issueStationClientCert(pkiDir(home), role, str(v, 'out')!);
        return { role: role.kind, id: role.id, ...(role.kind === 'terminal' ? { generation: role.generation } : {}), uri: roleUri(role), key: p.keyPath, cert: p.certPath, ca: p.caPath };
      } catch (e) {
        if (e instanceof StationCertError) throw new CliError(e.message, e.code === 'BAD_ID' ? Exit.USAGE : Exit.STATE);
        throw e;
      }
    });
  },
  render: (r) => `station client certificate for ${describeRole({ kind: r.role, id: r.id } as StationRole)}: ${r.cert}, key ${r.key}; trust ${r.ca}`,
});
