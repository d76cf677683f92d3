// `qkt kmd token` issues a zeroize / factory-reset token onto a carrier; `qkt zeroize` (the field
// tool) presents it to the terminal on a port. Without a valid token the module refuses, and
// wrong tokens count toward its lockout.
import { defineCommand, str, CliError, Exit } from '../command.js';
import type { Values } from '../command.js';
import { changeKmd, kmdCli } from '../home.js';
import { issueToken, readToken, removeToken } from '../../kmd/tokens.js';
import { checkCarrierBeforeSend, openCarrier, withCarrier, withCarrierSync } from '../carrier-open.js';
import { resolvePort } from '../port-select.js';
import { connectDevice } from '../../link/session.js';
import { AdminCmd, Group, SystemCmd } from '../../../firmware/link/groups.js';
import type { AdminCommand } from '../../../firmware/crypto/token.js';
import { deviceTerminalId } from '../device-id.js';
import { printable } from '../../peer-text.js';

const command = (v: Record<string, unknown>): AdminCommand => (v['factory-reset'] === true ? 'factory-reset' : 'zeroize');

export const kmdToken = defineCommand({
  async run(v) {
    return changeKmd(v, (home) =>
      withCarrierSync(str(v, 'carrier')!, () => {
        const carrier = openCarrier(str(v, 'carrier')!);
        const r = kmdCli(() => issueToken(home, str(v, 'terminal')!, command(v), carrier.path));
        return { terminalId: r.terminalId, command: r.command, counter: r.counter, carrierId: carrier.carrierId };
      }),
    );
  },
  render: (r) => `${r.command} token for ${r.terminalId} (counter ${r.counter}) is on carrier ${r.carrierId}`,
});

export const zeroize = defineCommand({
  run: (v) => withCarrier(str(v, 'carrier')!, () => zeroizeWith(v)),
  render: (r) => `${r.terminalId}: ${r.command} done; module is ${printable(r.state, 32)}`,
});

async function zeroizeWith(v: Values) {
  // The spent token is removed from the carrier: a carrier this user cannot write is refused first.
  checkCarrierBeforeSend(str(v, 'carrier')!, { needBytes: 0 });
  const carrier = openCarrier(str(v, 'carrier')!);
  const port = await resolvePort(str(v, 'port')!, str(v, 'vidpid'));
  const cmd = command(v);
  const s = await connectDevice(port);
  try {
    const st = await s.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    // Checked before it names the token file (a reply of "../x" must not reach the path).
    const terminalId = deviceTerminalId(st['terminalId'], port, st['state']);
    const token = readToken(carrier.path, terminalId, cmd);
    if (!token) throw new CliError(`carrier ${carrier.carrierId} holds no ${cmd} token for ${terminalId} (qkt kmd token issues one)`, Exit.CARRIER);
    await s.client.request(Group.ADMIN, cmd === 'zeroize' ? AdminCmd.ZEROIZE : AdminCmd.FACTORY_RESET, { token });
    removeToken(carrier.path, terminalId, cmd); // spent: the module will not take it again
    const after = await s.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    return { terminalId, command: cmd, port, state: after['state'], pool: after['pool'] };
  } finally {
    await s.close();
  }
}
