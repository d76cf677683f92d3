// Service-data crypto: OTP seal/open and its one-time MAC (RFC 8439 vectors, tampering), AEAD
// session cross-checked against node:crypto, direction separation, rekey limits, message header.
import t from 'tap';
import { createCipheriv, randomBytes } from 'node:crypto';
import { poly1305 } from '@noble/ciphers/_poly1305.js';
import {
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_MS,
  SessionKeyState,
  decodeServiceHeader,
  encodeServiceHeader,
  keyBits,
  otpKeyBytes,
  otpOpen,
  otpSeal,
  sessionNonce,
  sessionOpen,
  sessionSeal,
  splitOtpKey,
} from './service.js';
import type { ServiceHeader } from './service.js';
import { hex, loadVectors, toHex } from '../../fixtures/crypto/load.js';

const rand = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

t.test('Poly1305 (the OTP authenticator) against RFC 8439 vectors', async (t) => {
  const f = loadVectors<{ key: string; message: string; tag: string }>('poly1305');
  for (const v of f.vectors) t.equal(toHex(poly1305(hex(v.message), hex(v.key))), v.tag, v.name);
});

t.test('OTP: round trip, ciphertext is plaintext XOR pad, key accounting', async (t) => {
  for (const n of [0, 1, 15, 16, 17, 1000]) {
    const material = rand(otpKeyBytes(n));
    const { macKey32, keyStream } = splitOtpKey(material);
    const pt = rand(n);
    const aad = rand(n % 7);
    const sealed = otpSeal(keyStream, pt, macKey32, aad);
    t.equal(sealed.length, n + 16);
    t.equal(toHex(sealed.subarray(0, n)), toHex(Uint8Array.from(pt, (b, i) => b ^ keyStream[i]!)));
    // Tag = Poly1305 over aad|pad16|ct|pad16|le64(len aad)|le64(len ct) (RFC 8439 §2.8 layout).
    const pad = (k: number) => Buffer.alloc((16 - (k % 16)) % 16);
    const lens = Buffer.alloc(16);
    lens.writeBigUInt64LE(BigInt(aad.length), 0);
    lens.writeBigUInt64LE(BigInt(n), 8);
    const macInput = Buffer.concat([aad, pad(aad.length), sealed.subarray(0, n), pad(n), lens]);
    t.equal(toHex(sealed.subarray(n)), toHex(poly1305(macInput, macKey32)));
    t.equal(toHex(otpOpen(keyStream, sealed, macKey32, aad)), toHex(pt));
  }
  t.equal(otpKeyBytes(100), 132);
});

t.test('OTP: any flipped bit, wrong aad or wrong MAC key is refused before decrypting', async (t) => {
  const { macKey32, keyStream } = splitOtpKey(rand(32 + 40));
  const aad = rand(11);
  const sealed = otpSeal(keyStream, rand(40), macKey32, aad);
  for (let i = 0; i < sealed.length; i++) {
    const bad = sealed.slice();
    bad[i]! ^= 1 << i % 8;
    t.throws(() => otpOpen(keyStream, bad, macKey32, aad), { name: 'ServiceAuthError' }, `byte ${i}`);
  }
  t.throws(() => otpOpen(keyStream, sealed, macKey32, aad.subarray(1)), { name: 'ServiceAuthError' });
  t.throws(() => otpOpen(keyStream, sealed, rand(32), aad), { name: 'ServiceAuthError' });
  t.throws(() => otpOpen(keyStream, sealed.subarray(0, 10), macKey32, aad), { name: 'ServiceAuthError' });
  t.throws(() => otpSeal(keyStream.subarray(1), rand(40), macKey32), { name: 'RangeError', message: /keyStream must be 40 bytes/ });
  t.throws(() => otpSeal(keyStream, rand(40), rand(16)), { name: 'RangeError', message: /macKey32/ });
  t.throws(() => otpOpen(keyStream, sealed.subarray(0, 55), macKey32), { name: 'RangeError', message: /keyStream/ });
});

