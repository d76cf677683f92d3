// The cable relay (transports/cable.ts, run by `qkt link` and the benchmarks' paced cable):
// byte-exact without noise, never faster than the line rate, and seeded noise reproducible.
import t from 'tap';
import type { Transport } from '../../firmware/link/transport.js';
import { createInProcessPair } from './inproc.js';
import { ByteNoise, joinCable, tcpServerEnd } from './cable.js';
import { connectTcp } from './tcp.js';
import type { CableEnd, CableOptions, DirectionStats, NoiseOptions } from './cable.js';

/** A cable between two in-process users: `userA` and `userB` are what the programs on each end hold. */
function rig(baud: number | undefined, noise?: NoiseOptions, tap?: CableOptions['tap']) {
  const [userA, endA] = createInProcessPair();
  const [userB, endB] = createInProcessPair();
  const end = (tr: Transport, name: string): CableEnd => ({ description: name, transport: tr, listen: (cb) => tr.onData(cb) });
  const relay = joinCable(end(endA, 'a'), end(endB, 'b'), { ...(baud === undefined ? {} : { baud }), ...(noise ? { noise } : {}), ...(tap ? { tap } : {}) });
  return { userA, userB, relay };
}

/** Collect what `tr` receives until `n` bytes have come or `quietMs` pass without any. */
function receive(tr: Transport, n: number, quietMs = 300): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const parts: number[] = [];
    let timer = setTimeout(done, quietMs * 10);
    function done() {
      clearTimeout(timer);
      resolve(Uint8Array.from(parts));
    }
    tr.onData((chunk) => {
      parts.push(...chunk);
      clearTimeout(timer);
      if (parts.length >= n) done();
      else timer = setTimeout(done, quietMs);
    });
  });
}

const pattern = (n: number, salt = 0) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + salt + (i >> 8)) & 0xff);

t.test('zero noise is byte-exact, both ways at once', async (t) => {
  const { userA, userB, relay } = rig(921_600, { rate: 0, seed: 5 });
  const ab = pattern(20_000, 1);
  const ba = pattern(15_000, 2);
  const gotB = receive(userB, ab.length);
  const gotA = receive(userA, ba.length);
  await Promise.all([userA.write(ab), userB.write(ba)]);
  t.same(await gotB, ab);
  t.same(await gotA, ba);
  t.match(relay.stats, { aToB: { bytesIn: ab.length, bytesOut: ab.length, corrupted: 0, dropped: 0, inserted: 0 }, bToA: { bytesIn: ba.length, bytesOut: ba.length } });
  await relay.close();
});

t.test('paced: never faster than baud/10 bytes a second', async (t) => {
  const baud = 96_000; // 9600 bytes/s: 4800 bytes take at least 500 ms
  const { userA, userB, relay } = rig(baud);
  const bytes = pattern(4800);
  const got = receive(userB, bytes.length);
  const start = performance.now();
  await userA.write(bytes);
  t.equal((await got).length, bytes.length);
  const elapsed = performance.now() - start;
  // Upper bound on the rate only (a loaded machine may be slower, never faster). 2 ms ahead allowed.
  t.ok(elapsed >= (bytes.length * 10 * 1000) / baud - 10, `4800 bytes at ${baud} baud took ${elapsed.toFixed(0)} ms`);
  await relay.close();
});

