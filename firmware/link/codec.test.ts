// CBOR integers in the message codec (docs/protocol.md 3.1): integers of 2^32 and above go out as
// integers with an 8-byte argument, never as floats; every integer encoding is read back as the
// value it encodes; values beyond 2^53 - 1 keep their precision (BigInt) and the field readers
// refuse them with BAD_REQUEST. The same over a live link: hil/module/link/codec-link.test.ts.
import t from 'tap';
import fc from 'fast-check';
import { decodeMessage, encodePayload } from './codec.js';
import type { Payload } from './codec.js';
import { optionalUint, uint } from './fields.js';
import { LinkError, Rc } from './errors.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** The encoding of `x` alone: the payload {v: x} less its `a1 61 76` prefix. */
const item = (x: unknown) => {
  const b = encodePayload({ v: x });
  if (hex(b.subarray(0, 3)) !== 'a16176') throw new Error(`unexpected prefix ${hex(b)}`);
  return hex(b.subarray(3));
};
/** Decode a request whose payload is `{"v": <itemHex>}`, the item given as hex. */
function decodeV(itemHex: string): unknown {
  const d = decodeMessage(Buffer.from(`010001000007a16176${itemHex}`, 'hex'));
  if (!d.ok) throw d.error;
  return d.message.payload['v'];
}

t.test('integers of 2^32 and above go out as integers with an 8-byte argument, never floats', async (t) => {
  t.equal(item(2 ** 32), '1b0000000100000000', '2^32');
  t.equal(item(2 ** 53 - 1), '1b001fffffffffffff', '2^53 - 1');
  t.equal(item(-(2 ** 32) - 1), '3b0000000100000000', '-2^32 - 1');
  t.equal(item(-(2 ** 53) + 1), '3b001ffffffffffffe', '-(2^53 - 1)');
  t.equal(item(1_764_000_000_000), '1b0000019ab697e800', 'a timestamp in ms');
  // Shortest heads below 2^32, as before (what the fixtures freeze).
  t.equal(item(2 ** 32 - 1), '1affffffff', '2^32 - 1');
  t.equal(item(-(2 ** 32)), '3affffffff', '-2^32');
  t.equal(item(65536), '1a00010000');
  t.equal(item(23), '17');
  t.equal(item(-24), '37');
  // BigInts get the shortest head too (cbor-x alone writes every BigInt with 8 bytes).
  t.equal(item(5n), '05', '5n');
  t.equal(item(-5n), '24', '-5n');
  t.equal(item(2n ** 32n), '1b0000000100000000', '2n^32');
  t.equal(item(2n ** 64n - 1n), '1bffffffffffffffff', '2n^64 - 1');
  t.equal(item(-(2n ** 64n) + 1n), '3bfffffffffffffffe', '-(2n^64 - 1)');
  // Inside arrays and nested maps, as in AUDIT_LOG's events.
  t.equal(
    hex(encodePayload({ events: [{ n: 1, at: 2 ** 40 }] })),
    '' + 'a1' + '666576656e7473' + '81' + 'a2' + '616e' + '01' + '626174' + '1b0000010000000000',
  );
});

t.test('encoding does not touch the caller payload; integers without a CBOR encoding throw', async (t) => {
  const p = { at: 2 ** 40, list: [2 ** 33, 'x'], nested: { big: 7n } };
  encodePayload(p);
  t.same(p, { at: 2 ** 40, list: [2 ** 33, 'x'], nested: { big: 7n } });
  t.equal(typeof p.at, 'number');
  t.equal(typeof p.nested.big, 'bigint');
  t.throws(() => encodePayload({ v: 2 ** 64 }), RangeError);
  t.throws(() => encodePayload({ v: -(2 ** 64) }), RangeError);
  t.throws(() => encodePayload({ v: 2n ** 64n }), RangeError);
  t.throws(() => encodePayload({ v: [1e300] }), RangeError);
  // Numbers that are not integers are no integers: left as they were (v1 defines none).
  t.equal(item(1.5), 'fb3ff8000000000000');
});