t.test('AEAD session: node:crypto agrees on the documented nonce; directions never share a nonce', async (t) => {
  for (const direction of ['up', 'down'] as const) {
    for (const counter of [0, 1, 65535, 2 ** 32 - 1]) {
      const key = rand(32);
      const pt = rand(100);
      const aad = rand(20);
      const sealed = sessionSeal(key, counter, pt, aad, direction);
      const nonce = Buffer.alloc(12);
      nonce.writeUInt32BE(direction === 'up' ? 1 : 2, 0);
      nonce.writeBigUInt64BE(BigInt(counter), 4);
      t.equal(toHex(sessionNonce(direction, counter)), nonce.toString('hex'));
      const c = createCipheriv('aes-256-gcm', key, nonce);
      c.setAAD(aad);
      const expect = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
      t.equal(toHex(sealed), expect.toString('hex'), `${direction} #${counter}`);
      t.equal(toHex(sessionOpen(key, counter, sealed, aad, direction)), toHex(pt));
    }
  }
  const key = rand(32);
  const sealed = sessionSeal(key, 7, rand(10), new Uint8Array(0), 'up');
  t.throws(() => sessionOpen(key, 7, sealed, new Uint8Array(0), 'down'), { name: 'ServiceAuthError' }, 'other direction');
  t.throws(() => sessionOpen(key, 8, sealed, new Uint8Array(0), 'up'), { name: 'ServiceAuthError' }, 'other counter');
  t.throws(() => sessionOpen(key, 7, sealed, new Uint8Array(1), 'up'), { name: 'ServiceAuthError' }, 'other aad');
  t.throws(() => sessionOpen(key, 7, sealed.subarray(0, 5), new Uint8Array(0), 'up'), { name: 'ServiceAuthError' }, 'short');
  t.throws(() => sessionSeal(key, 2 ** 32, rand(1), new Uint8Array(0), 'up'), { name: 'RangeError', message: /counter/ });
  t.throws(() => sessionSeal(rand(16), 0, rand(1), new Uint8Array(0), 'up'), { name: 'RangeError', message: /sessionKey32/ });
  t.throws(() => sessionSeal(key, 0, rand(1), new Uint8Array(0), 'left' as 'up'), { name: 'RangeError', message: /direction/ });
});

t.test('SessionKeyState: rekey by count and by age; receiver refuses replays', async (t) => {
  t.equal(REKEY_AFTER_MESSAGES, 65536);
  t.equal(REKEY_AFTER_MS, 3_600_000);
  const s = new SessionKeyState(1000, { maxMessages: 3, maxAgeMs: 500 });
  t.equal(s.nextCounter(1000), 0);
  t.equal(s.nextCounter(1100), 1);
  t.notOk(s.needsRekey(1100));
  t.equal(s.nextCounter(1200), 2);
  t.ok(s.needsRekey(1200), 'spent by count');
  t.throws(() => s.nextCounter(1200), RangeError);
  const a = new SessionKeyState(0);
  t.notOk(a.needsRekey(REKEY_AFTER_MS - 1));
  t.ok(a.needsRekey(REKEY_AFTER_MS), 'spent by age');
  t.throws(() => a.nextCounter(REKEY_AFTER_MS), RangeError);
  const r = new SessionKeyState(0);
  t.ok(r.accept(0, 1));
  t.ok(r.accept(5, 1));
  t.notOk(r.accept(5, 1), 'replay');
  t.notOk(r.accept(3, 1), 'older');
  t.notOk(r.accept(REKEY_AFTER_MESSAGES, 1), 'beyond the message limit');
  t.notOk(r.accept(6, REKEY_AFTER_MS), 'expired key');
});

