// BoundedDelimiterParser: same frames however the stream is cut, bounded buffer, lossless overflow.
import t from 'tap';
import fc from 'fast-check';
import { BoundedDelimiterParser } from './bounded-delimiter.js';

/** Feed `pieces` through a fresh parser and return what it pushed, without ending it. */
function run(pieces: readonly Uint8Array[], maxBuffer?: number): { out: Buffer[]; parser: BoundedDelimiterParser } {
  const parser = new BoundedDelimiterParser({ delimiter: [0], includeDelimiter: true, ...(maxBuffer ? { maxBuffer } : {}) });
  const out: Buffer[] = [];
  parser.on('data', (c: Buffer) => out.push(Buffer.from(c)));
  for (const p of pieces) parser.write(Buffer.from(p));
  return { out, parser };
}

const tick = () => new Promise((r) => setImmediate(r));
const hex = (bufs: readonly Buffer[]) => bufs.map((b) => b.toString('hex'));

// Three frames of different sizes, each terminated by 0x00 (COBS bodies have no zeros inside).
const frames = [Buffer.from([1, 2, 3, 0]), Buffer.from([5, 0]), Buffer.from([9, 8, 7, 6, 5, 4, 3, 0])];
const stream = Buffer.concat(frames);

t.test('splitting a multi-frame stream at every byte boundary gives the same frames', async (t) => {
  for (let i = 0; i <= stream.length; i++) {
    const { out } = run([stream.subarray(0, i), stream.subarray(i)]);
    await tick();
    t.same(hex(out), hex(frames), `split at ${i}`);
  }
  // And every pair of cut points (three pieces).
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j++) {
      const { out } = run([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      await tick();
      t.same(hex(out), hex(frames), `split at ${i},${j}`);
    }
  }
});

t.test('byte by byte', async (t) => {
  const { out } = run([...stream].map((b) => Uint8Array.of(b)));
  await tick();
  t.same(hex(out), hex(frames));
});

t.test('property: any frames, any cuts -> same frames; a trailing partial frame is held', async (t) => {
  const frameArb = fc.uint8Array({ minLength: 0, maxLength: 40 }).map((b) => Buffer.concat([b.map((x) => x || 1), Buffer.of(0)]));
  await fc.assert(
    fc.asyncProperty(fc.array(frameArb, { maxLength: 8 }), fc.uint8Array({ maxLength: 10 }), fc.array(fc.nat(), { maxLength: 6 }), async (fs, tail, cutSeeds) => {
      const tailNoZero = Buffer.from(tail.map((x) => x || 1));
      const all = Buffer.concat([...fs, tailNoZero]);
      const cuts = [...new Set(cutSeeds.map((c) => c % (all.length + 1)))].sort((x, y) => x - y);
      const pieces: Buffer[] = [];
      let prev = 0;
      for (const c of cuts) {
        pieces.push(all.subarray(prev, c));
        prev = c;
      }
      pieces.push(all.subarray(prev));
      const { out, parser } = run(pieces);
      await tick();
      return JSON.stringify(hex(out)) === JSON.stringify(hex(fs)) && parser.buffer.equals(tailNoZero);
    }),
  );
  t.pass('property held');
});

t.test('overflow: held bytes are passed on as-is, counted, never more than maxBuffer held', async (t) => {
  const max = 16;
  const noise = Buffer.alloc(50, 0x55); // no delimiter: a line of garbage
  const pieces = [noise.subarray(0, 10), noise.subarray(10, 30), noise.subarray(30), Buffer.from([1, 2, 0, 3, 0])];
  const parser = new BoundedDelimiterParser({ delimiter: [0], includeDelimiter: true, maxBuffer: max });
  const out: Buffer[] = [];
  parser.on('data', (c: Buffer) => out.push(Buffer.from(c)));
  for (const p of pieces) {
    parser.write(p);
    t.ok(parser.buffer.length <= max, `held ${parser.buffer.length} <= ${max}`);
  }
  await tick();
  t.equal(parser.overflows, 2, 'two overflow flushes (30 held, then 20 held)');
  t.ok(Buffer.concat(out).equals(Buffer.concat(pieces)), 'lossless: every byte passed on in order');
  t.same(hex(out.slice(-1)), ['0300'], 'framing resumes after the overflow');
});

t.test('default maxBuffer is 64 KiB; bad maxBuffer is a RangeError', async (t) => {
  t.equal(new BoundedDelimiterParser({ delimiter: [0] }).maxBuffer, 64 * 1024);
  t.throws(() => new BoundedDelimiterParser({ delimiter: [0], maxBuffer: 0 }), RangeError);
});

t.test('end flushes the held partial frame', async (t) => {
  const { out, parser } = run([Buffer.from([1, 0, 2, 3])]);
  parser.end();
  await new Promise((r) => parser.on('end', r).resume());
  t.same(hex(out), ['0100', '0203']);
});
