// Incremental redundancy (docs/protocol.md 2.6): NEED bodies, the receiver that asks for the
// shards a frame lacks and holds the frames behind it, and the sender that answers at most 2
// rounds per frame of the last 8, whatever NEEDs come.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { readFileSync } from 'node:fs';
import {
  GIVE_UP_AFTER,
  NEED_MARK,
  NEED_SIZE,
  REPAIR_FRAMES,
  REPAIR_ROUNDS,
  SHARD_MARK,
  ShardCollector,
  ShardResender,
  ShardSource,
  encodeNeed,
  encodeShards,
  parseNeed,
  parseShard,
  planShards,
  planShardsHarq,
  repairCount,
  shardsOnLine,
} from './fec.js';
import { Deframer } from './framer.js';
import { encodeFrame, PROTOCOL_VERSION, Kind } from './frame.js';
import { cobsDecode, cobsEncode } from './cobs.js';

/** A frame body (header, payload, CRC) of `len` bytes whose payload starts with `tag`. */
function body(tag: number, len = 600): Uint8Array {
  const payload = new Uint8Array(len - 12).map((_, i) => (i * 7 + tag) & 0xff);
  payload[0] = tag;
  const f = encodeFrame({ version: PROTOCOL_VERSION, kind: Kind.REQUEST, group: 1, command: 0, seq: tag }, payload);
  return cobsDecode(f.subarray(1, f.length - 1))!;
}

t.test('NEED: encoded as 0xFD | id | k | n | need | check16, parsed back, damage refused', async (t) => {
  const b = encodeNeed({ id: 300, k: 78, n: 255, need: 4 });
  t.equal(b.length, NEED_SIZE);
  t.equal(b[0], NEED_MARK);
  t.same([...b.subarray(1, 5)], [300 & 0xff, 78, 255, 4]);
  const c = crc32(b.subarray(0, 5)) & 0xffff;
  t.same([b[5], b[6]], [c >>> 8, c & 0xff], 'check16: low half of the CRC-32 of the 5 bytes before it, MSB first');
  t.same(parseNeed(b), { id: 44, k: 78, n: 255, need: 4 });
  for (let bit = 0; bit < NEED_SIZE * 8; bit++) {
    const x = Uint8Array.from(b);
    x[bit >>> 3]! ^= 1 << (bit & 7);
    t.equal(parseNeed(x), undefined, `bit ${bit} flipped: refused`);
  }
  t.equal(parseNeed(b.subarray(0, 6)), undefined, 'short');
  t.equal(parseNeed(encodeNeed({ id: 1, k: 9, n: 8, need: 1 })), undefined, 'n < k');
  t.equal(encodeNeed({ id: 1, k: 9, n: 20, need: 999 })[4], 255, 'need capped at 255');
  t.equal(parseShard(b), undefined, 'not a shard');
});

t.test('a NEED on the line is neither a frame nor corrupt; a damaged one is corrupt', async (t) => {
  const d = new Deframer(8256);
  const got: unknown[] = [];
  d.onNeed = (n) => got.push(n);
  const need = encodeNeed({ id: 5, k: 3, n: 255, need: 2 });
  const bad = Uint8Array.from(need);
  bad[4] = bad[4]! ^ 1;
  t.same(d.push(new Uint8Array([0, ...cobsEncode(need), 0, ...cobsEncode(bad), 0])), []);
  t.same(got, [{ id: 5, k: 3, n: 255, need: 2 }]);
  t.equal(d.stats.corrupt, 1);
  t.equal(d.stats.frames, 0);
  const quiet = new Deframer(8256); // no listener: ignored, not corrupt
  quiet.push(new Uint8Array([0, ...cobsEncode(need), 0]));
  t.equal(quiet.stats.corrupt, 0);
});

t.test('the code is one: a prefix, then the next parity indices, are shards of the full plan', async (t) => {
  const b = body(1, 2000);
  const plan = { s: 100, k: 21, n: 255 };
  const src = new ShardSource(b, 9, plan, 3);
  const all = encodeShards(b, 9, plan, 3);
  t.equal(all.length, 255);
  for (const i of [0, 20, 21, 40, 254]) t.same(src.shard(i), all[i], `shard ${i}`);
  t.equal(encodeShards(b, 9, plan, 3, 25).length, 25);
  // Parity shard k + j does not depend on n: old fixtures (n = shards sent) stay valid.
  const small = encodeShards(b, 9, { s: 100, k: 21, n: 30 }, 3);
  t.same(small[25]!.subarray(6, 106), all[25]!.subarray(6, 106));
});

