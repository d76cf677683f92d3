// FEC shards (docs/protocol.md 2.6): any k of n shards give the frame back, damaged shards are
// dropped and counted, the collector stays bounded whatever a peer sends, and the plan fits the line.
import t from 'tap';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import {
  MAX_SHARD,
  MAX_SHARDS,
  MIN_SHARD,
  SHARD_WIRE_EXTRA,
  ShardCollector,
  LineEstimate,
  bestFrame,
  decodeShards,
  encodeShards,
  frameAsShards,
  parseShard,
  planShards,
  planShardsAtMost,
  seenByte,
  seenLambda,
  solveBudget,
} from './fec.js';
import { Deframer } from './framer.js';
import { encodeMessage, decodeMessage } from './codec.js';
import { Kind } from './frame.js';
import { readFileSync } from 'node:fs';

/** A frame body: `n` bytes and their CRC-32 (what a collector checks before it gives a frame out). */
function frameBody(n: number, fill = 3): Uint8Array {
  const b = new Uint8Array(n + 4).map((_, i) => (i * 7 + fill) & 0xff);
  new DataView(b.buffer).setUint32(n, crc32(b.subarray(0, n)), false);
  return b;
}

const plans = fc
  .record({ len: fc.integer({ min: 1, max: 2000 }), s: fc.integer({ min: MIN_SHARD, max: MAX_SHARD }), extra: fc.integer({ min: 0, max: 40 }) })
  .filter(({ len, s }) => Math.ceil((len + 2) / s) <= 200)
  .map(({ len, s, extra }) => {
    const k = Math.ceil((len + 2) / s);
    return { len, s, k, n: Math.min(MAX_SHARDS, k + extra) };
  });

t.test('any k of the n shards give the frame back, byte for byte', async (t) => {
  fc.assert(
    fc.property(plans, fc.integer(), fc.integer({ min: 0, max: 255 }), (p, seed, id) => {
      const body = new Uint8Array(p.len).map((_, i) => (i * 131 + seed) & 0xff);
      const shards = encodeShards(body, id, p);
      if (shards.length !== p.n) return false;
      // A seeded choice of k distinct indices out of n.
      const idx = [...Array(p.n).keys()];
      let x = seed >>> 0;
      for (let i = idx.length - 1; i > 0; i--) {
        x = (x * 1103515245 + 12345) >>> 0;
        const j = x % (i + 1);
        [idx[i], idx[j]] = [idx[j]!, idx[i]!];
      }
      const got = new Map<number, Uint8Array>();
      for (const i of idx.slice(0, p.k)) {
        const sh = parseShard(shards[i]!);
        if (!sh || sh.index !== i || sh.k !== p.k || sh.n !== p.n || sh.id !== (id & 0xff)) return false;
        got.set(i, sh.data);
      }
      const out = decodeShards(p.k, got);
      return out !== undefined && Buffer.from(out).equals(Buffer.from(body));
    }),
    { numRuns: 300 },
  );
});

t.test('the parity shards alone give the frame back (every data shard lost)', async (t) => {
  const body = new Uint8Array(500).map((_, i) => i & 0xff);
  const k = Math.ceil(502 / 20);
  const shards = encodeShards(body, 1, { s: 20, k, n: 2 * k });
  const got = new Map<number, Uint8Array>();
  for (let i = k; i < 2 * k; i++) got.set(i, parseShard(shards[i]!)!.data);
  t.same(decodeShards(k, got), body);
  // Fewer than k: nothing.
  got.delete(k);
  t.equal(decodeShards(k, got), undefined);
});

