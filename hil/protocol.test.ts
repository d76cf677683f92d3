// Runs the link protocol suite against each transport that this machine has.
import t from 'tap';
import { protocolSuite } from './protocol.suite.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';

t.test('in-process pair', async (t) => {
  protocolSuite(t, async () => {
    const [host, device] = createInProcessPair({ names: ['host', 'device'] });
    return { host, device };
  });
});