t.test('a NEED-round plan sends fewer shards at first than a whole plan, and never where rounds would be large', async (t) => {
  const whole = planShards(8232, 0.00068)!;
  const harq = planShardsHarq(8232, 0.00068)!;
  t.equal(harq.n, 255);
  t.ok(harq.send! < harq.n && harq.send! >= harq.k, `sends ${harq.send} of ${harq.k} data first`);
  t.ok(harq.wire < whole.wire, `${harq.wire} line bytes first, whole plan ${whole.wire}`);
  const bad = planShardsHarq(4284, 0.0087)!; // 1%: a round would have to bring many shards
  t.equal(bad.send, undefined);
  t.same(bad, planShards(4284, 0.0087));
  t.equal(repairCount(1, 0.95), 2, 'one more than asked: 1 of 2 arrive 99.75 times in 100');
  t.equal(repairCount(1, 0.99), 1);
  t.ok(repairCount(7, 0.95) > 7 && repairCount(7, 0.95) <= 18);
});

/** The shards of frame `id` from `b` under `plan`, first `send` of them. */
function prefix(b: Uint8Array, id: number, plan: { s: number; k: number; n: number }, send: number): Uint8Array[] {
  return encodeShards(b, id, plan, 0, send);
}

t.test('receiver: a shard of a later frame ends the older one\'s first shards: NEED, and the later frame waits for it', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 255 };
  const a = body(1);
  const b = body(2);
  const sa = prefix(a, 10, plan, 13);
  const sb = prefix(b, 11, plan, 13);
  const delivered: Uint8Array[] = [];
  // Frame 10 loses 3 of its 13 shards (the last two among them): 10 arrive, it needs 1 more.
  for (const [i, sh] of sa.entries()) if (![3, 11, 12].includes(i)) delivered.push(...col.pushAll(sh));
  t.same(col.needs(), [], 'no NEED while its shards may still come');
  t.equal(col.waiting, 'fresh');
  delivered.push(...col.pushAll(sb[0]!));
  t.same(col.needs(), [], 'not at a lone shard of another id (it may be a damaged one)');
  delivered.push(...col.pushAll(sb[1]!));
  const needs = col.needs().map((x) => parseNeed(x));
  t.same(needs, [{ id: 10, k: 11, n: 255, need: 1 }], 'the second shard of frame 11 ends frame 10\'s: NEED 1');
  for (const sh of sb.slice(2)) delivered.push(...col.pushAll(sh));
  t.equal(delivered.length, 0, 'frame 11 is whole but held behind frame 10');
  t.same(col.needs(), [], 'one NEED per round');
  // The repair: the next parity indices.
  const src = new ShardSource(a, 10, plan);
  const out = col.pushAll(src.shard(13));
  t.same(out, [a, b], 'frame 10 put together, then frame 11, in order');
  t.equal(col.stats.framesDecoded, 2);
  t.equal(col.stats.framesLost, 0);
});

t.test('receiver: a frame whose repair does not come is given up after ' + GIVE_UP_AFTER + ' later frames, which are then delivered in order', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 255 };
  const frames = [0, 1, 2, 3, 4, 5, 6].map((x) => body(x + 1));
  const out: Uint8Array[] = [];
  for (const sh of prefix(frames[0]!, 20, plan, 13).slice(0, 8)) out.push(...col.pushAll(sh)); // 3 short
  for (const [j, f] of frames.slice(1).entries()) {
    for (const sh of prefix(f, 21 + j, plan, 13)) out.push(...col.pushAll(sh));
    if (j + 1 < GIVE_UP_AFTER) t.same(out, [], `frame ${21 + j} held`);
  }
  t.same(out, frames.slice(1), `frames 21..${20 + GIVE_UP_AFTER} held, then delivered in order when 20 is given up; the rest at once`);
  t.equal(col.stats.framesLost, 1);
  const needs = col.needs().map((x) => parseNeed(x)!);
  t.same(needs.map((n) => [n.id, n.need]), [[20, 3]], 'one NEED, none more without a shard of it in between');
  // Late repair shards of the frame given up change nothing.
  t.same(col.pushAll(new ShardSource(frames[0]!, 20, plan).shard(13)), []);
});