t.test('one flipped bit anywhere in a shard is corrected; more damage fails the check; bad fields are refused', async (t) => {
  const [sh] = encodeShards(new Uint8Array(30).map((_, i) => i * 3), 9, { s: 16, k: 2, n: 3 });
  const good = parseShard(sh!)!;
  t.equal(good.corrected, false);
  // A 16-bit check tells most single flips apart, not all: two bit positions may share a
  // syndrome, and those flips are refused (never put right wrongly).
  let corrected = 0;
  let refusedFlips = 0;
  for (let i = 1; i < sh!.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = Uint8Array.from(sh!);
      bad[i]! ^= 1 << bit;
      const p = parseShard(bad);
      if (!p) refusedFlips++;
      else if (p.corrected && Buffer.from(p.data).equals(Buffer.from(good.data)) && p.index === good.index && p.id === good.id) corrected++;
      else t.fail(`byte ${i} bit ${bit} put right wrongly`);
    }
  }
  t.ok(corrected >= (sh!.length - 1) * 8 * 0.95, `${corrected} single flips put right, ${refusedFlips} refused (positions sharing a syndrome)`);
  // Two flips: refused, or (rarely) "corrected" into something else, which the frame CRC catches.
  let refused = 0;
  let wrong = 0;
  for (let i = 1; i < sh!.length; i++) {
    for (let j = i + 1; j < sh!.length; j++) {
      const bad = Uint8Array.from(sh!);
      bad[i]! ^= 0x01;
      bad[j]! ^= 0x10;
      const p = parseShard(bad);
      if (!p) refused++;
      else if (!Buffer.from(p.data).equals(Buffer.from(good.data)) || p.index !== good.index) wrong++;
    }
  }
  t.ok(wrong <= (refused + wrong) * 0.02, `two flips: ${refused} refused, ${wrong} miscorrected`);
  t.equal(parseShard(sh!.subarray(0, sh!.length - 1)), undefined, 'a dropped byte');
  t.equal(parseShard(new Uint8Array(5)), undefined, 'too short');
  t.throws(() => encodeShards(new Uint8Array(100), 0, { s: 16, k: 2, n: 3 }), /cannot carry/);
  t.throws(() => encodeShards(new Uint8Array(10), 0, { s: 16, k: 1, n: 256 }), /cannot carry/);
});

t.test('the collector: frames out once, later shards ignored, at most 8 frames held', async (t) => {
  const c = new ShardCollector(1000);
  const body = frameBody(96);
  const shards = encodeShards(body, 5, { s: 10, k: 11, n: 15 });
  const outs = shards.map((b) => c.push(b)).filter(Boolean);
  t.equal(outs.length, 1, 'one frame from 15 shards');
  t.same(outs[0], body);
  t.equal(c.stats.framesDecoded, 1);
  t.equal(c.stats.shards, 15);
  // A duplicate index does not count twice towards k.
  const c2 = new ShardCollector(1000);
  for (let i = 0; i < 20; i++) t.equal(c2.push(shards[0]!), undefined);
  t.equal(c2.stats.framesDecoded, 0);
  // A hostile flood of first shards under every id and shape: memory stays bounded (8 groups,
  // each at most its k shards), and the frames in between still come out.
  const c3 = new ShardCollector(8000);
  for (let id = 0; id < 256; id++) {
    for (let j = 0; j < 3; j++) c3.push(encodeShards(new Uint8Array(2000), id, { s: 240, k: 9, n: 12 })[j]!);
  }
  t.ok(c3.stats.framesLost >= 248, `incomplete frames dropped: ${c3.stats.framesLost}`);
  const ok = encodeShards(body, 77, { s: 50, k: 3, n: 4 });
  t.same(ok.map((b) => c3.push(b)).find(Boolean), body, 'a real frame after the flood');
  // A frame larger than the receiver takes is not collected.
  const small = new ShardCollector(64);
  for (const b of encodeShards(new Uint8Array(1000), 1, { s: 100, k: 11, n: 11 })) t.equal(small.push(b), undefined);
});

t.test('the collector says which frame a push completed and how many whole shards it took', async (t) => {
  const c = new ShardCollector(1000);
  const body = frameBody(96);
  const shards = encodeShards(body, 5, { s: 10, k: 11, n: 15 });
  const damaged = Uint8Array.from(shards[1]!);
  damaged[7]! ^= 0x11; // three bytes: more than a single flip, which would be put right
  damaged[8]! ^= 0x22;
  damaged[9]! ^= 0x44;
  // Shard 0 twice, a damaged 1, then 2..11: the 11th distinct index completes the frame.
  for (const b of [shards[0]!, shards[0]!, damaged]) {
    t.equal(c.push(b), undefined);
    t.equal(c.completed, undefined);
  }
  for (let i = 2; i < 11; i++) {
    c.push(shards[i]!);
    if (c.completed !== undefined) t.fail(`completed at shard ${i}`);
  }
  t.same(c.push(shards[11]!), body);
  t.same(c.completed, { id: 5, k: 11, n: 15, s: 10, shards: 12 }, 'whole shards: 0 twice and 2..11; not the damaged one');
  c.push(shards[12]!);
  t.equal(c.completed, undefined, 'a later shard of the frame completes nothing');
  // One shard (k = 1) whose length field says more than it holds: completed, but no frame.
  const forged = Uint8Array.of(0xfe, 9, 1, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0);
  const check = crc32(forged.subarray(0, 10)) & 0xffff;
  forged[10] = check >>> 8;
  forged[11] = check & 0xff;
  t.equal(c.push(forged), undefined);
  t.same(c.completed, { id: 9, k: 1, n: 1, s: 4, shards: 1 });
  t.same(c.stats, { shards: 14, badShards: 1, framesDecoded: 1, framesLost: 1 }, 'the counts as before');
});

