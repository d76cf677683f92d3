// TCP transport: the shared suite on a loopback connection (127.0.0.1, port 0), address parsing,
// listener shutdown and connection errors.
import t from 'tap';
import type { Transport } from '../../firmware/link/transport.js';
import { connectTcp, isTcpAddress, listenTcp, parseTcpAddress } from './tcp.js';
import { collect, transportSuite, watchClose } from './transport.suite.js';
import { InputError } from '../input-error.js';

async function loopbackPair() {
  let accepted: (tr: Transport) => void = () => {};
  const server = new Promise<Transport>((r) => (accepted = r));
  const listener = await listenTcp('127.0.0.1', 0, (tr) => accepted(tr));
  const a = await connectTcp('127.0.0.1', listener.address.port);
  const b = await server;
  return { a, b, listener };
}

t.test('transport suite over loopback TCP', (t) => {
  transportSuite(
    t,
    async () => {
      const { a, b, listener } = await loopbackPair();
      return { a, b, cleanup: () => listener.close() };
    },
    {
      closePropagates: true,
      // A reset from the far end is what a pulled cable or a killed peer looks like on TCP.
      pull: ({ b }) => b.close(),
    },
  );
  t.end();
});

t.test('parseTcpAddress', async (t) => {
  t.same(parseTcpAddress('tcp:127.0.0.1:7000'), { host: '127.0.0.1', port: 7000 });
  t.same(parseTcpAddress('localhost:0'), { host: 'localhost', port: 0 });
  t.same(parseTcpAddress('tcp:[::1]:65535'), { host: '::1', port: 65535 });
  for (const bad of ['tcp:', 'tcp:host', 'tcp:host:', 'tcp:host:70000', 'tcp::7000', '/dev/ttyUSB0', 'tcp:::1:7']) {
    t.throws(() => parseTcpAddress(bad), InputError, bad);
  }
  t.ok(isTcpAddress('tcp:1.2.3.4:5'));
  t.notOk(isTcpAddress('/dev/ttyACM0'));
});

t.test('listener: real port reported, close() ends live connections and stops accepting', async (t) => {
  const { a, b, listener } = await loopbackPair();
  t.equal(listener.address.host, '127.0.0.1');
  t.ok(listener.address.port > 0);
  t.match(listener.description, /^tcp listener tcp:127\.0\.0\.1:\d+$/);
  t.match(a.description, /^tcp tcp:127\.0\.0\.1:\d+$/);
  const wa = watchClose(a);
  const wb = watchClose(b);
  await listener.close();
  await listener.close();
  t.equal(await wb.closed, undefined, 'accepted connection closed locally');
  t.type(await wa.closed, Error, 'client sees the server go');
  await t.rejects(connectTcp('127.0.0.1', listener.address.port), 'no longer accepting');
});

t.test('a peer that closes mid-stream: bytes before the FIN still arrive', async (t) => {
  const { a, b, listener } = await loopbackPair();
  const got = collect(b, 3);
  await a.write(Uint8Array.of(1, 2, 3));
  await a.close();
  t.same([...(await got)], [1, 2, 3]);
  await listener.close();
});

t.test('connect to a closed port rejects; listen on a taken port rejects', async (t) => {
  const { listener } = await loopbackPair();
  await t.rejects(listenTcp('127.0.0.1', listener.address.port, () => {}), /EADDRINUSE/);
  await listener.close();
  await t.rejects(connectTcp('127.0.0.1', listener.address.port), /ECONNREFUSED/);
});
