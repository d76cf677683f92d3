// The AEAD suites against the standards' vectors (GB/T 32907, GB/T 32905, RFC 8439, the GCM spec)
// on both providers, node:crypto cross-checked against the reference on random inputs, the frozen
// service messages per suite, and tampering refused.
import t from 'tap';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { hex, loadJson, loadVectors, toHex } from '../../fixtures/crypto/load.js';
import { sm3, hmacSm3 } from './_sm3.js';
import { _SBOX_FOR_TESTS, sm4EncryptBlock, sm4KeySchedule } from './_sm4.js';
import { AEAD_SUITES, NODE_HAS, PROVIDERS, SessionCipher, deriveSm4SuiteKeys, nodeProvider, referenceProvider } from './suites.js';
import type { AeadSuite } from './suites.js';
import { decodeServiceHeader, encodeServiceHeader, sessionOpen, sessionSeal } from './service.js';

const rand = (n: number) => new Uint8Array(randomBytes(n));
const providers = Object.values(PROVIDERS);

t.test('this Node has every primitive in OpenSSL (else the bench compares reference code)', async (t) => {
  t.same(NODE_HAS, { 'aes-256-gcm': true, 'chacha20-poly1305': true, 'sm4-ctr': true, sm3: true });
});

t.test('SM4: GB/T 32907-2016 Appendix A, the reference and OpenSSL', async (t) => {
  const f = loadJson<{ sboxFirstRow: string; vectors: Array<{ name: string; key: string; plaintext: string; iterations: number; ciphertext: string }> }>('sm4.json');
  t.equal(toHex(_SBOX_FOR_TESTS.subarray(0, 16)), f.sboxFirstRow, 'S-box built from its algebraic form matches the standard\'s first row');
  for (const v of f.vectors) {
    const rk = sm4KeySchedule(hex(v.key));
    const b = hex(v.plaintext);
    for (let i = 0; i < v.iterations; i++) sm4EncryptBlock(rk, b, b);
    t.equal(toHex(b), v.ciphertext, `reference: ${v.name}`);
    const c = createCipheriv('sm4-ecb', hex(v.key), null).setAutoPadding(false);
    let n: Buffer = Buffer.from(hex(v.plaintext));
    for (let i = 0; i < v.iterations; i++) n = c.update(n);
    t.equal(n.toString('hex'), v.ciphertext, `OpenSSL: ${v.name}`);
  }
});

t.test('SM3: GB/T 32905-2016 Appendix A; HMAC-SM3 cross-checked vectors on both providers', async (t) => {
  for (const v of loadVectors<{ message: string; digest: string }>('sm3').vectors) {
    t.equal(toHex(sm3(hex(v.message))), v.digest, `reference: ${v.name}`);
    t.equal(createHash('sm3').update(hex(v.message)).digest('hex'), v.digest, `OpenSSL: ${v.name}`);
  }
  for (const v of loadVectors<{ key: string; data: string; mac: string }>('hmac-sm3').vectors) {
    for (const p of providers) t.equal(toHex(p.hmacSm3(hex(v.key), hex(v.data))), v.mac, `${p.name}: ${v.name}`);
  }
});

t.test('ChaCha20-Poly1305 (RFC 8439 §2.8.2) and AES-256-GCM (GCM spec) on both providers', async (t) => {
  type V = { name: string; key: string; nonce?: string; iv?: string; aad: string; plaintext: string; ciphertext: string; tag: string };
  const cases: Array<['aes-256-gcm' | 'chacha20-poly1305', V]> = [
    ...loadVectors<V>('chacha20-poly1305').vectors.map((v): ['chacha20-poly1305', V] => ['chacha20-poly1305', v]),
    ...loadVectors<V>('aes-256-gcm').vectors.map((v): ['aes-256-gcm', V] => ['aes-256-gcm', v]),
  ];
  for (const [alg, v] of cases) {
    const nonce = hex(v.nonce ?? v.iv!);
    for (const p of providers) {
      const sealed = p.aeadSeal(alg, hex(v.key), nonce, hex(v.plaintext), hex(v.aad));
      t.equal(toHex(sealed), v.ciphertext + v.tag, `${p.name} seals ${v.name}`);
      t.equal(toHex(p.aeadOpen(alg, hex(v.key), nonce, sealed, hex(v.aad))!), v.plaintext, `${p.name} opens ${v.name}`);
      const bad = Uint8Array.from(sealed);
      bad[bad.length - 1]! ^= 0x80;
      t.equal(p.aeadOpen(alg, hex(v.key), nonce, bad, hex(v.aad)), undefined, `${p.name} refuses a flipped tag bit`);
    }
  }
});

t.test('node:crypto and the reference agree on random inputs, every suite, and open each other', async (t) => {
  for (const suite of AEAD_SUITES) {
    for (let i = 0; i < 60; i++) {
      const key = rand(32);
      const nonce = rand(12);
      const pt = rand(i === 0 ? 0 : Math.floor(Math.random() * 600));
      const aad = rand(Math.floor(Math.random() * 80));
      const n = new SessionCipher(suite, key, nodeProvider);
      const r = new SessionCipher(suite, key, referenceProvider);
      const a = n.seal(nonce, pt, aad);
      const b = r.seal(nonce, pt, aad);
      if (toHex(a) !== toHex(b)) t.fail(`${suite}: providers differ on case ${i}`);
      if (toHex(r.open(nonce, a, aad)!) !== toHex(pt) || toHex(n.open(nonce, b, aad)!) !== toHex(pt)) t.fail(`${suite}: cross-open failed on case ${i}`);
    }
    t.pass(`${suite}: 60 random cases agree`);
  }
  const k = rand(32);
  t.same(deriveSm4SuiteKeys(k, nodeProvider), deriveSm4SuiteKeys(k, referenceProvider), 'the SM4 suite key derivation agrees');
});

