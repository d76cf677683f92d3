// The bulk sender on a lossy line: the chunk size follows the error rate (shrinks under noise to
// near the model's best, grows back when the line is clean), a lost answer covered by a later one
// holds no window slot, an overdue answer is sent again without asking STATUS, and a line that
// carries nothing ends in a LinkStalledError (a link loss the resuming inject reconnects after).
import t from 'tap';
import { ChunkSizer, LOSSY_WINDOW } from './chunk-size.js';
import { sendBulk } from './bulk-sender.js';
import { LinkStalledError, LinkTimeoutError, PeerDataError } from './errors.js';
import { isLinkLoss } from './resume.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { mulberry32 } from '../transports/faults.js';
import type { Payload } from '../../firmware/link/codec.js';

const OVERHEAD = 30;

/** Feed a sizer frames lost as on a line where each byte is hit with probability `lambda`. */
function drive(s: ChunkSizer, lambda: number, frames: number, rnd: () => number): void {
  for (let i = 0; i < frames; i++) {
    const x = s.size + OVERHEAD;
    if (rnd() < Math.exp(-lambda * x)) s.acked(s.size);
    else s.lost(s.size);
  }
}

/** The share of the line a data size gives under the model the sizer uses. */
function share(d: number, lambda: number): number {
  const x = d + OVERHEAD;
  const p = Math.exp(-lambda * x);
  return ((x - OVERHEAD) / x) * (p / (p + LOSSY_WINDOW * (1 - p)));
}

t.test('a clean line keeps the largest chunk', async (t) => {
  const s = new ChunkSizer(8206, 16, OVERHEAD);
  drive(s, 0, 500, mulberry32(1));
  t.equal(s.size, 8206);
  t.equal(s.smallest, 8206);
  t.equal(s.lambda, 0);
});

for (const lambda of [1.6e-4, 1.6e-3, 1.6e-2]) {
  t.test(`at ${lambda} hits per byte the size settles where the line is used best`, async (t) => {
    const s = new ChunkSizer(8206, 16, OVERHEAD);
    drive(s, lambda, 3000, mulberry32(7));
    // The best share over every size, and the share of where the sizer settled (averaged).
    let top = 0;
    for (let d = 16; d <= 8206; d++) top = Math.max(top, share(d, lambda));
    let sum = 0;
    const rnd = mulberry32(8);
    for (let i = 0; i < 500; i++) {
      drive(s, lambda, 1, rnd);
      sum += share(s.size, lambda);
    }
    const got = sum / 500;
    t.ok(got >= 0.85 * top, `share ${got.toFixed(3)} within 15% of the best ${top.toFixed(3)} (size ${s.size})`);
    t.ok(s.lambda > lambda / 3 && s.lambda < lambda * 3, `estimate ${s.lambda.toExponential(2)} near ${lambda}`);
  });
}

t.test('after the noise stops the size grows back to the largest', async (t) => {
  const s = new ChunkSizer(8206, 16, OVERHEAD);
  drive(s, 1.6e-3, 1000, mulberry32(3));
  t.ok(s.size < 400, `shrunk to ${s.size}`);
  drive(s, 0, 2000, mulberry32(4));
  t.equal(s.size, 8206, 'back at the largest');
  t.ok(s.smallest < 400, 'the smallest is remembered for the report');
});

t.test('one stray loss on a long clean run costs little and is forgotten', async (t) => {
  const s = new ChunkSizer(8206, 16, OVERHEAD);
  drive(s, 0, 1000, mulberry32(5));
  s.lost(s.size);
  t.ok(s.size >= 2048, `size ${s.size} after the loss`);
  drive(s, 0, 300, mulberry32(6));
  t.equal(s.size, 8206, 'back at the largest');
});

t.test('sizes out of range are refused', async (t) => {
  t.throws(() => new ChunkSizer(0, 16, OVERHEAD), RangeError);
  t.throws(() => new ChunkSizer(100, 0, OVERHEAD), RangeError);
  t.equal(new ChunkSizer(8, 16, OVERHEAD).min, 8, 'min is capped by max');
});