t.test('the deframer takes shards between plain frames and noise, and says which came as shards', async (t) => {
  const m1 = encodeMessage({ kind: Kind.REQUEST, group: 0, command: 1, seq: 1, payload: { a: 1 } });
  const m2 = encodeMessage({ kind: Kind.REQUEST, group: 0, command: 1, seq: 2, payload: { b: new Uint8Array(300).fill(0) } });
  const plan = planShards(m2.length, 0.01)!;
  const wire2 = frameAsShards(m2, 3, plan);
  // Lose the first shard of m2 whole (its bytes up to its delimiter) and damage another.
  const stream = Buffer.concat([Buffer.from([1, 2, 3]), m1, Buffer.from(wire2)]);
  const firstEnd = stream.indexOf(0, m1.length + 3 + 1);
  const damaged = Buffer.concat([stream.subarray(0, m1.length + 3 + 1), stream.subarray(firstEnd + 1)]);
  for (const back of [20, 21, 22]) damaged[damaged.length - back]! ^= 0x10; // more than one flipped bit
  const d = new Deframer(9000);
  const bodies = d.push(new Uint8Array(damaged));
  if (plan.n - plan.k < 2) t.fail(`plan has too little parity to test: ${JSON.stringify(plan)}`);
  t.equal(bodies.length, 2);
  const [a, b] = bodies.map((x) => decodeMessage(x));
  t.ok(a!.ok && a!.message.seq === 1 && !d.cameInShards(bodies[0]!), 'plain frame');
  t.ok(b!.ok && b!.message.seq === 2 && d.cameInShards(bodies[1]!), 'frame from shards');
  t.ok(d.stats.corrupt >= 2, `noise and the damaged shard counted: ${d.stats.corrupt}`);
});

t.test('the plan fits the frame and the line; heavier noise costs more line bytes', async (t) => {
  let last = 0;
  for (const lambda of [0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05]) {
    const p = planShards(300, lambda)!;
    t.ok(p, `a plan at ${lambda}`);
    t.ok(p.k * p.s >= 302 && p.n >= p.k + 1 && p.n <= MAX_SHARDS, `${JSON.stringify(p)}`);
    t.equal(p.wire, p.n * (p.s + SHARD_WIRE_EXTRA));
    t.ok(p.wire >= last, `more line bytes at ${lambda}: ${p.wire}`);
    last = p.wire;
    t.ok(p.p >= 0.9, `${lambda}: most frames get through: ${p.p}`);
  }
  // A frame too large for a very bad line: the least bad plan, which rarely gets it through.
  const hopeless = planShards(8000, 0.2);
  t.ok(!hopeless || hopeless.p < 0.5, 'no plan, or one that rarely gets through');
  t.equal(planShards(2000, 0.08), undefined, 'a frame too large for a 5% line: no plan');
  const robust = planShardsAtMost(2000, 0.08)!;
  t.ok(robust && robust.p >= 0.5, `the most robust plan below that rate: ${JSON.stringify(robust)}`);
  // Chunks shrink as the line gets worse, and are the cap on a clean line.
  t.ok(bestFrame(1e-6, 8256, 30) > 7000, 'about the cap on a clean line');
  t.ok(bestFrame(0.08, 8256, 30) < bestFrame(0.016, 8256, 30));
  t.ok(bestFrame(0.016, 8256, 30) < 8256);
});

t.test('a bad line: the chunk the plan is sized for comes through a receiver that solves for at most its budget of missing data shards', async (t) => {
  // Issue 11's 5% run stalled: at 0.044 to 0.063 hits per byte the best chunk's plan lost more
  // data shards on average than the receiver solves for (e.g. k = 80, s = 10: 49 lost, budget 46),
  // so most chunks never came together however many parity shards came.
  let x = 12345;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (const lambda of [0.02, 0.035, 0.048, 0.055, 0.065, 0.08]) {
    const len = bestFrame(lambda, 8256, 30);
    const plan = planShardsAtMost(len - 2, lambda)!;
    t.ok(plan.p >= 0.9, `${lambda}: ${len} bytes as ${JSON.stringify(plan)}`);
    const q = Math.exp(-lambda * (plan.s + SHARD_WIRE_EXTRA));
    const frames = 60;
    let came = 0;
    const c = new ShardCollector(9000);
    for (let f = 0; f < frames; f++) {
      const body = frameBody(len - 2 - 4, f);
      for (const shard of encodeShards(body, f & 0xff, plan)) {
        if (rnd() >= q) continue; // lost on the line
        if (c.push(shard)) came++;
      }
    }
    t.ok(came >= frames * 0.85, `${lambda}: ${came} of ${frames} frames put together (budget ${solveBudget(plan.k, plan.s)} of k = ${plan.k})`);
  }
});

