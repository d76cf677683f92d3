// SYSTEM PARAMS and STATUS with `only` (docs/protocol.md 3.6.1, 3.6.2): the reply cut down to the
// fields a host names, so a host on a noisy line gets a frame small enough to arrive whole; the
// reference host's own PARAMS asks for the fields it uses; a malformed list is refused.
import t from 'tap';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { Rc } from '../../firmware/link/errors.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { PARAMS_USED } from '../../host-tools/link/client.js';
import { startRig } from '../../host-tools/test-support/module-rig.js';

t.test('PARAMS with only: versions and the named fields, no more', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const full = await rig.client.request(Group.SYSTEM, SystemCmd.PARAMS, { versions: [1] });
  t.ok('flash' in full && 'secureSectors' in full, 'the whole reply without only');
  const brief = await rig.client.request(Group.SYSTEM, SystemCmd.PARAMS, { versions: [1], only: ['maxChunk', 'window', 'nonsense'] });
  t.same(Object.keys(brief).sort(), ['maxChunk', 'versions', 'window']);
  t.equal(brief['maxChunk'], full['maxChunk']);
  // The host's negotiation asks only for what it uses: everything it reads is there.
  t.same(Object.keys(rig.params).sort(), ['versions', ...PARAMS_USED.filter((k) => k in full)].sort());
  const size = (p: Record<string, unknown>) => encodeMessage({ kind: Kind.RESPONSE, group: 0, command: 0, seq: 1, payload: p }).length;
  t.ok(size(rig.params) < size(full) * 0.7, `negotiated reply ${size(rig.params)} bytes against ${size(full)}`);
});

t.test('STATUS with only: the named fields', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const st = await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['terminalId', 'state'] });
  t.same(st, { terminalId: 'T1', state: 'ready' });
  t.same(await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: [] }), {}, 'an empty list: an empty map');
});

t.test('a malformed only is refused BAD_REQUEST', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  for (const only of [5, 'state', [1], Array(33).fill('state'), ['x'.repeat(33)]]) {
    await t.rejects(rig.client.request(Group.SYSTEM, SystemCmd.STATUS, { only }), { name: 'LinkError', rc: Rc.BAD_REQUEST }, JSON.stringify(only).slice(0, 40));
    await t.rejects(rig.client.request(Group.SYSTEM, SystemCmd.PARAMS, { versions: [1], only }), { name: 'LinkError', rc: Rc.BAD_REQUEST });
  }
});
