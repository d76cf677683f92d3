// Regression (outside review of the FEC change): a stranger's shards must not make the receiver
// solve a frame again and again. A shard with one flipped bit is "corrected" (parseShard); when a
// decoding with a corrected shard in it fails, the collector sets the corrected ones aside and
// decodes again at the next shard that brings it back to k. A sender of shards that are all
// crafted "corrected" ones (a valid check, then one data bit flipped) gets a full decoding with
// 95 missing data shards out of every shard it sends: about 10 ms per 62 line bytes, ~1 s per
// frame id. Now a frame is put together at most twice: once, and once without corrected shards.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { SHARD_MARK, ShardCollector, encodeShards, planShards } from './fec.js';

function shard(id: number, k: number, n: number, i: number, s: number, flip: boolean): Uint8Array {
  const b = new Uint8Array(6 + s + 2);
  b.set([SHARD_MARK, id, k, n, i, 0]);
  for (let x = 0; x < s; x++) b[6 + x] = (i * 31 + x * 7 + 1) & 0xff;
  const c = crc32(b.subarray(0, 6 + s)) & 0xffff;
  b[6 + s] = c >>> 8;
  b[7 + s] = c & 0xff;
  if (flip) b[9] = b[9]! ^ 0x10; // one data bit: the receiver puts it right and marks the shard corrected
  return b;
}

t.test('one frame id of crafted corrected shards costs the receiver at most a few decodings', async (t) => {
  const k = 159;
  const n = 255;
  const s = 52; // k * s fits the default module's largest body (8256)
  const col = new ShardCollector(8256);
  const bodies: Uint8Array[] = [];
  for (let i = 0; i < 63; i++) bodies.push(shard(7, k, n, i, s, false)); // 96 data shards missing
  for (let i = k; i < n - 1; i++) bodies.push(shard(7, k, n, i, s, false));
  bodies.push(shard(7, k, n, n - 1, s, true)); // the k-th: a decoding fails, this one is set aside
  for (let i = 63; i < k; i++) bodies.push(shard(7, k, n, i, s, true)); // each brings it back to k
  // Counted, not timed (a decoding with 95 missing data shards takes about 10 ms here).
  for (const b of bodies) col.push(b);
  t.ok(col.decodings <= 2, `${bodies.length} crafted shards of one frame id: ${col.decodings} decodings (at most 2)`);
  t.equal(col.stats.framesDecoded, 0);
});

t.test('a handful of stray shards does not make the receiver believe the line is at its worst', async (t) => {
  // One whole shard (valid check) of a frame that claims n = 255, for each of 16 ids: each frame is
  // dropped unfinished when 8 newer ones are held, and counted as 255 shards sent, 1 whole
  // (docs/protocol.md 2.6: "n when it never is"). 16 shards of 14 line bytes outweigh hundreds of
  // genuine ones: the module then plans every small answer for 0.25 hits per byte (255 shards:
  // an 8-byte ECHO answer goes from 70 to about 3,500 line bytes) until the estimate recovers.
  const col = new ShardCollector(8256);
  // First 100 genuine frames of 60 bytes, every shard whole (a clean line).
  for (let f = 0; f < 100; f++) {
    const body = new Uint8Array(64).map((_, i) => (i * 13 + f) & 0xff);
    new DataView(body.buffer).setUint32(60, crc32(body.subarray(0, 60)), false);
    for (const sh of encodeShards(body, 100 + f, planShards(64, 0.005)!)) col.push(sh);
  }
  const before = col.line.lambda;
  t.ok(before < 0.005, `estimate after 100 clean frames: ${before.toFixed(4)}`);
  for (let id = 0; id < 16; id++) col.push(shard(id, 1, 255, 254, 4, false));
  t.ok(col.line.lambda < 0.05, `estimate after 16 stray shards: ${col.line.lambda.toFixed(3)} hits per byte (bound 0.05; prior 0.02)`);
  t.ok(col.sendLambda(40) < 0.1, `small answers planned for ${col.sendLambda(40).toFixed(3)} hits per byte`);
});

t.test('late stray shards under the id of a frame that made nothing say nothing of the line either', async (t) => {
  const col = new ShardCollector(8256);
  const before = col.line.lambda;
  // For each of 16 ids: a k = 1 "frame" that decodes to nothing, then a shard claiming index 254.
  for (let id = 0; id < 16; id++) {
    col.push(shard(id, 1, 255, 0, 4, false));
    col.push(shard(id, 1, 255, 254, 4, false));
  }
  t.equal(col.line.lambda, before, 'the estimate is where it was');
  t.equal(col.peerLambda, 0, 'nothing believed of a peer that sent no whole frame');
});
