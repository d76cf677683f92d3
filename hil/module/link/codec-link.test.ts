// CBOR integers over a live link to the emulated module (docs/protocol.md 3.1): an AUDIT_LOG
// timestamp goes out as an 8-byte integer, never a float; 2^53 + 1 in a request is refused by name.
// Beside firmware/link/codec.test.ts, here because it drives the module through the host client.
import t from 'tap';
import { Deframer } from '../../../firmware/link/framer.js';
import { Kind } from '../../../firmware/link/frame.js';
import { Rc } from '../../../firmware/link/errors.js';
import { Group, SystemCmd } from '../../../firmware/link/groups.js';
import { startRig } from '../../../host-tools/test-support/module-rig.js';

t.test('over the link: an AUDIT_LOG timestamp arrives as an integer, 2^53 + 1 is refused by name', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const log = await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, {});
  const at = (log['events'] as Array<{ at: unknown }>)[0]!.at;
  t.equal(typeof at, 'number');
  t.ok(Number.isSafeInteger(at) && (at as number) > 2 ** 32, 'ms since 1970, above 2^32');
  // What the module sent: "at" (62 61 74) followed by an integer head 0x1b, never 0xfb.
  const bodies = new Deframer(65536).push(Buffer.concat(rig.sent));
  const reply = bodies.map((b) => Buffer.from(b)).find((b) => b[1] === Kind.RESPONSE && b[2] === Group.SYSTEM && b[3] === SystemCmd.AUDIT_LOG);
  t.ok(reply && reply.indexOf('6261741b', 0, 'hex') > 0, 'at is 0x1b + 8 bytes on the wire');
  t.equal(reply?.indexOf('626174fb', 0, 'hex'), -1, 'and never a float64');
  await t.rejects(rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 2n ** 53n + 1n }), {
    name: 'LinkError',
    rc: Rc.BAD_REQUEST,
    reason: 'field "from" must be an unsigned integer <= 9007199254740991',
  });
  t.match(await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 2 ** 40 }), { events: [] }, '2^40 is fine');
});