/**
 * A device behind a lossy line, in process: rule by rule as docs/protocol.md 5.2, each chunk frame
 * (and each answer) lost with the model's probability; a lost one is never answered, and the
 * sender's timeout (rejecting after timeoutMs) stands for the line's silence.
 */
function lossyDevice(total: number, lambda: number, seed: number) {
  const rnd = mulberry32(seed);
  const held = new Uint8Array(total);
  let c = 0;
  const sizes = new Set<number>();
  const lose = (bytes: number) => rnd() >= Math.exp(-lambda * bytes);
  const overdue = (ms: number | undefined) =>
    new Promise<Payload>((_r, reject) => setTimeout(() => reject(new LinkTimeoutError(1, 2, ms ?? 20, 1)), Math.min(ms ?? 20, 20)));
  return {
    held,
    get committed() {
      return c;
    },
    sizes,
    sendChunk: async (o: number, d: Uint8Array, ms?: number): Promise<Payload> => {
      sizes.add(d.length);
      await new Promise((r) => setImmediate(r));
      if (lose(d.length + OVERHEAD)) return overdue(ms);
      let reply: Payload | LinkError;
      if (o + d.length <= c) reply = { c };
      else if (o !== c) reply = new LinkError(Rc.OUT_OF_ORDER, 'gap', { committed: c });
      else {
        held.set(d, o);
        c = o + d.length;
        reply = { c };
      }
      if (lose(16)) return overdue(ms);
      if (reply instanceof LinkError) throw reply;
      return reply;
    },
    queryCommitted: async () => c,
  };
}

t.test('a transfer over a line hitting 1 byte in 600 arrives whole, in smaller chunks', async (t) => {
  const data = Uint8Array.from({ length: 64 * 1024 }, (_v, i) => (i * 31 + 7) & 0xff);
  const dev = lossyDevice(data.length, 1.6e-3, 11);
  const res = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: 8206,
    window: 4,
    minTimeoutMs: 1,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: dev.sendChunk,
    queryCommitted: dev.queryCommitted,
  });
  t.equal(res.committed, data.length);
  t.same(dev.held, data, 'every byte in place');
  t.ok(res.smallestChunk < 1024, `shrank to ${res.smallestChunk}`);
  t.ok(res.restarts > 0 && res.timeouts > 0, `went back ${res.restarts} times, ${res.timeouts} after an overdue answer`);
});

t.test('a clean line is not slowed: the largest chunk throughout, no go-backs', async (t) => {
  const data = new Uint8Array(100_000).fill(5);
  const dev = lossyDevice(data.length, 0, 1);
  const res = await sendBulk({ total: data.length, startOffset: 0, chunkSize: 8206, window: 4, read: (o, n) => data.subarray(o, o + n), sendChunk: dev.sendChunk, queryCommitted: dev.queryCommitted });
  t.equal(res.restarts, 0);
  t.same([...dev.sizes].sort((a, b) => b - a)[0], 8206);
  t.equal(res.smallestChunk, 8206);
});

t.test('a lost answer covered by a later one holds no window slot', async (t) => {
  // The answer to the chunk at offset 1000 never comes (not even a timeout); the later chunks'
  // answers cover it. The old sender waited for it with its slot taken; this one goes on.
  const data = new Uint8Array(10_000).fill(1);
  let c = 0;
  const res = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: 1000,
    window: 2,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: (o, d) => {
      if (o === c) c = o + d.length;
      if (o === 1000) return new Promise<Payload>(() => undefined); // lost for ever
      return Promise.resolve({ c });
    },
    queryCommitted: async () => c,
  });
  t.equal(res.committed, data.length);
  t.equal(res.restarts, 0, 'no go-back needed');
});

