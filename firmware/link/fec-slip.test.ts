// Slips (docs/protocol.md 2.6, receiving): a shard that lost or gained one byte on the line is put
// back when exactly one place and value make it whole, and only into a frame being collected.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { SHARD_HEADER, SHARD_CHECK, ShardCollector, encodeShards, frameAsShards, repairSlip, slipPlaces } from './fec.js';
import { cobsEncode } from './cobs.js';
import { Deframer } from './framer.js';
import { encodeMessage, decodeMessage } from './codec.js';
import { Kind } from './frame.js';
import { prng } from '../flash/faults.js';

const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
const without = (w: Uint8Array, j: number): Uint8Array => Uint8Array.from([...w.subarray(0, j), ...w.subarray(j + 1)]);
const withByte = (w: Uint8Array, j: number, x: number): Uint8Array => Uint8Array.from([...w.subarray(0, j), x, ...w.subarray(j)]);

/** A frame body of `n` bytes with its CRC-32, as a collector checks it. */
function frameBody(n: number, rnd: () => number): Uint8Array {
  const b = new Uint8Array(n + 4).map(() => Math.floor(rnd() * 256));
  new DataView(b.buffer).setUint32(n, crc32(b.subarray(0, n)), false);
  return b;
}

t.test('every lost byte of a shard is put back or refused, every gained one taken out; almost none wrongly', async (t) => {
  const rnd = prng(7);
  // Share of places put right, per shard size: a lost byte is ambiguous when another place also
  // solves the check (about 1 in 256 places), so larger shards are put right less often.
  const minLost: Record<number, number> = { 16: 0.85, 59: 0.7, 120: 0.6, 240: 0.4 };
  for (const s of [16, 59, 120, 240]) {
    const k = 4;
    const shards = encodeShards(frameBody(k * s - 6, rnd), 5, { s, k, n: k + 2 });
    let lost = 0;
    let lostOk = 0;
    let gained = 0;
    let gainedOk = 0;
    let wrong = 0;
    for (const sh of shards) {
      const w = cobsEncode(sh);
      t.equal(w.length, s + SHARD_HEADER + SHARD_CHECK + 1, 'COBS adds one byte to a shard');
      for (let j = 0; j < w.length; j++) {
        const r1 = repairSlip(without(w, j), w.length);
        lost++;
        if (same(r1, sh)) lostOk++;
        else if (r1) wrong++;
        const r2 = repairSlip(withByte(w, j, 1 + Math.floor(rnd() * 255)), w.length);
        gained++;
        if (same(r2, sh)) gainedOk++;
        else if (r2) wrong++;
      }
    }
    t.ok(lostOk / lost >= minLost[s]!, `s = ${s}: ${lostOk} of ${lost} lost bytes put back`);
    t.ok(gainedOk / gained >= 0.99, `s = ${s}: ${gainedOk} of ${gained} gained bytes taken out`);
    // Wrong only where the true place was never tried (the lost byte was a COBS code byte) and
    // one other place solved the check by chance: the frame's CRC-32 then catches it.
    t.ok(wrong <= Math.ceil((lost + gained) / 200), `s = ${s}: ${wrong} of ${lost + gained} put back wrong`);
  }
});

t.test('only lengths one off, and whole shards: anything else is refused', async (t) => {
  const rnd = prng(3);
  const [sh] = encodeShards(frameBody(100, rnd), 1, { s: 60, k: 2, n: 2 });
  const w = cobsEncode(sh!);
  t.equal(repairSlip(w, w.length), undefined, 'the right length: no slip to repair');
  t.equal(repairSlip(without(without(w, 3), 9), w.length), undefined, 'two bytes lost');
  t.equal(repairSlip(withByte(withByte(w, 3, 7), 9, 7), w.length), undefined, 'two bytes gained');
  const flipped = without(w, 20);
  flipped[40]! ^= 0x08;
  t.equal(repairSlip(flipped, w.length), undefined, 'a lost byte and a flipped bit');
  t.equal(repairSlip(new Uint8Array(w.length - 1).fill(0x55), w.length), undefined, 'noise of the length');
  t.equal(repairSlip(w.subarray(0, 5), 6), undefined, 'shorter than any shard');
});

