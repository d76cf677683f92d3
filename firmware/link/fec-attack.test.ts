// Regression (outside review of the FEC change): a stranger's shards must not make the receiver
// solve a frame again and again. A shard with one flipped bit is "corrected" (parseShard); when a
// decoding with a corrected shard in it fails, the collector sets the corrected ones aside and
// decodes again at the next shard that brings it back to k. A sender of shards that are all
// crafted "corrected" ones (a valid check, then one data bit flipped) gets a full decoding with
// 95 missing data shards out of every shard it sends: about 10 ms per 62 line bytes, ~1 s per
// frame id, where docs/protocol.md 2.6 promises a stranger's frame cannot cost 100 ms.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { SHARD_MARK, ShardCollector } from './fec.js';

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
  // Warm up the arithmetic once (an honest frame of this shape decodes in about 10 ms).
  const warm = new ShardCollector(8256);
  for (const b of bodies.slice(0, k)) warm.push(b);
  const t0 = performance.now();
  for (const b of bodies) col.push(b);
  const ms = performance.now() - t0;
  t.ok(ms < 250, `${bodies.length} crafted shards of one frame id took ${ms.toFixed(0)} ms (bound 250 ms)`);
});
