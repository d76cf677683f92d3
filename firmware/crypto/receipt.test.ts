// Delivery receipts: round trip, node:crypto cross-check of the MAC, every field bound, wrong
// device key, stored encoding, malformed input.
import t from 'tap';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { decodeReceipt, encodeReceipt, encodeReceiptFields, makeReceipt, verifyReceipt } from './receipt.js';
import type { Receipt, ReceiptFields } from './receipt.js';
import { toHex } from '../../fixtures/crypto/load.js';

const rand = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const fields = (): ReceiptFields => ({ terminalId: 'T-0001', batchId: rand(16), seq: 12, bits: 8 * 4096, headerDigest: rand(32) });

t.test('make/verify round trip; MAC equals node:crypto HMAC under the documented key', async (t) => {
  for (let i = 0; i < 20; i++) {
    const dk = rand(32);
    const f = fields();
    const r = makeReceipt(dk, f);
    t.ok(verifyReceipt(dk, r));
    const key = hkdfSync('sha256', dk, Buffer.from('qkt device key v1'), Buffer.from('qkt/v1 receipt mac\0'), 32);
    t.equal(toHex(r.mac), createHmac('sha256', Buffer.from(key)).update(encodeReceiptFields(f)).digest('hex'));
  }
});

t.test('encoding layout', async (t) => {
  const f: ReceiptFields = { terminalId: 'ab', batchId: new Uint8Array(16).fill(0xb0), seq: 0x01020304, bits: 0x0800, headerDigest: new Uint8Array(32).fill(0xdd) };
  t.equal(
    toHex(encodeReceiptFields(f)),
    '514b545201' + 'b0'.repeat(16) + '01020304' + '00000800' + 'dd'.repeat(32) + '02' + '6162',
  );
});

t.test('every field is bound; wrong key and malformed receipts verify false', async (t) => {
  const dk = rand(32);
  const r = makeReceipt(dk, fields());
  const variants: Array<[string, Receipt]> = [
    ['terminalId', { ...r, terminalId: 'T-0002' }],
    ['batchId', { ...r, batchId: Uint8Array.from(r.batchId, (b, i) => (i === 0 ? b ^ 1 : b)) }],
    ['seq', { ...r, seq: r.seq + 1 }],
    ['bits', { ...r, bits: r.bits - 8 }],
    ['headerDigest', { ...r, headerDigest: Uint8Array.from(r.headerDigest, (b, i) => (i === 31 ? b ^ 0x80 : b)) }],
    ['mac', { ...r, mac: Uint8Array.from(r.mac, (b, i) => (i === 5 ? b ^ 1 : b)) }],
    ['short mac', { ...r, mac: r.mac.subarray(0, 16) }],
    ['bad terminal id', { ...r, terminalId: 'has space' }],
    ['seq out of range', { ...r, seq: -1 }],
  ];
  for (const [name, v] of variants) t.notOk(verifyReceipt(dk, v), name);
  t.notOk(verifyReceipt(rand(32), r), 'another device key');
  t.throws(() => verifyReceipt(rand(31), r), { name: 'RangeError', message: /deviceKey/ });
});

t.test('stored encoding round-trips; malformed bytes are CryptoFormatError', async (t) => {
  const dk = rand(32);
  const r = makeReceipt(dk, fields());
  const bytes = encodeReceipt(r);
  const back = decodeReceipt(bytes);
  t.same(back, r);
  t.ok(verifyReceipt(dk, back));
  t.throws(() => decodeReceipt(bytes.subarray(0, bytes.length - 1)), { name: 'CryptoFormatError' });
  t.throws(() => decodeReceipt(Uint8Array.from(bytes, (b, i) => (i === 0 ? 0 : b))), { name: 'CryptoFormatError' });
  t.throws(() => decodeReceipt(Uint8Array.from(bytes, (b, i) => (i === 4 ? 9 : b))), { name: 'CryptoFormatError' });
  t.throws(() => makeReceipt(dk, { ...fields(), headerDigest: rand(31) }), { name: 'RangeError', message: /headerDigest/ });
});

t.test('version 2: the live batch list is bound by the MAC, round-trips, and is bounded; version 1 still verifies', async (t) => {
  const dk = rand(32);
  const live = [rand(16), rand(16), rand(16)];
  const f: ReceiptFields = { ...fields(), live };
  const r = makeReceipt(dk, f);
  const bytes = encodeReceipt(r);
  t.equal(bytes[4], 2, 'version 2 when the live list is given');
  t.equal(bytes.length, 62 + 'T-0001'.length + 1 + 3 * 16 + 32, '95 + n + 16 k bytes');
  const back = decodeReceipt(bytes);
  t.same(back.live, live);
  t.ok(verifyReceipt(dk, back));
  // The layout: the terminal id, then k, then the ids, then the MAC.
  const at = 62 + 'T-0001'.length;
  t.equal(bytes[at], 3);
  t.equal(toHex(bytes.subarray(at + 1, at + 17)), toHex(live[0]!));
  for (const [name, v] of [
    ['a live id changed', { ...back, live: [live[0]!, Uint8Array.from(live[1]!, (b, i) => (i === 0 ? b ^ 1 : b)), live[2]!] }],
    ['a live id dropped', { ...back, live: live.slice(0, 2) }],
    ['the list removed (as version 1)', (({ live: _l, ...rest }) => rest)(back)],
  ] as Array<[string, Receipt]>) t.notOk(verifyReceipt(dk, v), name);
  // An empty list is version 2 too; no list at all is version 1.
  t.equal(encodeReceipt(makeReceipt(dk, { ...fields(), live: [] }))[4], 2);
  const v1 = encodeReceipt(makeReceipt(dk, fields()));
  t.equal(v1[4], 1);
  t.equal(decodeReceipt(v1).live, undefined);
  t.ok(verifyReceipt(dk, decodeReceipt(v1)), 'version 1 receipts (carriers from before) still verify');
  // Bounds: at most 32 ids of 16 bytes; a count that does not match the length is refused.
  t.throws(() => makeReceipt(dk, { ...fields(), live: Array.from({ length: 33 }, () => rand(16)) }), { name: 'RangeError' });
  t.throws(() => makeReceipt(dk, { ...fields(), live: [rand(15)] }), { name: 'RangeError', message: /live\[0\]/ });
  t.throws(() => decodeReceipt(Uint8Array.from(bytes, (b, i) => (i === at ? 4 : b))), { name: 'CryptoFormatError' });
  t.throws(() => decodeReceipt(Uint8Array.from(bytes, (b, i) => (i === at ? 33 : b))), { name: 'CryptoFormatError', message: /more than 32/ });
});