t.test('an overdue answer is sent again from the last acknowledged offset, STATUS only when the device is silent', async (t) => {
  const data = new Uint8Array(4000).fill(2);
  let c = 0;
  let dropped = false;
  let queries = 0;
  const sent: number[] = [];
  const res = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: 1000,
    window: 1,
    adapt: false,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: async (o, d) => {
      sent.push(o);
      if (o === 2000 && !dropped) {
        dropped = true;
        throw new LinkTimeoutError(2, 1, 10, 1);
      }
      if (o === c) c = o + d.length;
      return { c };
    },
    isSilent: () => false,
    queryCommitted: async () => {
      queries++;
      return c;
    },
  });
  t.equal(res.committed, 4000);
  t.same(sent, [0, 1000, 2000, 2000, 3000], 'the overdue chunk went again');
  t.equal(queries, 0, 'no STATUS asked of a device heard lately');
  t.equal(res.timeouts, 1);
});

t.test('a line that carries nothing ends in a LinkStalledError, a link loss', async (t) => {
  const data = new Uint8Array(4000);
  let sends = 0;
  const err = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: 1000,
    window: 2,
    maxRestarts: 5,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: async () => {
      sends++;
      throw new LinkTimeoutError(2, 1, 10, 1);
    },
    queryCommitted: async () => 0,
  }).catch((e: unknown) => e);
  t.type(err, LinkStalledError);
  t.ok(isLinkLoss(err), 'resume.ts reconnects after it');
  t.match((err as Error).message, /no progress in 5 go-backs in a row at offset 0 of 4000/);
  t.ok(sends <= 2 * 6, `stopped after ${sends} sends`);
});

t.test('progress resets the count of go-backs without progress', async (t) => {
  // Every other chunk is lost once: 20 go-backs in all, never 3 in a row.
  const data = new Uint8Array(20_000);
  let c = 0;
  const lostOnce = new Set<number>();
  const res = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: 500,
    window: 1,
    adapt: false,
    maxRestarts: 2,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: async (o, d) => {
      if ((o / 500) % 2 === 1 && !lostOnce.has(o)) {
        lostOnce.add(o);
        throw new LinkTimeoutError(2, 1, 10, 1);
      }
      if (o === c) c = o + d.length;
      return { c };
    },
    queryCommitted: async () => c,
  });
  t.equal(res.committed, data.length);
  t.equal(res.restarts, 20);
});

t.test('a resumed inject names a stalled line in its own words', async (t) => {
  const { injectResuming } = await import('./resume.js');
  const { makeBatch, startRig } = await import('../test-support/module-rig.js');
  const rig = await startRig();
  t.teardown(() => rig.close());
  const b = makeBatch(rig.deviceKey, { bits: 64 * 1024 });
  // Every chunk is refused OUT_OF_ORDER at offset 0, as on a line that garbles each one.
  const orig = rig.client.request.bind(rig.client);
  rig.client.request = (async (g: number, c: number, p: Payload, opts?: object) => {
    if (g === 2 && c === 1) throw new LinkError(Rc.OUT_OF_ORDER, 'garbled', { committed: 0 });
    return orig(g, c, p, opts);
  }) as typeof rig.client.request;
  const notes: string[] = [];
  const err = await injectResuming(
    { client: rig.client, params: rig.params, close: async () => undefined },
    { sealed: b.sealed, maxLosses: 1, waitMs: 0, connect: async () => ({ client: rig.client, params: rig.params, close: async () => undefined }), onNote: (l) => notes.push(l) },
  ).catch((e: unknown) => e);
  t.match((err as Error).message, /the transfer made no progress in 32 go-backs in a row at offset 0 of \d+ \(the line loses nearly every chunk\)/);
  t.match(notes[0], /link lost: the transfer made no progress in 32 go-backs/);
});

t.test('a device that acknowledges an offset and then goes back before it again ends in a LinkStalledError', async (t) => {
  // A lying or broken device: every other chunk is answered "100 held", the next OUT_OF_ORDER
  // "0 held". Only passing the furthest offset it ever gave is progress, or this never ends.
  let sends = 0;
  const err = await sendBulk({
    total: 10_000,
    startOffset: 0,
    chunkSize: 100,
    window: 1,
    maxRestarts: 8,
    read: (o, n) => new Uint8Array(n),
    sendChunk: async () => {
      if (++sends > 10_000) throw new Error('still sending after 10,000 chunks');
      if (sends % 2 === 1) return { c: 100 };
      throw new LinkError(Rc.OUT_OF_ORDER, 'go back', { committed: 0 });
    },
    queryCommitted: async () => 0,
  }).catch((e: unknown) => e);
  t.type(err, LinkStalledError);
  t.ok(sends <= 2 * 9 + 2, `stopped after ${sends} sends`);
});

