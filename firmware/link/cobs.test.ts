// COBS codec against the published examples, round trips and malformed input.
import t from 'tap';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { cobsDecode, cobsEncode, cobsMaxEncodedLength } from './cobs.js';

const vectors = JSON.parse(readFileSync(new URL('../../fixtures/cobs.json', import.meta.url), 'utf8')) as {
  vectors: Array<{ name: string; decoded: string; encoded: string }>;
};

/** Fixture notation: hex, with "range:AA-BB" for the long runs of the published examples. */
function hex(s: string): Uint8Array {
  const parts = s.split(' ').map((p) => {
    const m = /^range:([0-9a-f]{2})-([0-9a-f]{2})$/.exec(p);
    if (!m) return Buffer.from(p, 'hex');
    const lo = parseInt(m[1]!, 16);
    const hi = parseInt(m[2]!, 16);
    return Buffer.from(Array.from({ length: hi - lo + 1 }, (_, i) => lo + i));
  });
  return new Uint8Array(Buffer.concat(parts));
}

t.test('published examples encode and decode exactly', async (t) => {
  t.equal(vectors.vectors.length, 11);
  for (const v of vectors.vectors) {
    const decoded = hex(v.decoded);
    const encoded = hex(v.encoded);
    t.same(Buffer.from(cobsEncode(decoded)).toString('hex'), Buffer.from(encoded).toString('hex'), `${v.name} encodes`);
    t.same(Buffer.from(cobsDecode(encoded)!).toString('hex'), Buffer.from(decoded).toString('hex'), `${v.name} decodes`);
  }
});

t.test('round trip, no zero in the output, overhead within bound', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (data) => {
      const enc = cobsEncode(data);
      return !enc.includes(0) && enc.length <= cobsMaxEncodedLength(data.length) && Buffer.from(cobsDecode(enc)!).equals(Buffer.from(data));
    }),
    { numRuns: 500 },
  );
  t.pass('500 random bodies');
});

t.test('malformed input is refused, never thrown', async (t) => {
  t.equal(cobsDecode(new Uint8Array([0x03, 0x11])), undefined, 'code runs past the end');
  t.equal(cobsDecode(new Uint8Array([0x03, 0x00, 0x11])), undefined, 'zero inside a block');
  t.equal(cobsDecode(new Uint8Array([0x00])), undefined, 'zero code');
  t.same(cobsDecode(new Uint8Array([])), new Uint8Array([]), 'empty is empty');
});