t.test('decode: every head width, shortest or not, gives the value it encodes', async (t) => {
  const cases: Array<[string, number]> = [
    // 5 in every width (0x1b0000000000000005 is 5, not a BigInt)
    ['05', 5], ['1805', 5], ['190005', 5], ['1a00000005', 5], ['1b0000000000000005', 5],
    // -5 in every width
    ['24', -5], ['3804', -5], ['390004', -5], ['3a00000004', -5], ['3b0000000000000004', -5],
    // the largest value of each width
    ['17', 23], ['18ff', 255], ['19ffff', 65535], ['1affffffff', 2 ** 32 - 1], ['1b001fffffffffffff', 2 ** 53 - 1],
    ['37', -24], ['38ff', -256], ['39ffff', -65536], ['3affffffff', -(2 ** 32)], ['3b001ffffffffffffe', -(2 ** 53) + 1],
    // 8-byte arguments just above 4 bytes
    ['1b0000000100000000', 2 ** 32], ['3b0000000100000000', -(2 ** 32) - 1],
    // zero, at any width
    ['00', 0], ['1800', 0], ['1b0000000000000000', 0],
  ];
  for (const [h, want] of cases) t.equal(decodeV(h), want, h);
  t.same(decodeV('821b00000000000000071b0000000100000000'), [7, 2 ** 32], 'in an array');
  t.same(decodeV('a161781b0000000000000008'), { x: 8 }, 'in a nested map');
  t.equal(decodeV('c24105'), 5, 'a tag 2 bignum that fits is the integer too');
});

t.test('decode: beyond 2^53 - 1 stays an exact BigInt, and the field readers refuse it', async (t) => {
  t.equal(decodeV('1b0020000000000000'), 2n ** 53n);
  t.equal(decodeV('1b0020000000000001'), 2n ** 53n + 1n);
  t.equal(decodeV('1bffffffffffffffff'), 2n ** 64n - 1n);
  t.equal(decodeV('3b0020000000000000'), -(2n ** 53n) - 1n);
  t.equal(decodeV('3bffffffffffffffff'), -(2n ** 64n));
  const reason = 'field "v" must be an unsigned integer <= 9007199254740991';
  for (const h of ['1b0020000000000001', '1bffffffffffffffff', '3b0020000000000000']) {
    const p = { v: decodeV(h) } as Payload;
    t.throws(() => uint(p, 'v'), new LinkError(Rc.BAD_REQUEST, reason), h);
    t.throws(() => optionalUint(p, 'v'), { name: 'LinkError', rc: Rc.BAD_REQUEST, reason }, h);
  }
  t.equal(uint({ v: decodeV('1b001fffffffffffff') }, 'v'), 2 ** 53 - 1, '2^53 - 1 passes');
});

t.test('decode: floats where an integer is expected are what they were', async (t) => {
  t.equal(uint({ v: decodeV('fb4014000000000000') }, 'v'), 5, 'an integral float64 is taken (liberal, section 10)');
  t.throws(() => uint({ v: decodeV('fb3ff8000000000000') }, 'v'), { name: 'LinkError', rc: Rc.BAD_REQUEST }, '1.5');
  t.throws(() => uint({ v: decodeV('fb43b0000000000000') }, 'v'), { name: 'LinkError', rc: Rc.BAD_REQUEST }, '2^60 as a float');
});

t.test('decode: shared values are visited once, a cycle does not hang', async (t) => {
  // Tag 28 (shareable) / 29 (sharedref): each level is [level below, level below], 60 deep.
  const depth = 60;
  const level = (k: number): string =>
    k === depth ? 'd81c811b0000000000000009' : `d81c82${level(k + 1)}d81d18${(k + 1).toString(16).padStart(2, '0')}`;
  let v = decodeV(level(0));
  for (let k = 0; k < depth; k++) v = (v as unknown[])[1];
  t.same(v, [9]);
  const self = decodeV('d81c821b0000000000000004d81d00') as unknown[];
  t.equal(self[0], 4);
  t.equal(self[1], self, 'an array that holds itself');
});

t.test('property: every safe integer round-trips exactly, never as a float, in the shortest head', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.maxSafeInteger(), fc.integer()), (x) => {
      const h = item(x);
      const head = parseInt(h.slice(0, 2), 16);
      const arg = x < 0 ? -1 - x : x;
      const width = arg < 24 ? 0 : arg < 2 ** 8 ? 1 : arg < 2 ** 16 ? 2 : arg < 2 ** 32 ? 4 : 8;
      return head >> 5 === (x < 0 ? 1 : 0) && h.length === 2 + 2 * width && decodeV(h) === x;
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.bigInt({ min: -(2n ** 64n) + 1n, max: 2n ** 64n - 1n }), (x) => {
      const h = item(x);
      const safe = x >= -BigInt(Number.MAX_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER);
      return parseInt(h.slice(0, 2), 16) >> 5 === (x < 0n ? 1 : 0) && decodeV(h) === (safe ? Number(x) : x);
    }),
    { numRuns: 1000 },
  );
});
