// In-process pair: the shared transport suite plus the pair's own close semantics.
import t from 'tap';
import { createInProcessPair } from './inproc.js';
import { collect, transportSuite, watchClose } from './transport.suite.js';

t.test('transport suite', (t) => {
  transportSuite(t, async () => {
    const [a, b] = createInProcessPair();
    return { a, b };
  }, { closePropagates: true });
  t.end();
});

t.test('bytes written before close() are delivered before the close', async (t) => {
  const [a, b] = createInProcessPair();
  const got = collect(b, 3);
  const wb = watchClose(b);
  void a.write(Uint8Array.of(1, 2, 3));
  await a.close();
  t.same([...(await got)], [1, 2, 3]);
  t.match((await wb.closed)?.message, /peer closed/);
});

t.test('delivery is asynchronous and copies the buffer', async (t) => {
  const [a, b] = createInProcessPair();
  let got: Uint8Array | undefined;
  b.onData((c) => (got = c));
  const buf = Uint8Array.of(9, 9);
  const p = a.write(buf);
  t.equal(got, undefined, 'not delivered synchronously');
  buf[0] = 0;
  await p;
  t.same([...(got ?? [])], [9, 9]);
  await a.close();
});

t.test('write rejects a non-Uint8Array', async (t) => {
  const [a] = createInProcessPair();
  await t.rejects(a.write('x' as unknown as Uint8Array), TypeError);
  await a.close();
});