for (const [what, bad] of [
  ['a CHUNK answer', { chunk: 2 ** 52 }],
  ['a CHUNK answer', { chunk: -1 }],
  ['a CHUNK answer', { chunk: 0.5 }],
  ['a CHUNK answer', { chunk: 'x' }],
  ['an OUT_OF_ORDER refusal', { ooo: -50 }],
  ['an OUT_OF_ORDER refusal', { ooo: 10_001 }],
  ['a STATUS answer', { status: undefined }],
  ['a STATUS answer', { status: Number.NaN }],
] as const) {
  t.test(`an offset outside the transfer in ${what} (${JSON.stringify(Object.values(bad)[0]) ?? 'none'}) is a PeerDataError, nothing sent for it`, async (t) => {
    const offsets: number[] = [];
    const err = await sendBulk({
      total: 10_000,
      startOffset: 0,
      chunkSize: 1000,
      window: 1,
      read: (o, n) => (offsets.push(o), new Uint8Array(n)),
      sendChunk: async () => {
        if (offsets.length > 100) throw new Error('still sending');
        if ('chunk' in bad) return { c: bad.chunk };
        if ('ooo' in bad) throw new LinkError(Rc.OUT_OF_ORDER, 'go back', { committed: bad.ooo });
        return {}; // no offset in the answers: STATUS is asked once every chunk is answered
      },
      queryCommitted: async () => (bad as { status: number }).status,
    }).catch((e: unknown) => e);
    t.type(err, PeerDataError, (err as Error)?.message);
    t.ok(offsets.every((o) => o >= 0 && o < 10_000), `offsets sent: ${offsets.slice(0, 5).join(', ')}`);
  });
}

t.test('a device that acknowledges chunks without holding them is given up on after a few, not after resending everything', async (t) => {
  // "Held" answers that never move: each chunk answered c = 0. Before, each pass sent the whole
  // rest of the transfer and counted one loss at the end: 33 passes of 100 chunks here.
  let sends = 0;
  const err = await sendBulk({
    total: 100_000,
    startOffset: 0,
    chunkSize: 1000,
    window: 4,
    maxRestarts: 8,
    read: (o, n) => new Uint8Array(n),
    sendChunk: async () => {
      sends++;
      return { c: 0 };
    },
    queryCommitted: async () => 0,
  }).catch((e: unknown) => e);
  t.type(err, LinkStalledError);
  t.ok(sends <= 4 * 10, `stopped after ${sends} sends`);
});

t.test('a sizer passed in carries what an earlier attempt learnt: the next starts small', async (t) => {
  const sizer = new ChunkSizer(8206, 16, OVERHEAD);
  drive(sizer, 1.6e-3, 400, mulberry32(9)); // an earlier attempt on a noisy line
  const learnt = sizer.size;
  t.ok(learnt < 1000, `learnt ${learnt}`);
  const data = new Uint8Array(20_000);
  const sizes: number[] = [];
  let c = 0;
  const send = (s: ChunkSizer | undefined, chunkSize: number) =>
    sendBulk({
      total: data.length,
      startOffset: 0,
      chunkSize,
      window: 2,
      ...(s ? { sizer: s } : {}),
      read: (o, n) => data.subarray(o, o + n),
      sendChunk: async (o, d) => {
        sizes.push(d.length);
        if (o === c) c = o + d.length;
        return { c };
      },
      queryCommitted: async () => c,
    });
  await send(sizer, 8206);
  t.equal(sizes[0], learnt, 'the first chunk of the new attempt is the learnt size');
  sizes.length = 0;
  c = 0;
  await send(sizer, 4096);
  t.equal(sizes[0], 4096, 'a sizer for another maximum is not used');
});