t.test('receiver: a NEED that brought nothing is asked again after a longer pause, if the frame mostly came', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 255 };
  const src = new ShardSource(body(1), 50, plan);
  for (let i = 0; i < 9; i++) col.pushAll(src.shard(i));
  t.equal(col.waiting, 'again', 'before its last data shard a pause is only a long one');
  col.idle();
  t.same(col.needs(), []);
  col.pushAll(src.shard(11));
  t.equal(col.waiting, 'fresh');
  col.idle();
  t.same(col.needs().map((x) => parseNeed(x)!.need), [1]);
  t.equal(col.waiting, 'again', 'its answer may have been lost');
  col.idle();
  t.same(col.needs(), [], 'not after a short pause');
  const later = prefix(body(9), 51, plan, 13);
  for (const sh of later) t.same(col.pushAll(sh), [], 'a later frame is held behind it');
  t.same(col.needs().map((x) => parseNeed(x)!.need), [], 'no shard of it came: not asked at the later frame');
  t.equal(col.waiting, 'again');
  t.same(col.idle(true), [], 'after a long pause: asked once more');
  t.same(col.needs().map((x) => parseNeed(x)!.need), [1]);
  t.same(col.idle(true), [body(9)], 'that brought nothing either: given up, and the frame held behind it delivered');
  t.same(col.needs(), []);
  t.equal(col.stats.framesLost, 1);
  t.equal(col.waiting, undefined);
  // A frame of which little came is not asked for again (a stranger's single shards).
  const few = new ShardCollector(8256, 0.001, { harq: true });
  few.pushAll(new ShardSource(body(2), 51, plan).shard(0));
  few.idle();
  t.same(few.needs(), []);
  few.idle(true);
  t.same(few.needs(), [], 'not asked for: little of it came');
  few.idle(true);
  t.same(few.needs(), []);
  t.equal(few.stats.framesLost, 1, 'given up at the second long pause');
});

t.test('receiver: a second round is asked for when the first falls short; at most 3 NEEDs per frame', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 255 };
  const a = body(1);
  const src = new ShardSource(a, 30, plan);
  const b = prefix(body(2), 31, plan, 13);
  for (let i = 0; i < 7; i++) col.pushAll(src.shard(i)); // 4 short
  col.pushAll(b[0]!);
  col.pushAll(b[1]!);
  t.same(col.needs().map((x) => parseNeed(x)!.need), [4]);
  col.pushAll(src.shard(13)); // one of the repair arrives
  col.pushAll(b[2]!);
  t.same(col.needs().map((x) => parseNeed(x)!.need), [3], 'round over: NEED 3');
  col.pushAll(src.shard(20));
  col.idle();
  t.same(col.needs().map((x) => [parseNeed(x)!.id, parseNeed(x)!.need]), [[30, 2]], 'a pause ends a round too (not of frame 31: its data shards are not through)');
  col.pushAll(src.shard(21));
  col.idle();
  t.same(col.needs(), [], 'no fourth NEED');
  t.equal(col.stats.needsSent, 3);
});

t.test('receiver: a lone shard under a new id neither ends the frame coming nor holds the frames after it', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 255 };
  const a = prefix(body(1), 70, plan, 13);
  const stray = prefix(body(5), 200, plan, 13)[4]!; // as a damaged shard "corrected" into id 200
  const out: Uint8Array[] = [];
  for (const sh of a.slice(0, 5)) out.push(...col.pushAll(sh));
  out.push(...col.pushAll(stray));
  t.same(col.needs(), [], 'frame 70 is not asked for');
  for (const sh of a.slice(5)) out.push(...col.pushAll(sh));
  t.same(out, [body(1)], 'frame 70 whole');
  for (const sh of prefix(body(2), 71, plan, 13)) out.push(...col.pushAll(sh));
  t.same(out, [body(1), body(2)], 'frame 71 delivered at once: nothing is held behind the stray');
  t.equal(col.stats.framesLost, 1, 'the stray given up');
});

t.test('receiver: nothing is held behind a frame of a short code (n < 255) or of a line losing more than 1 shard in 5', async (t) => {
  for (const [plan, lost] of [
    [{ s: 60, k: 11, n: 14 }, [3, 10, 12]],
    [{ s: 60, k: 11, n: 255 }, [1, 3, 5, 12]],
  ] as const) {
    const col = new ShardCollector(8256, 0.001, { harq: true });
    const out: Uint8Array[] = [];
    for (const [i, sh] of prefix(body(1), 80, plan, 13).entries()) if (!lost.includes(i as never)) out.push(...col.pushAll(sh));
    for (const sh of prefix(body(2), 81, plan, 13)) out.push(...col.pushAll(sh));
    t.same(out, [body(2)], `n ${plan.n}, ${lost.length} of 13 lost: the next frame is delivered at once (its go-back is not delayed)`);
    t.equal(col.needs().length, 1, 'the NEED is sent all the same');
  }
});

t.test('receiver: a frame whose last shard (index n - 1) came has nothing more to ask for: given up at once, nothing held', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  const plan = { s: 60, k: 11, n: 13 };
  const a = encodeShards(body(1), 60, plan);
  for (const i of [0, 1, 2, 3, 4, 5, 6, 7, 12]) col.pushAll(a[i]!);
  const out: Uint8Array[] = [];
  for (const sh of encodeShards(body(2), 61, plan)) out.push(...col.pushAll(sh));
  t.same(out, [body(2)], 'the next frame is delivered as it comes');
  t.same(col.needs(), []);
  t.equal(col.stats.framesLost, 1);
});

