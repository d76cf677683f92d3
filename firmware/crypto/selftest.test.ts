// Power-on self-tests: all pass; each injected fault fails exactly its test; the embedded vectors
// are the published ones in fixtures/crypto; every fixture vector passes in noble and node:crypto.
import t from 'tap';
import { createCipheriv, createDecipheriv, createHash, createHmac } from 'node:crypto';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { SELF_TEST_NAMES, SELF_TEST_VECTORS, runSelfTests } from './selftest.js';
import type { SelfTestName } from './selftest.js';
import { hex, loadVectors, toHex } from '../../fixtures/crypto/load.js';

t.test('all known-answer tests pass', async (t) => {
  const r = runSelfTests();
  t.ok(r.ok);
  t.same(r.results.map((x) => x.name), SELF_TEST_NAMES);
  t.ok(r.results.every((x) => x.ok));
});

t.test('an injected fault fails exactly that test and the whole report', async (t) => {
  for (const name of SELF_TEST_NAMES) {
    const r = runSelfTests({ corrupt: name });
    t.notOk(r.ok, `${name}: report fails`);
    for (const x of r.results) t.equal(x.ok, x.name !== name, `${name} corrupt: ${x.name} ${x.ok ? 'passes' : 'fails'}`);
  }
  t.throws(() => runSelfTests({ corrupt: 'md5' as SelfTestName }), RangeError);
});

const FIXTURE: Record<SelfTestName, Parameters<typeof loadVectors>[0]> = {
  'sha-256': 'sha256',
  'hmac-sha256': 'hmac-sha256',
  'hkdf-sha256': 'hkdf-sha256',
  'aes-256-gcm': 'aes-256-gcm',
  poly1305: 'poly1305',
  'chacha20-poly1305': 'chacha20-poly1305',
  sm4: 'sm4',
  sm3: 'sm3',
};

t.test('embedded vectors are the published ones (fixtures/crypto)', async (t) => {
  for (const name of SELF_TEST_NAMES) {
    const file = loadVectors<Record<string, unknown>>(FIXTURE[name]);
    t.match(file.source, /\w/, `${file.algorithm} names its source`);
    for (const embedded of SELF_TEST_VECTORS[name]) {
      const found = file.vectors.some((v) => Object.entries(embedded).every(([k, val]) => v[k] === val));
      t.ok(found, `${name}: embedded vector ${JSON.stringify(embedded).slice(0, 60)}… is in ${FIXTURE[name]}.json`);
    }
  }
});

t.test('fixture vectors: SHA-256 and HMAC-SHA256 in noble and node:crypto', async (t) => {
  for (const v of loadVectors<{ message: string; digest: string }>('sha256').vectors) {
    t.equal(toHex(sha256(hex(v.message))), v.digest, `${v.name} noble`);
    t.equal(createHash('sha256').update(hex(v.message)).digest('hex'), v.digest, `${v.name} node`);
  }
  for (const v of loadVectors<{ key: string; data: string; mac: string; truncateBytes?: number }>('hmac-sha256').vectors) {
    const n = v.truncateBytes ?? 32;
    t.equal(toHex(hmac(sha256, hex(v.key), hex(v.data)).subarray(0, n)), v.mac, `${v.name} noble`);
    t.equal(createHmac('sha256', hex(v.key)).update(hex(v.data)).digest('hex').slice(0, 2 * n), v.mac, `${v.name} node`);
  }
});

t.test('fixture vectors: AES-256-GCM in noble and node:crypto', async (t) => {
  for (const v of loadVectors<{ key: string; iv: string; plaintext: string; aad: string; ciphertext: string; tag: string }>('aes-256-gcm').vectors) {
    t.equal(toHex(gcm(hex(v.key), hex(v.iv), hex(v.aad)).encrypt(hex(v.plaintext))), v.ciphertext + v.tag, `${v.name} noble`);
    const c = createCipheriv('aes-256-gcm', hex(v.key), hex(v.iv));
    c.setAAD(hex(v.aad));
    t.equal(Buffer.concat([c.update(hex(v.plaintext)), c.final()]).toString('hex') + c.getAuthTag().toString('hex'), v.ciphertext + v.tag, `${v.name} node`);
    const d = createDecipheriv('aes-256-gcm', hex(v.key), hex(v.iv));
    d.setAAD(hex(v.aad));
    d.setAuthTag(hex(v.tag));
    t.equal(Buffer.concat([d.update(hex(v.ciphertext)), d.final()]).toString('hex'), v.plaintext, `${v.name} node decrypt`);
  }
});
