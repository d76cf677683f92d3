// HKDF derivations: RFC 5869 vectors, cross-check against node:crypto hkdfSync, label separation,
// frozen outputs for a fixed device key, argument validation.
import t from 'tap';
import { hkdfSync, randomBytes } from 'node:crypto';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { LABELS, deriveAdminKey, deriveAuthKey, deriveBatchKey, deriveReceiptKey } from './kdf.js';
import { hex, loadJson, loadVectors, toHex } from '../../fixtures/crypto/load.js';

type HkdfVector = { ikm: string; salt: string; info: string; length: number; prk: string; okm: string };

t.test('RFC 5869 SHA-256 vectors (noble and node:crypto)', async (t) => {
  const f = loadVectors<HkdfVector>('hkdf-sha256');
  t.equal(f.vectors.length, 3);
  for (const v of f.vectors) {
    const salt = v.salt ? hex(v.salt) : undefined;
    t.equal(toHex(hkdf(sha256, hex(v.ikm), salt, hex(v.info), v.length)), v.okm, `${v.name}: noble`);
    t.equal(Buffer.from(hkdfSync('sha256', hex(v.ikm), hex(v.salt), hex(v.info), v.length)).toString('hex'), v.okm, `${v.name}: node`);
  }
});

/** The derivation as docs/batch.md states it, done by OpenSSL. */
function nodeDerive(deviceKey: Uint8Array, info: Uint8Array): string {
  return Buffer.from(hkdfSync('sha256', deviceKey, Buffer.from('qkt device key v1'), info, 32)).toString('hex');
}

t.test('derivations match node:crypto on random keys, as documented', async (t) => {
  for (let i = 0; i < 25; i++) {
    const dk = new Uint8Array(randomBytes(32));
    const batchId = new Uint8Array(randomBytes(16));
    t.equal(toHex(deriveBatchKey(dk, batchId)), nodeDerive(dk, Buffer.concat([Buffer.from('qkt/v1 batch key\0'), batchId])));
    t.equal(toHex(deriveReceiptKey(dk)), nodeDerive(dk, Buffer.from('qkt/v1 receipt mac\0')));
    t.equal(toHex(deriveAdminKey(dk)), nodeDerive(dk, Buffer.from('qkt/v1 admin token mac\0')));
    t.equal(toHex(deriveAuthKey(dk)), nodeDerive(dk, Buffer.from('qkt/v1 carrier auth\0')));
  }
});

t.test('labels give distinct keys; batch keys differ per batch id', async (t) => {
  const dk = new Uint8Array(randomBytes(32));
  const keys = [
    deriveReceiptKey(dk),
    deriveAdminKey(dk),
    deriveAuthKey(dk),
    deriveBatchKey(dk, new Uint8Array(16)),
    deriveBatchKey(dk, new Uint8Array(16).fill(1)),
  ].map(toHex);
  t.equal(new Set(keys).size, keys.length);
  t.equal(new Set(Object.values(LABELS)).size, 4);
  t.not(toHex(deriveReceiptKey(new Uint8Array(randomBytes(32)))), keys[0], 'another device key, another receipt key');
});

t.test('frozen outputs for a fixed device key (labels must never change)', async (t) => {
  const f = loadJson<{ deviceKey: string; batchId: string; batchKey: string; receiptKey: string; adminKey: string; authKey: string }>(
    'kdf-frozen.json',
  );
  const dk = hex(f.deviceKey);
  t.equal(toHex(deriveBatchKey(dk, hex(f.batchId))), f.batchKey);
  t.equal(toHex(deriveReceiptKey(dk)), f.receiptKey);
  t.equal(toHex(deriveAdminKey(dk)), f.adminKey);
  t.equal(toHex(deriveAuthKey(dk)), f.authKey);
});

t.test('validation names the parameter', async (t) => {
  t.throws(() => deriveReceiptKey(new Uint8Array(31)), { name: 'RangeError', message: /deviceKey must be 32 bytes/ });
  t.throws(() => deriveAdminKey('00'.repeat(32) as unknown as Uint8Array), { name: 'TypeError', message: /deviceKey/ });
  t.throws(() => deriveBatchKey(new Uint8Array(32), new Uint8Array(15)), { name: 'RangeError', message: /batchId must be 16 bytes/ });
});