t.test('seen: a byte that carries hits per byte within 9%', async (t) => {
  for (const l of [1e-9, 1e-6, 1e-4, 0.0016, 0.016, 0.08, 0.5]) {
    const back = seenLambda(seenByte(l));
    if (l >= Math.pow(2, -255 / 8)) t.ok(Math.abs(back / l - 1) < 0.05, `${l} -> ${back}`);
  }
  t.equal(seenLambda(0), 0);
  t.ok(seenByte(0) > 0, 'no hits seen: the smallest rate, not "none"');
});

t.test('the line estimate follows the shards that arrive', async (t) => {
  const e = new LineEstimate(0.02);
  t.ok(Math.abs(e.lambda - 0.02) < 1e-9, 'the prior');
  for (let i = 0; i < 100; i++) e.observe(100, 90, 50); // 10% of 50-byte shards lost
  const want = -Math.log(0.9) / 50;
  t.ok(Math.abs(e.lambda / want - 1) < 0.05, `${e.lambda} near ${want}`);
  e.observe(10, 11, 50); // impossible counts are ignored
  t.ok(Math.abs(e.lambda / want - 1) < 0.05);
});

t.test('fixtures/fec/shards.json: the encoder reproduces every shard byte for byte, and any k decode', async (t) => {
  const doc = JSON.parse(readFileSync(new URL('../../fixtures/fec/shards.json', import.meta.url), 'utf8')) as {
    cases: Array<{ name: string; frameHex: string; bodyHex: string; plan: { s: number; k: number; n: number }; id: number; seen: number; shards: string[]; wireHex: string }>;
  };
  t.equal(doc.cases.length, 3);
  for (const c of doc.cases) {
    const body = Buffer.from(c.bodyHex, 'hex');
    t.same(encodeShards(body, c.id, c.plan, c.seen).map((b) => Buffer.from(b).toString('hex')), c.shards, c.name);
    t.equal(Buffer.from(frameAsShards(Buffer.from(c.frameHex, 'hex'), c.id, c.plan, c.seen)).toString('hex'), c.wireHex, `${c.name}: wire`);
    const last = new Map<number, Uint8Array>();
    for (let i = c.plan.n - c.plan.k; i < c.plan.n; i++) last.set(i, parseShard(Buffer.from(c.shards[i]!, 'hex'))!.data);
    t.same(Buffer.from(decodeShards(c.plan.k, last)!), body, `${c.name}: from the last k`);
  }
});

t.test('a shard put right wrongly does not lose the frame: it is put together again without it', async (t) => {
  const body = frameBody(196, 11);
  const shards = encodeShards(body, 4, { s: 20, k: 11, n: 14 });
  // Forge a shard that parses as "corrected" but carries wrong data: take shard 0, change its
  // data, recompute the check, then flip one bit so the receiver corrects it back to the wrong data.
  const forged = Uint8Array.from(shards[0]!);
  forged[10]! ^= 0xff;
  const c16 = crc32(forged.subarray(0, forged.length - 2)) & 0xffff;
  forged[forged.length - 2] = c16 >>> 8;
  forged[forged.length - 1] = c16 & 0xff;
  forged[12]! ^= 0x04;
  t.equal(parseShard(forged)?.corrected, true, 'the forged shard is taken as corrected');
  const c = new ShardCollector(1000);
  const outs = [forged, ...shards.slice(1)].map((b) => c.push(b));
  t.same(outs.find(Boolean), body, 'the frame, from the shards that were not corrected');
  t.equal(c.stats.framesDecoded, 1);
  t.equal(c.stats.framesLost, 0);
  // Without enough other shards the frame is lost when it is dropped, and counted once.
  const c2 = new ShardCollector(1000);
  for (const b of [forged, ...shards.slice(1, 11)]) t.equal(c2.push(b), undefined);
  for (let id = 10; id < 20; id++) c2.push(encodeShards(frameBody(12), id, { s: 20, k: 1, n: 1 })[0]!);
  t.equal(c2.stats.framesLost, 1, 'lost once, when it is dropped for newer frames');
});