interface Frozen {
  sessionKey: string;
  batchId: string;
  bitOffset: number;
  plaintext: string;
  sm4Suite: { encKey: string; macKey: string };
  messages: Array<{ suite: AeadSuite; direction: 'up' | 'down'; counter: number; header: string; message: string }>;
}

t.test('frozen service messages (fixtures/crypto/service-suites.json): exact bytes per suite, both providers', async (t) => {
  const f = loadJson<Frozen>('service-suites.json');
  for (const p of providers) {
    const d = deriveSm4SuiteKeys(hex(f.sessionKey), p);
    t.same([toHex(d.enc16), toHex(d.mac32)], [f.sm4Suite.encKey, f.sm4Suite.macKey], `${p.name}: SM4 suite keys (HKDF-SM3, documented labels)`);
  }
  t.same(new Set(f.messages.map((m) => m.suite)), new Set(AEAD_SUITES), 'a message per suite');
  for (const m of f.messages) {
    const suite = m.suite === 'aes-256-gcm' ? {} : { suite: m.suite };
    const head = encodeServiceHeader({ mode: 'aead', ...suite, keyIds: [{ batchId: hex(f.batchId), bitOffset: f.bitOffset, bits: 256 }], counter: m.counter });
    t.equal(toHex(head), m.header, `${m.suite} ${m.direction}: header`);
    const { header, length } = decodeServiceHeader(hex(m.message));
    t.equal(header.suite, m.suite === 'aes-256-gcm' ? undefined : m.suite, `${m.suite}: the header names its suite (GCM by omission)`);
    for (const p of providers) {
      const sealed = sessionSeal(hex(f.sessionKey), m.counter, hex(f.plaintext), head, m.direction, m.suite, p);
      t.equal(toHex(head) + toHex(sealed), m.message, `${p.name} ${m.suite} ${m.direction}: exact message`);
      t.equal(toHex(sessionOpen(hex(f.sessionKey), m.counter, hex(m.message).subarray(length), hex(m.message).subarray(0, length), m.direction, m.suite, p)), f.plaintext);
    }
  }
});

t.test('every suite refuses tampering: ciphertext, tag, aad, counter, direction, key, suite', async (t) => {
  for (const suite of AEAD_SUITES) {
    for (const p of providers) {
      const key = rand(32);
      const aad = rand(31);
      const pt = rand(100);
      const sealed = sessionSeal(key, 3, pt, aad, 'up', suite, p);
      const open = (s: Uint8Array, o: { counter?: number; aad?: Uint8Array; direction?: 'up' | 'down'; key?: Uint8Array; suite?: AeadSuite } = {}) =>
        sessionOpen(o.key ?? key, o.counter ?? 3, s, o.aad ?? aad, o.direction ?? 'up', o.suite ?? suite, p);
      t.same(open(sealed), pt, `${suite}/${p.name}: round trip`);
      const flip = (i: number) => Uint8Array.from(sealed, (b, j) => (j === i ? b ^ 1 : b));
      const name = { name: 'ServiceAuthError' };
      t.throws(() => open(flip(0)), name, `${suite}/${p.name}: ciphertext bit`);
      t.throws(() => open(flip(sealed.length - 1)), name, `${suite}/${p.name}: tag bit`);
      t.throws(() => open(sealed.subarray(0, sealed.length - 1)), name, `${suite}/${p.name}: truncated`);
      t.throws(() => open(sealed, { aad: Uint8Array.from(aad, (b, j) => (j === 1 ? b ^ 4 : b)) }), name, `${suite}/${p.name}: aad bit (the service header)`);
      t.throws(() => open(sealed, { counter: 4 }), name, `${suite}/${p.name}: other counter`);
      t.throws(() => open(sealed, { direction: 'down' }), name, `${suite}/${p.name}: reflected to the other direction`);
      t.throws(() => open(sealed, { key: rand(32) }), name, `${suite}/${p.name}: other key`);
      for (const other of AEAD_SUITES.filter((x) => x !== suite)) t.throws(() => open(sealed, { suite: other }), name, `${suite}/${p.name}: opened as ${other}`);
    }
  }
});

t.test('SessionCipher: validates at its entry, refuses use after wipe', async (t) => {
  t.throws(() => new SessionCipher('sm4-cbc' as AeadSuite, rand(32)), { name: 'RangeError', message: /suite must be one of/ });
  t.throws(() => new SessionCipher('sm4-ctr-hmac-sm3', rand(16)), { name: 'RangeError', message: /sessionKey32 must be 32 bytes/ });
  const c = new SessionCipher('sm4-ctr-hmac-sm3', rand(32));
  t.throws(() => c.seal(rand(8), rand(1), rand(1)), { name: 'RangeError', message: /nonce12/ });
  c.wipe();
  t.throws(() => c.seal(rand(12), rand(1), rand(1)), { message: /wiped/ });
  const key = rand(32);
  const copy = Uint8Array.from(key);
  new SessionCipher('aes-256-gcm', key).wipe();
  t.same(key, copy, "the caller's key is the caller's to wipe: the cipher wiped its own copy only");
});
