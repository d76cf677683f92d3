// The deframer against the frozen fixtures, split at every byte boundary, and against random
// garbage between frames (property test): every valid frame comes out, nothing crashes.
import t from 'tap';
import fc from 'fast-check';
import { Deframer } from './framer.js';
import { decodeMessage, encodeMessage } from './codec.js';
import { Kind } from './frame.js';
import { loadFrameFixtures } from '../../fixtures/frames.js';

const fixtures = loadFrameFixtures();
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

t.test('encoder reproduces every fixture byte for byte', async (t) => {
  for (const f of fixtures) t.equal(hex(encodeMessage(f.message)), hex(f.wire), f.name);
});

t.test('every fixture, and all of them in one stream, split at every byte boundary', async (t) => {
  const stream = Buffer.concat(fixtures.map((f) => f.wire));
  for (const f of [...fixtures, { name: 'all', wire: new Uint8Array(stream), message: undefined }]) {
    const want = f.message ? [f.message] : fixtures.map((x) => x.message);
    for (let cut = 0; cut <= f.wire.length; cut++) {
      const d = new Deframer(9000);
      const got = [...d.push(f.wire.subarray(0, cut)), ...d.push(f.wire.subarray(cut))].map((b) => {
        const m = decodeMessage(b);
        if (!m.ok) throw m.error;
        return m.message;
      });
      if (JSON.stringify(got) !== JSON.stringify(want)) t.fail(`${f.name} split at ${cut}`);
    }
    // And one byte at a time.
    const d = new Deframer(9000);
    let n = 0;
    for (const b of f.wire) n += d.push(new Uint8Array([b])).length;
    t.equal(n, want.length, `${f.name} byte by byte`);
    t.equal(d.stats.corrupt + d.stats.oversize, 0, `${f.name}: nothing dropped`);
  }
});

t.test('corrupt and oversize frames are counted and dropped; the next frame still comes out', async (t) => {
  const good = fixtures[0]!.wire;
  const flipped = Uint8Array.from(good);
  flipped[5] = flipped[5]! ^ 0x10;
  const huge = encodeMessage({ kind: Kind.REQUEST, group: 1, command: 0, seq: 9, payload: { d: new Uint8Array(500).fill(7) } });
  const d = new Deframer(200);
  const out = d.push(Buffer.concat([flipped, huge, good]));
  t.equal(out.length, 1, 'only the good frame');
  t.equal(d.stats.corrupt, 1);
  t.equal(d.stats.oversize, 1);
  t.ok(d.stats.droppedBytes >= huge.length - 2);
});

t.test('a line with no delimiter never grows the buffer', async (t) => {
  const d = new Deframer(64);
  for (let i = 0; i < 1000; i++) t.equal(d.push(new Uint8Array(1024).fill(0x55)).length, 0);
  t.equal(d.stats.oversize, 1, 'one oversize frame, however long the line');
  t.equal(d.push(fixtures[2]!.wire).length, 1, 'resyncs on the next frame');
});

t.test('property: garbage between valid frames never loses a frame or crashes', async (t) => {
  const frameArb = fc.record({
    group: fc.integer({ min: 0, max: 255 }),
    command: fc.integer({ min: 0, max: 255 }),
    seq: fc.integer({ min: 0, max: 0xffff }),
    d: fc.uint8Array({ maxLength: 600 }),
  });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.uint8Array({ maxLength: 300 }), frameArb), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
      (items, cuts) => {
        const msgs = items.map(([, f]) => ({ kind: Kind.REQUEST, group: f.group, command: f.command, seq: f.seq, payload: { d: f.d } }));
        const stream = Buffer.concat(items.flatMap(([garbage], i) => [garbage, encodeMessage(msgs[i]!)]));
        const d = new Deframer(2048);
        const got: string[] = [];
        let at = 0;
        for (let i = 0; at < stream.length; i++) {
          const n = cuts[i % cuts.length]!;
          for (const b of d.push(stream.subarray(at, at + n))) got.push(hex(b));
          at += n;
        }
        // Garbage may by chance decode as a valid frame (CRC-32 collisions are 1 in 2^32); the
        // real frames must all be there, in order.
        const wantBodies = msgs.map((m) => {
          const out = new Deframer(2048).push(encodeMessage(m));
          return hex(out[0]!);
        });
        let k = 0;
        for (const g of got) if (g === wantBodies[k]) k++;
        return k === wantBodies.length;
      },
    ),
    { numRuns: 300 },
  );
  t.pass('300 random streams');
});