t.test('service header: exact bytes, round trip, validation, malformed input', async (t) => {
  const batchId = hex('b0b1b2b3b4b5b6b7b8b9babbbcbdbebf');
  const h: ServiceHeader = { mode: 'otp', counter: 9, keyIds: [{ batchId, bitOffset: 1024, bits: 8 * 64 }] };
  const bytes = encodeServiceHeader(h);
  t.equal(toHex(bytes), '01' + '01' + '00000009' + '01' + toHex(batchId) + '00000400' + '00000200');
  t.same(decodeServiceHeader(Buffer.concat([bytes, Buffer.from('payload')])), { header: h, length: 31 });
  const aead: ServiceHeader = {
    mode: 'aead',
    counter: 0,
    keyIds: [
      { batchId, bitOffset: 0, bits: 128 },
      { batchId: rand(16), bitOffset: 8, bits: 128 },
    ],
  };
  t.equal(keyBits(aead.keyIds), 256);
  t.same(decodeServiceHeader(encodeServiceHeader(aead)).header, aead);
  t.throws(() => encodeServiceHeader({ ...aead, keyIds: aead.keyIds.slice(0, 1) }), { name: 'RangeError', message: /256 bits/ });
  t.throws(() => encodeServiceHeader({ ...h, keyIds: [{ batchId, bitOffset: 3, bits: 8 * 64 }] }), { name: 'RangeError', message: /byte-aligned/ });
  t.throws(() => encodeServiceHeader({ ...h, keyIds: [{ batchId, bitOffset: 0, bits: 8 }] }), { name: 'RangeError', message: /at least 256/ });
  t.throws(() => encodeServiceHeader({ ...h, keyIds: [] }), { name: 'RangeError', message: /keyIds/ });
  t.throws(() => encodeServiceHeader({ ...h, mode: 'xor' as 'otp' }), { name: 'RangeError', message: /header\.mode/ });
  // The suite rides in the mode byte: GCM keeps code 2 (the bytes of every older message), the others 3 and 4.
  const one = { ...aead, keyIds: [{ batchId, bitOffset: 0, bits: 256 }] };
  t.equal(encodeServiceHeader(one)[1], 2);
  t.equal(toHex(encodeServiceHeader({ ...one, suite: 'aes-256-gcm' })), toHex(encodeServiceHeader(one)), 'naming the default suite changes no byte');
  t.equal(encodeServiceHeader({ ...one, suite: 'chacha20-poly1305' })[1], 3);
  t.equal(encodeServiceHeader({ ...one, suite: 'sm4-ctr-hmac-sm3' })[1], 4);
  t.same(decodeServiceHeader(encodeServiceHeader({ ...one, suite: 'sm4-ctr-hmac-sm3' })).header, { ...one, suite: 'sm4-ctr-hmac-sm3' });
  t.throws(() => encodeServiceHeader({ ...h, suite: 'sm4-ctr-hmac-sm3' }), { name: 'RangeError', message: /aead mode only/ });
  t.throws(() => encodeServiceHeader({ ...one, suite: 'rc4' as 'aes-256-gcm' }), { name: 'RangeError', message: /header\.suite/ });
  t.throws(() => decodeServiceHeader(bytes.subarray(0, 20)), { name: 'CryptoFormatError' });
  t.throws(() => decodeServiceHeader(Uint8Array.from(bytes, (b, i) => (i === 0 ? 2 : b))), { name: 'CryptoFormatError' });
  // Codes 1..4 are otp and the three AEAD suites (suites.test.ts); 0 and 5..255 are unknown.
  for (const code of [0, 5, 255]) t.throws(() => decodeServiceHeader(Uint8Array.from(bytes, (b, i) => (i === 1 ? code : b))), { name: 'CryptoFormatError', message: /mode code/ });
  t.throws(() => decodeServiceHeader(Uint8Array.from(bytes, (b, i) => (i === 6 ? 0 : b))), { name: 'CryptoFormatError' });
  t.throws(() => decodeServiceHeader(Uint8Array.from(bytes, (b, i) => (i === 30 ? 1 : b))), { name: 'CryptoFormatError' }, 'bits not /8');
});

t.test('a whole OTP message: header as AAD, keys named by the header', async (t) => {
  const pool = rand(1024); // one batch's key material, as the pool would serve it
  const batchId = rand(16);
  const pt = new TextEncoder().encode('feeder 12 breaker open');
  const need = otpKeyBytes(pt.length);
  const header = encodeServiceHeader({ mode: 'otp', counter: 1, keyIds: [{ batchId, bitOffset: 8 * 100, bits: 8 * need }] });
  const { macKey32, keyStream } = splitOtpKey(pool.subarray(100, 100 + need));
  const msg = Buffer.concat([header, otpSeal(keyStream, pt, macKey32, header)]);
  // Station side: parse the header, fetch the same key range, verify, decrypt.
  const { header: h, length } = decodeServiceHeader(msg);
  const r = h.keyIds[0]!;
  const k = splitOtpKey(pool.subarray(r.bitOffset / 8, (r.bitOffset + r.bits) / 8));
  t.equal(Buffer.from(otpOpen(k.keyStream, msg.subarray(length), k.macKey32, msg.subarray(0, length))).toString(), 'feeder 12 breaker open');
});