t.test('seeded noise: the same seed gives the same output, another seed another', async (t) => {
  const input = pattern(50_000, 3);
  const run = async (seed: number, chunk: number) => {
    const { userA, userB, relay } = rig(2_000_000, { rate: 0.01, seed });
    const got = receive(userB, Infinity, 400);
    // Written in different chunkings: noise is per byte, so the output does not depend on them.
    for (let i = 0; i < input.length; i += chunk) await userA.write(input.subarray(i, i + chunk));
    const out = await got;
    await relay.close();
    return { out, stats: { ...relay.stats.aToB } };
  };
  const first = await run(9, 1000);
  const again = await run(9, 777);
  t.same(again.out, first.out, 'same seed, other chunks: same bytes out');
  t.same(again.stats, first.stats);
  t.notSame(first.out, input, 'noise changed the bytes');
  const s = first.stats;
  t.equal(s.bytesOut, s.bytesIn - s.dropped + s.inserted);
  // 1%: about 500 corrupted, 250 dropped, 50 inserted out of 50,000.
  t.ok(s.corrupted > 350 && s.corrupted < 650, `corrupted ${s.corrupted}`);
  t.ok(s.dropped > 150 && s.dropped < 350, `dropped ${s.dropped}`);
  t.ok(s.inserted > 20 && s.inserted < 90, `inserted ${s.inserted}`);
  const other = await run(10, 1000);
  t.notSame(other.out, first.out, 'another seed, other faults');
});

t.test('ByteNoise refuses a rate outside [0, 1]', async (t) => {
  const stats: DirectionStats = { bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 };
  t.throws(() => new ByteNoise(1.5, 1, stats), RangeError);
  t.same(new ByteNoise(0, 1, stats).apply(Uint8Array.of(1, 2, 3)), Uint8Array.of(1, 2, 3));
});

t.test('unpaced with a tap (qkt monitor): the tap sees every byte, in order, and the relay is byte-exact', async (t) => {
  const seen: Record<'a' | 'b', number[]> = { a: [], b: [] };
  let throws = 0;
  const { userA, userB, relay } = rig(undefined, undefined, (from, bytes) => {
    seen[from].push(...bytes);
    bytes.fill(0); // the tap's copy is its own: scribbling on it must not reach the far end
    if (++throws % 3 === 0) throw new Error('a broken tap');
  });
  const ab = pattern(50_000, 3);
  const ba = pattern(30_000, 4);
  const gotB = receive(userB, ab.length);
  const gotA = receive(userA, ba.length);
  for (let i = 0; i < ab.length; i += 7000) await userA.write(ab.subarray(i, i + 7000));
  await userB.write(ba);
  t.same(await gotB, ab);
  t.same(await gotA, ba);
  t.same(Uint8Array.from(seen.a), ab, 'the tap saw A->B as sent');
  t.same(Uint8Array.from(seen.b), ba, 'and B->A');
  await relay.close();
});

t.test('tcpServerEnd: one connection at a time, the next one after it closes, drops while none', async (t) => {
  let gone: () => void = () => undefined;
  const disconnected = new Promise<void>((resolve) => (gone = resolve));
  const server = await tcpServerEnd('127.0.0.1', 0, { disconnected: () => gone() });
  t.teardown(() => server.transport.close());
  const got: number[] = [];
  let want = 0;
  let reached: () => void = () => undefined;
  const until = (n: number) => new Promise<void>((resolve) => ((want = n), (reached = resolve), got.length >= n && resolve()));
  server.listen((chunk) => {
    got.push(...chunk);
    if (got.length >= want) reached();
  });
  await server.transport.write(Uint8Array.of(1, 2, 3)); // nobody connected: dropped, no error
  const first = await connectTcp('127.0.0.1', server.address.port);
  const firstGot = receive(first, 2);
  await first.write(Uint8Array.of(10, 11));
  await until(2); // the server has the first connection now
  // A second connection while the first is open is closed at once.
  const second = await connectTcp('127.0.0.1', server.address.port);
  await new Promise<void>((resolve) => second.onClose(() => resolve()));
  await server.transport.write(Uint8Array.of(20, 21));
  t.same(await firstGot, Uint8Array.of(20, 21), 'the first connection gets what is written now, not what came before');
  await first.close();
  await disconnected;
  // After it closed, the next connection takes its place.
  const third = await connectTcp('127.0.0.1', server.address.port);
  const thirdGot = receive(third, 1);
  await third.write(Uint8Array.of(31));
  await until(3);
  await server.transport.write(Uint8Array.of(30));
  t.same(await thirdGot, Uint8Array.of(30));
  t.same(got, [10, 11, 31], 'the end received both connections, in order');
  await third.close();
});