t.test('the collector takes a repaired shard only into a frame it is collecting, in its shape', async (t) => {
  const rnd = prng(11);
  const body = frameBody(300, rnd);
  const shards = encodeShards(body, 9, { s: 40, k: 8, n: 10 });
  const w = shards.map((b) => cobsEncode(b));
  const none = new ShardCollector(9000);
  t.same(none.pushSlipped(without(w[0]!, 5)), { taken: false }, 'no frame being collected: nothing is repaired');
  t.equal(none.stats.shards, 0);

  const c = new ShardCollector(9000);
  t.equal(c.push(shards[0]!), undefined);
  // Shards 1..7, each with a byte lost or gained: the frame completes from repaired shards.
  let frame: Uint8Array | undefined;
  let taken = 0;
  for (let i = 1; i < 8; i++) {
    const piece = i % 2 ? without(w[i]!, 4 + i) : withByte(w[i]!, 10 + i, 0x33);
    const r = c.pushSlipped(piece);
    if (r.taken) taken++;
    frame = r.frame ?? frame;
  }
  t.ok(taken >= 5, `${taken} of 7 slipped shards taken`);
  for (let i = 8; i < 10 && !frame; i++) frame = c.push(shards[i]!);
  t.ok(same(frame, body), 'the frame comes out whole');
  t.equal(c.stats.slipsRepaired, taken);

  // A slipped shard of another frame id (none being collected under it) is not taken.
  const other = encodeShards(frameBody(300, rnd), 10, { s: 40, k: 8, n: 10 });
  const c2 = new ShardCollector(9000);
  c2.push(shards[0]!);
  t.same(c2.pushSlipped(without(cobsEncode(other[1]!), 7)), { taken: false }, 'another id: not taken');
  // Nor one of another shape under the same id.
  const shape = encodeShards(frameBody(300, rnd), 9, { s: 40, k: 8, n: 11 });
  t.same(c2.pushSlipped(without(cobsEncode(shape[1]!), 7)), { taken: false }, 'another n: not taken');
  // Nor a shard already held.
  t.same(c2.pushSlipped(without(w[0]!, 7)), { taken: false }, 'a shard already held: not taken');
});

t.test('the deframer delivers a frame whose shards slipped, and counts no corrupt frame for them', async (t) => {
  const m = encodeMessage({ kind: Kind.REQUEST, group: 0, command: 1, seq: 4, payload: { b: new Uint8Array(500).map((_, i) => (i * 13) & 0xff) } });
  const wire = frameAsShards(m, 3, { s: 64, k: 9, n: 9 });
  // No parity: every shard must come. Take a byte out of the third shard, put one into the fifth.
  const pieces: Uint8Array[] = [];
  let at = 1;
  for (let i = 0; i < 9; i++) {
    const end = wire.indexOf(0, at);
    let p = wire.subarray(at, end);
    // (The first place from 30 on where the lost byte is not ambiguous: about 1 in 4 places of a
    // shard this size are, another place solving the check by chance.)
    if (i === 2) p = without(p, [30, 31, 32, 33, 34, 35].find((j) => repairSlip(without(p, j), p.length)) ?? 30);
    if (i === 4) p = withByte(p, 12, 0x77);
    pieces.push(p);
    at = end + 1;
  }
  const stream = Buffer.concat([Buffer.from([0]), ...pieces.flatMap((p) => [Buffer.from(p), Buffer.from([0])])]);
  const d = new Deframer(9000);
  const out = d.push(new Uint8Array(stream));
  t.equal(out.length, 1, 'the frame is delivered');
  const msg = decodeMessage(out[0]!);
  t.ok(msg.ok && msg.message.seq === 4 && d.cameInShards(out[0]!), 'the request, from shards');
  t.equal(d.stats.corrupt, 0, 'nothing counted corrupt');
  t.equal(d.shards.stats.slipsRepaired, 2);
  t.equal(d.shards.stats.badShards, 0);
});

t.test('a slip costs the receiver places in proportion to the bytes that came, whatever a stranger sends', async (t) => {
  const rnd = prng(5);
  const c = new ShardCollector(9000);
  // A stranger opens a frame of the largest shards, then sends pieces one byte off its length.
  const [open] = encodeShards(frameBody(1000, rnd), 1, { s: 240, k: 5, n: 5 });
  c.push(open!);
  const before = slipPlaces;
  let bytes = 0;
  for (let i = 0; i < 200; i++) {
    const piece = new Uint8Array(240 + SHARD_HEADER + SHARD_CHECK + (i % 2 ? 0 : 2)).map(() => 1 + Math.floor(rnd() * 255));
    bytes += piece.length + 1;
    t.equal(c.pushSlipped(piece).taken, false);
  }
  const places = slipPlaces - before;
  t.ok(places <= bytes, `${places} places tried for ${bytes} bytes received`);
  t.equal(c.stats.shards, 1, 'noise was not taken');
});
