// Regression (second outside review of the FEC change): a module slow to start (the first PARAMS
// unanswered) on a clean line makes the host try PARAMS as shards, "taken back after the reply if
// the line showed no damage at all". A few bytes the module wrote as it came up (a boot banner,
// a UART glitch at power-on) count as damage in the host's framer, so the session stays in shards
// on a clean line: ~2,000 small requests before the module's `seen` falls under PLAIN_BELOW,
// each round trip ~3.5x the line bytes of a plain one. (Without the stray bytes it reverts: held.)
import t from 'tap';
import { createInProcessPair } from '../transports/inproc.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkClient } from './client.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';

async function slowModule(banner: boolean) {
  const [host, device] = createInProcessPair({ names: ['host', 'module'] });
  let listening = false;
  const listeners: ((b: Uint8Array) => void)[] = [];
  device.onData((b) => {
    if (listening) for (const l of listeners) l(b);
  });
  const gated: Transport = {
    description: 'module',
    write: (b) => device.write(b),
    onData: (l) => void listeners.push(l),
    onClose: (l) => device.onClose(l),
    close: () => device.close(),
  };
  createTerminal({ transport: gated });
  setTimeout(() => {
    listening = true;
    if (banner) void device.write(new Uint8Array([0x62, 0x6f, 0x6f, 0x74, 0x0d, 0x0a, 0x00])); // "boot\r\n", then a 0x00
  }, 200);
  const client = new LinkClient(host, { baseTimeoutMs: 150 });
  await client.negotiate();
  for (let i = 0; i < 100; i++) await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  const shards = client.shards;
  await client.close();
  return shards;
}

t.test('a module slow to start on a clean line: plain frames after the opening', async (t) => {
  t.equal(await slowModule(false), false, 'no stray bytes: plain');
  t.equal(await slowModule(true), false, 'a few bytes as the module came up: plain within 100 requests');
});
