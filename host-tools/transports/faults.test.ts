// Fault wrapper: transparent when off, deterministic per seed, rates as asked, exact pull point.
import t from 'tap';
import { createInProcessPair } from './inproc.js';
import { withFaults, type FaultOptions } from './faults.js';
import { collect, concat, randomChunks, transportSuite, watchClose } from './transport.suite.js';

t.test('transport suite through a fault wrapper with no faults', (t) => {
  transportSuite(
    t,
    async () => {
      const [a, b] = createInProcessPair();
      return { a: withFaults(a), b };
    },
    { closePropagates: true, pull: ({ a }) => (a as ReturnType<typeof withFaults>).pull() },
  );
  t.end();
});

/** Send `chunks` from b through a wrapper on a's receive side; return what a's user sees. */
async function receiveThrough(options: FaultOptions, chunks: Uint8Array[]) {
  const [a, b] = createInProcessPair();
  const f = withFaults(a, options);
  const got: Uint8Array[] = [];
  f.onData((c) => got.push(Uint8Array.from(c)));
  // The sender stops at the first failed write (after a pull the link is gone).
  for (const c of chunks) if (!(await b.write(c).then(() => true, () => false))) break;
  await new Promise((r) => setImmediate(r));
  await f.close();
  return { out: concat(got), stats: f.stats };
}

const data = randomChunks(3, 1 << 20, 4096, false);
const input = concat(data);

t.test('bit errors: deterministic per seed, rate as asked, input untouched', async (t) => {
  const before = Buffer.from(input);
  const r1 = await receiveThrough({ noise: { bitErrorRate: 1e-3, seed: 42 } }, data);
  const r2 = await receiveThrough({ noise: { bitErrorRate: 1e-3, seed: 42 } }, data);
  const r3 = await receiveThrough({ noise: { bitErrorRate: 1e-3, seed: 43 } }, data);
  t.ok(r1.out.equals(r2.out), 'same seed, same corruption');
  t.notOk(r1.out.equals(r3.out), 'other seed, other corruption');
  t.ok(concat(data).equals(before), 'the sender’s buffers are not mutated');
  let flipped = 0;
  for (let i = 0; i < input.length; i++) {
    let x = input[i]! ^ r1.out[i]!;
    for (; x; x &= x - 1) flipped++;
  }
  t.equal(flipped, r1.stats.flippedBits, 'stats count every flipped bit');
  const expected = input.length * 8 * 1e-3; // 8389; sd ~ 92
  t.ok(Math.abs(flipped - expected) < 6 * Math.sqrt(expected), `${flipped} flips, ~${expected.toFixed(0)} expected`);
});

t.test('garbage bytes and dropped chunks', async (t) => {
  const g = await receiveThrough({ noise: { bitErrorRate: 0, garbageRate: 0.5, seed: 5 } }, data);
  t.equal(g.out.length, input.length + g.stats.garbageBytes, 'garbage adds bytes, loses none');
  t.ok(g.stats.garbageBytes > 0);
  const d = await receiveThrough({ dropChunkRate: 0.25, noise: { bitErrorRate: 0, seed: 9 } }, data);
  const share = d.stats.droppedChunks / data.length;
  t.ok(share > 0.15 && share < 0.35, `dropped ${d.stats.droppedChunks} of ${data.length} chunks`);
  t.ok(d.out.length < input.length);
});

t.test('send direction: the peer gets the noise, this end reads clean bytes', async (t) => {
  const [a, b] = createInProcessPair();
  const f = withFaults(a, { noise: { bitErrorRate: 1e-2, seed: 1 }, direction: 'send' });
  const atB = collect(b, 10_000);
  await f.write(new Uint8Array(10_000));
  t.ok((await atB).some((x) => x !== 0), 'peer sees flipped bits');
  const atF = collect(f, 1000);
  await b.write(new Uint8Array(1000));
  t.ok((await atF).every((x) => x === 0), 'receive side untouched');
  t.ok(f.stats.flippedBits > 0);
  await f.close();
});

t.test('pull after N bytes on the send side: exactly N bytes arrive, then an error', async (t) => {
  const [a, b] = createInProcessPair();
  const f = withFaults(a, { pullAfterBytes: 2500 });
  const got: Uint8Array[] = [];
  b.onData((c) => got.push(c));
  const wf = watchClose(f);
  const wb = watchClose(b);
  await f.write(new Uint8Array(1000));
  await t.rejects(f.write(new Uint8Array(2000)), /cable pulled/, 'the write crossing the pull fails');
  await t.rejects(f.write(new Uint8Array(1)), /cable pulled/, 'later writes fail');
  t.match((await wf.closed)?.message, /cable pulled/);
  await wb.closed;
  t.equal(concat(got).length, 2500);
  t.ok(f.stats.pulled);
  await f.close();
  // Nothing to wait for: the check is that no second onClose comes; 20 ms bounds it.
  await new Promise((r) => setTimeout(r, 20));
  t.equal(wf.calls.length, 1, 'onClose once');
});

t.test('pull after N bytes on the receive side', async (t) => {
  const { out, stats } = await receiveThrough({ pullAfterBytes: 100_000 }, data);
  t.equal(out.length, 100_000);
  t.ok(out.equals(input.subarray(0, 100_000)), 'bytes before the pull are intact');
  t.ok(stats.pulled);
});

t.test('options are validated', async (t) => {
  const [a] = createInProcessPair();
  t.throws(() => withFaults(a, { dropChunkRate: 2 }), RangeError);
  t.throws(() => withFaults(a, { noise: { bitErrorRate: -1 } }), RangeError);
  t.throws(() => withFaults(a, { pullAfterBytes: 1.5 }), RangeError);
  await a.close();
});