t.test('a frame is solved only for as many missing data shards as its line bytes pay for (at most 96)', async (t) => {
  const k = 150;
  const body = frameBody(k * 10 - 2 - 4);
  const shards = encodeShards(body, 1, { s: 10, k, n: 255 }); // 105 parity shards
  // Budget: missing^3 <= 64 * k * (s + 10) = 192,000: 57 missing data shards.
  const c = new ShardCollector(4000);
  const some = [...shards.slice(0, k - 57), ...shards.slice(k, 255)];
  t.same(some.map((b) => c.push(b)).find(Boolean), body, '57 data shards missing: solved');
  const c2 = new ShardCollector(4000);
  const withData = [...shards.slice(0, k - 97), ...shards.slice(k)];
  t.equal(withData.map((b) => c2.push(b)).find(Boolean), undefined, '97 missing: waits, however many parity shards come');
  let got: Uint8Array | undefined;
  let i = k - 97;
  for (; !got && i < k; i++) got = c2.push(shards[i]!);
  t.same(got, body, 'solved once enough data shards came');
  t.equal(k - i, 57, 'at 57 missing');
  t.equal(c2.decodings, 1);
});

t.test('property: interleaved frames, damaged, repeated and lost shards: every frame with k undamaged shards comes out, once, whole; nothing else does', async (t) => {
  const frameArb = fc.record({ len: fc.integer({ min: 11, max: 600 }), s: fc.integer({ min: MIN_SHARD, max: 60 }), extra: fc.integer({ min: 0, max: 12 }), fill: fc.integer({ min: 0, max: 255 }) });
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 4 }),
      fc.array(fc.nat(), { minLength: 1, maxLength: 400 }), // the order shards go out in, by pick
      fc.array(fc.record({ at: fc.nat(), byte: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }), { maxLength: 3 }),
      fc.array(fc.nat(), { maxLength: 40 }), // shards lost
      (frames, picks, damage, lost) => {
        const made = frames
          .map((f, id) => {
            const k = Math.ceil((f.len + 4 + 2) / f.s);
            if (k > 200) return undefined;
            const body = frameBody(f.len, f.fill);
            return { id, k, body, shards: encodeShards(body, id, { s: f.s, k, n: Math.min(MAX_SHARDS, k + f.extra) }) };
          })
          .filter((x): x is NonNullable<typeof x> => x !== undefined);
        // Every shard once, in an order the picks choose (frames interleave), some repeated.
        const queue = made.flatMap((m) => m.shards.map((b, i) => ({ frame: m.id, i, b })));
        const order: typeof queue = [];
        for (const p of picks) if (queue.length) order.push(...queue.splice(p % queue.length, 1));
        order.push(...queue);
        for (const p of picks.slice(0, 10)) if (order.length) order.push(order[p % order.length]!);
        const lostSet = new Set(lost.map((x) => x % Math.max(1, order.length)));
        const damaged = new Map<number, { byte: number; mask: number }>();
        for (const d of damage) damaged.set(d.at % Math.max(1, order.length), d);
        const c = new ShardCollector(10_000);
        const intact = new Map<number, Set<number>>();
        const hit = new Set<number>();
        const out: Uint8Array[] = [];
        order.forEach((x, n) => {
          if (lostSet.has(n)) return;
          let b = x.b;
          const d = damaged.get(n);
          if (d) {
            b = Uint8Array.from(b);
            b[d.byte % b.length]! ^= d.mask;
            hit.add(x.frame);
          } else {
            const set = intact.get(x.frame) ?? new Set<number>();
            set.add(x.i);
            intact.set(x.frame, set);
          }
          const f = c.push(b);
          if (f) out.push(f);
        });
        for (const f of out) {
          const m = made.find((x) => Buffer.from(x.body).equals(Buffer.from(f)));
          if (!m) return false; // only frames that were sent
        }
        for (const m of made) {
          const n = out.filter((f) => Buffer.from(f).equals(Buffer.from(m.body))).length;
          // At most once; twice only if a damaged shard of it passed for a frame of another id
          // or shape (its id or n byte hit, "corrected" in the padding, which the frame's CRC does
          // not cover: seeds -1866170618 and -1042669151 found them); the link's seq numbers tell
          // the two apart.
          if (n > (hit.has(m.id) ? 2 : 1)) return false;
          if ((intact.get(m.id)?.size ?? 0) >= m.k && n < 1) return false; // k undamaged shards: out
        }
        return true;
      },
    ),
    { numRuns: 400 },
  );
});