t.test('a collector without NEED mode (hosts, monitors) delivers each frame as it comes and asks nothing', async (t) => {
  const col = new ShardCollector(8256);
  const plan = { s: 60, k: 11, n: 255 };
  const a = prefix(body(1), 40, plan, 8);
  const b = prefix(body(2), 41, plan, 13);
  for (const sh of a) t.same(col.pushAll(sh), []);
  const out: Uint8Array[] = [];
  for (const sh of b) out.push(...col.pushAll(sh));
  t.same(out, [body(2)]);
  col.idle();
  t.same(col.needs(), []);
  t.equal(col.waiting, undefined);
});

t.test('sender: a flood of hostile NEEDs gets at most 2 rounds per frame, only for the last 8 frames', async (t) => {
  const rs = new ShardResender();
  const plan = { s: 60, k: 11, n: 255 };
  const sources: ShardSource[] = [];
  for (let id = 0; id < 12; id++) {
    const src = new ShardSource(body(id), id, plan);
    sources.push(src);
    rs.add(src, 13, 0.95);
  }
  let shards = 0;
  const seen = new Map<number, Set<number>>();
  for (let round = 0; round < 50; round++) {
    for (let id = 0; id < 256; id++) {
      for (const b of rs.answer({ id, k: 11, n: 255, need: 255 })) {
        shards++;
        const p = parseShard(b)!;
        t.equal(p.k, 11);
        const s = seen.get(p.id) ?? new Set<number>();
        t.notOk(s.has(p.index), 'never the same shard twice');
        s.add(p.index);
        seen.set(p.id, s);
      }
    }
  }
  t.same([...seen.keys()].sort((x, y) => x - y), [4, 5, 6, 7, 8, 9, 10, 11], `only the last ${REPAIR_FRAMES} frames`);
  for (const [id, s] of seen) {
    t.ok(s.size <= REPAIR_ROUNDS * plan.k, `frame ${id}: ${s.size} shards, at most ${REPAIR_ROUNDS} rounds of k`);
    t.ok(Math.min(...s) === 13, 'the next indices after what was sent');
  }
  t.equal(rs.stats.answered, REPAIR_FRAMES * REPAIR_ROUNDS);
  t.ok(shards <= REPAIR_FRAMES * REPAIR_ROUNDS * plan.k);
  // A NEED naming another shape for a kept id is ignored.
  const fresh = new ShardResender();
  fresh.add(sources[0]!, 13, 0.95);
  t.same(fresh.answer({ id: 0, k: 12, n: 255, need: 1 }), []);
  t.same(fresh.answer({ id: 0, k: 11, n: 200, need: 1 }), []);
  t.equal(fresh.answer({ id: 0, k: 11, n: 255, need: 1 }).length, 2, 'need 1: 2 shards at 5% loss');
  // A whole plan (n = shards sent) has nothing more to send.
  const whole = new ShardResender();
  whole.add(new ShardSource(body(1), 3, { s: 60, k: 11, n: 13 }), 13, 0.95);
  t.same(whole.answer({ id: 3, k: 11, n: 13, need: 2 }), []);
});

t.test('a stranger cannot make the receiver send more NEEDs than shards it receives', async (t) => {
  const col = new ShardCollector(8256, 0.001, { harq: true });
  let shards = 0;
  let needs = 0;
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(6 + 4 + 2);
    b.set([SHARD_MARK, i & 0xff, 200, 255, i % 7, 0]);
    const c = crc32(b.subarray(0, 10)) & 0xffff;
    b[10] = c >>> 8;
    b[11] = c & 0xff;
    col.pushAll(b);
    shards++;
    if (i % 3 === 0) col.idle(i % 6 === 0);
    needs += col.needs().length;
  }
  t.ok(needs <= shards, `${needs} NEEDs for ${shards} shards`);
});

t.test('fixtures/fec/shards.json needs: encodeNeed reproduces every NEED byte for byte, parseNeed reads them back', async (t) => {
  const doc = JSON.parse(readFileSync(new URL('../../fixtures/fec/shards.json', import.meta.url), 'utf8')) as {
    needs: Array<{ name: string; id: number; k: number; n: number; need: number; hex: string; wireHex: string }>;
  };
  t.ok(doc.needs.length >= 3);
  for (const x of doc.needs) {
    const b = encodeNeed(x);
    t.equal(Buffer.from(b).toString('hex'), x.hex, x.name);
    t.equal('00' + Buffer.from(shardsOnLine([b])).toString('hex'), x.wireHex, `${x.name}: wire`);
    t.same(parseNeed(Buffer.from(x.hex, 'hex')), { id: x.id, k: x.k, n: x.n, need: x.need });
  }
});
