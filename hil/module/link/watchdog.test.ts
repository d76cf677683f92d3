// The module's watchdog seen from the host: a handler that never finishes is answered INTERNAL
// "watchdog reset", the reset is in the audit log, and the module serves on (the dispatcher's own
// watchdog is tested in firmware/link/dispatch.test.ts).
import t from 'tap';
import { Rc } from '../../../firmware/link/errors.js';
import { Group, SystemCmd } from '../../../firmware/link/groups.js';
import { startRig } from '../../../host-tools/test-support/module-rig.js';

const never = () => new Promise<never>(() => undefined);

t.test('the module watchdog: stuck handler answered, reset logged, module serves on', async (t) => {
  const rig = await startRig({ terminal: { watchdogMs: 50 } });
  t.teardown(() => rig.close());
  rig.terminal.dispatcher.register({ id: 77, name: 'stuck', commands: { 0: () => never() } });
  await t.rejects(rig.client.request(77, 0, {}), { name: 'LinkError', rc: Rc.INTERNAL, reason: 'watchdog reset' });
  const log = await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, {});
  t.match((log['events'] as unknown[]).at(-1), { type: 'watchdog-reset', detail: 'group 77 command 0' });
  t.match(await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, {}), { state: 'ready', enrolled: true });
});
