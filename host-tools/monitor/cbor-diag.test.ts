// CBOR diagnostic notation for the monitor (cbor-diag.ts): RFC 8949 examples, elided byte strings,
// length-only where key material may be, huge and negative integers, and invalid CBOR as an error.
import t from 'tap';
import { cborDiag } from './cbor-diag.js';
import { encodePayload } from '../../firmware/link/codec.js';

const diag = (hex: string, o = {}) => cborDiag(Buffer.from(hex, 'hex'), o);

t.test('RFC 8949 appendix A examples', async (t) => {
  const cases: [string, string][] = [
    ['00', '0'],
    ['17', '23'],
    ['1818', '24'],
    ['1903e8', '1000'],
    ['1a000f4240', '1000000'],
    ['1b000000e8d4a51000', '1000000000000'],
    ['1bffffffffffffffff', '18446744073709551615'],
    ['3bffffffffffffffff', '-18446744073709551616'],
    ['20', '-1'],
    ['3903e7', '-1000'],
    ['f90000', '0.0_1'],
    ['f93c00', '1.0_1'],
    ['f97e00', 'NaN_1'],
    ['fb3ff199999999999a', '1.1_3'],
    ['f4', 'false'],
    ['f5', 'true'],
    ['f6', 'null'],
    ['f7', 'undefined'],
    ['f0', 'simple(16)'],
    ['f8ff', 'simple(255)'],
    ['c11a514b67b0', '1(1363896240)'],
    ['40', "h''"],
    ['4401020304', "h'01020304'"],
    ['60', '""'],
    ['6449455446', '"IETF"'],
    ['62225c', '"\\"\\\\"'],
    ['80', '[]'],
    ['83010203', '[1, 2, 3]'],
    ['8301820203820405', '[1, [2, 3], [4, 5]]'],
    ['a0', '{}'],
    ['a201020304', '{1: 2, 3: 4}'],
    ['a26161016162820203', '{"a": 1, "b": [2, 3]}'],
    ['5f42010243030405ff', "(_ h'0102', h'030405')"],
    ['9f018202039f0405ffff', '[_ 1, [2, 3], [_ 4, 5]]'],
    ['bf61610161629f0203ffff', '{_ "a": 1, "b": [_ 2, 3]}'],
    ['9fff', '[_ ]'],
  ];
  for (const [hex, want] of cases) t.same(diag(hex), { text: want }, hex);
});

t.test('nested maps from the codec read back', async (t) => {
  const bytes = encodePayload({ g: 1, rc: 12, r: 'expected offset 4096', d: { committed: 4096, deep: { x: [true, null, -5] } } });
  t.same(cborDiag(bytes), { text: '{"g": 1, "rc": 12, "r": "expected offset 4096", "d": {"committed": 4096, "deep": {"x": [true, null, -5]}}}' });
  t.same(cborDiag(encodePayload({ big: 2n ** 63n, neg: -(2n ** 40n) })), { text: '{"big": 9223372036854775808, "neg": -1099511627776}' });
});

t.test('long byte strings are elided; lengthOnly shows no byte at all', async (t) => {
  const long = encodePayload({ d: new Uint8Array(4096).fill(0xab) });
  t.same(cborDiag(long), { text: `{"d": h'abababab..'(4096 bytes)}` });
  const sixteen = encodePayload({ d: new Uint8Array(16).fill(1) });
  t.same(cborDiag(sixteen), { text: `{"d": h'${'01'.repeat(16)}'}` }, 'up to 16 bytes are shown whole');
  const key = encodePayload({ h: Uint8Array.from({ length: 61 }, (_, i) => i + 0x40), small: Uint8Array.of(7) });
  const d = cborDiag(key, { lengthOnly: true });
  t.same(d, { text: `{"h": h'..'(61 bytes), "small": h'..'(1 bytes)}` });
  t.notMatch(d.text, /40414243|07/, 'no byte of the strings appears');
});

t.test('invalid CBOR gives the text so far and the error, never a throw', async (t) => {
  t.match(diag(''), { text: '', error: /no bytes/ });
  t.match(diag('a2616101'), { text: '{"a": 1, ', error: /invalid CBOR at byte 4: unexpected end/ });
  t.match(diag('5a00010000'), { error: /length 65536 runs past the end/ }, 'a length beyond the input');
  t.match(diag('1bffffffffffffffff00'), { text: '18446744073709551615', error: /1 bytes after the CBOR item/ });
  t.match(diag('1c'), { error: /reserved additional information 28/ });
  t.match(diag('ff'), { error: /break code outside/ });
  t.match(diag('1f'), { error: /indefinite length/ });
  t.match(diag('5f4101'), { error: /unexpected end/ });
  t.match(diag('5f6161ff'), { error: /chunk of an indefinite string/ });
  const deep = Buffer.concat([Buffer.alloc(100, 0x81), Buffer.of(0)]);
  t.match(cborDiag(deep), { error: /nested deeper than 32 levels/ });
  const bombs = Buffer.from('9b7fffffffffffffff', 'hex');
  t.match(cborDiag(bombs), { error: /runs past the end/ }, 'a huge count is refused before any loop');
});

t.test('the output is cut at maxChars', async (t) => {
  const many = encodePayload({ list: Array.from({ length: 2000 }, (_, i) => i) });
  const d = cborDiag(many, { maxChars: 100 });
  t.equal(d.error, undefined);
  t.ok(d.text.length <= 104 && d.text.endsWith(' ...'), d.text);
  const text = encodePayload({ s: 'x'.repeat(500) });
  t.match(cborDiag(text, { maxText: 10 }).text, /^\{"s": "xxxxxxxxxx"\.\.\(500 bytes\)\}$/);
});
