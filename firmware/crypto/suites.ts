// AEAD suites of service-data sessions (docs/batch.md "AEAD session mode"): AES-256-GCM (NIST SP
// 800-38D, the default), ChaCha20-Poly1305 (RFC 8439 §2.8) and the national suite SM4-CTR with
// HMAC-SM3 (GB/T 32907-2016 / ISO/IEC 18033-3, GB/T 32905-2016, RFC 2104), encrypt-then-MAC.
// Every suite takes the 256-bit pool session key, the 96-bit counter nonce and gives a 16-byte tag.
//
// Two providers compute the primitives. `node` uses node:crypto (OpenSSL): a terminal's MCU
// would hand these to its crypto engine (AES/SM4 accelerators, hashing units), and node:crypto
// plays that part in the emulation; it is the fast one and the default wherever Node has the
// primitive. `reference` is @noble/ciphers (AES-GCM, ChaCha20-Poly1305) and this folder's own
// SM4/SM3 (_sm4.ts, _sm3.ts; no audited JS library has them): the independent answer the tests
// cross-check `node` against, on the standards' vectors and on random inputs.
import { createCipheriv, createDecipheriv, createHash, createHmac, getCiphers, getHashes } from 'node:crypto';
import { gcm } from '@noble/ciphers/aes.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hmacSm3 as refHmacSm3, sm3 as refSm3 } from './_sm3.js';
import { sm4Ctr as refSm4Ctr } from './_sm4.js';
import { abytes, aoneOf, ascii, concat, ctEqual, u32be, u64be, wipe } from './_util.js';

export type AeadSuite = 'aes-256-gcm' | 'chacha20-poly1305' | 'sm4-ctr-hmac-sm3';
export const AEAD_SUITES: readonly AeadSuite[] = ['aes-256-gcm', 'chacha20-poly1305', 'sm4-ctr-hmac-sm3'];
/** A session or header that names no suite is AES-256-GCM: what every client spoke before suites. */
export const DEFAULT_SUITE: AeadSuite = 'aes-256-gcm';
export const SUITE_KEY_BYTES = 32;
export const SUITE_NONCE_BYTES = 12;
export const SUITE_TAG_BYTES = 16;

/**
 * Messages one session key may seal per direction, per suite. All three share the u32 header
 * counter, so none goes above 2^32; the default (REKEY_AFTER_MESSAGES = 2^16) is far below each.
 * - aes-256-gcm: SP 800-38D §8.3 allows 2^32 invocations of one key; our nonces are deterministic
 *   (§8.2.1), never random, so no birthday bound on nonces applies. 2^32 messages of <= 4608 bytes
 *   are 2^40 blocks, far inside GCM's per-key data limit and confidentiality margin.
 * - chacha20-poly1305: a 96-bit nonce never repeats under our counter scheme (RFC 8439 §4); the
 *   per-message limit is 2^38 bytes (§2.8), the per-key forgery bound grows with messages times
 *   length (RFC 8439 §4 / Procter 2014), negligible at 2^32 x 4 KiB.
 * - sm4-ctr-hmac-sm3: SM4 is a 128-bit block cipher, so CTR keystream loses indistinguishability
 *   near 2^64 blocks (birthday); 2^32 messages x 289 blocks ~ 2^40.2 blocks gives an advantage
 *   below 2^-47. HMAC-SM3 with a 256-bit key and a 128-bit tag: forgery ~ q / 2^128.
 *   Counter blocks never collide: each message's 2^32 block counters sit under its own nonce.
 */
export const SUITE_MAX_MESSAGES: Record<AeadSuite, number> = {
  'aes-256-gcm': 2 ** 32,
  'chacha20-poly1305': 2 ** 32,
  'sm4-ctr-hmac-sm3': 2 ** 32,
};

// ---------------------------------------------------------------------------------------------
// Providers

export interface CryptoProvider {
  readonly name: 'node' | 'reference';
  /** AEAD seal: prefix || ciphertext || 16-byte tag (the prefix, e.g. the service header, saves a copy). */
  aeadSeal(alg: 'aes-256-gcm' | 'chacha20-poly1305', key32: Uint8Array, nonce12: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, prefix?: Uint8Array): Uint8Array;
  /** AEAD open: the plaintext, or undefined if the tag does not verify (compared in constant time). */
  aeadOpen(alg: 'aes-256-gcm' | 'chacha20-poly1305', key32: Uint8Array, nonce12: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined;
  /** SM4 in CTR mode, 128-bit big-endian counter from `counter16`. */
  sm4Ctr(key16: Uint8Array, counter16: Uint8Array, data: Uint8Array): Uint8Array;
  hmacSm3(key: Uint8Array, data: Uint8Array): Uint8Array;
}

const u8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

export const referenceProvider: CryptoProvider = {
  name: 'reference',
  aeadSeal: (alg, key, nonce, pt, aad, prefix) => {
    const sealed = (alg === 'aes-256-gcm' ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad)).encrypt(pt);
    return prefix?.length ? concat(prefix, sealed) : sealed;
  },
  aeadOpen: (alg, key, nonce, sealed, aad) => {
    try {
      return (alg === 'aes-256-gcm' ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad)).decrypt(sealed);
    } catch {
      return undefined;
    }
  },
  sm4Ctr: refSm4Ctr,
  hmacSm3: refHmacSm3,
};

/** What this Node's OpenSSL offers; a primitive it lacks is computed by the reference instead. */
export const NODE_HAS = (() => {
  const ciphers = new Set(getCiphers());
  const hashes = new Set(getHashes());
  return {
    'aes-256-gcm': ciphers.has('aes-256-gcm'),
    'chacha20-poly1305': ciphers.has('chacha20-poly1305'),
    'sm4-ctr': ciphers.has('sm4-ctr'),
    sm3: hashes.has('sm3'),
  };
})();

function nodeSeal(alg: 'aes-256-gcm' | 'chacha20-poly1305', key: Uint8Array, nonce: Uint8Array, pt: Uint8Array, aad: Uint8Array, prefix: Uint8Array = new Uint8Array(0)): Uint8Array {
  const o = { authTagLength: SUITE_TAG_BYTES };
  const c = alg === 'aes-256-gcm' ? createCipheriv(alg, key, nonce, o) : createCipheriv(alg, key, nonce, o);
  c.setAAD(aad);
  const p = prefix.length;
  const out = new Uint8Array(p + pt.length + SUITE_TAG_BYTES);
  out.set(prefix);
  const a = c.update(pt);
  const b = c.final();
  out.set(a, p);
  out.set(b, p + a.length);
  out.set(c.getAuthTag(), p + a.length + b.length);
  return out;
}

function nodeOpen(alg: 'aes-256-gcm' | 'chacha20-poly1305', key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  if (sealed.length < SUITE_TAG_BYTES) return undefined;
  const o = { authTagLength: SUITE_TAG_BYTES };
  const d = alg === 'aes-256-gcm' ? createDecipheriv(alg, key, nonce, o) : createDecipheriv(alg, key, nonce, o);
  d.setAAD(aad);
  // OpenSSL compares the tag in constant time (CRYPTO_memcmp) inside final().
  d.setAuthTag(sealed.subarray(sealed.length - SUITE_TAG_BYTES));
  const a = d.update(sealed.subarray(0, sealed.length - SUITE_TAG_BYTES));
  try {
    const b = d.final();
    if (b.length === 0) return u8(a);
    return concat(a, b);
  } catch {
    a.fill(0); // unauthenticated plaintext never leaves
    return undefined;
  }
}

export const nodeProvider: CryptoProvider = {
  name: 'node',
  aeadSeal: (alg, key, nonce, pt, aad, prefix) => (NODE_HAS[alg] ? nodeSeal : referenceProvider.aeadSeal)(alg, key, nonce, pt, aad, prefix),
  aeadOpen: (alg, key, nonce, sealed, aad) => (NODE_HAS[alg] ? nodeOpen : referenceProvider.aeadOpen)(alg, key, nonce, sealed, aad),
  sm4Ctr: (key, counter, data) => {
    if (!NODE_HAS['sm4-ctr']) return refSm4Ctr(key, counter, data);
    const c = createCipheriv('sm4-ctr', key, counter);
    const a = c.update(data);
    const b = c.final();
    return b.length === 0 ? u8(a) : concat(a, b);
  },
  hmacSm3: (key, data) => (NODE_HAS.sm3 ? u8(createHmac('sm3', key).update(data).digest()) : refHmacSm3(key, data)),
};

/** SM3 digest as the node provider computes it (OpenSSL, or the reference where it lacks SM3): for the power-on self-test. */
export function sm3Digest(message: Uint8Array): Uint8Array {
  return NODE_HAS.sm3 ? u8(createHash('sm3').update(message).digest()) : refSm3(message);
}

export const PROVIDERS: Record<CryptoProvider['name'], CryptoProvider> = { node: nodeProvider, reference: referenceProvider };

// ---------------------------------------------------------------------------------------------
// sm4-ctr-hmac-sm3: key derivation and the construction

/**
 * HKDF (RFC 5869) with HMAC-SM3, so the national suite uses national algorithms only. The salt and
 * NUL-terminated labels follow kdf.ts's style (fixed, public, never changed: pinned by
 * fixtures/crypto/sm4-ctr-hmac-sm3.json). SM4 takes a 128-bit key; the MAC key is 256 bits.
 */
export const SM4_SUITE_SALT = 'qkt session suite v1';
export const SM4_SUITE_LABELS = { enc: 'qkt/v1 sm4-ctr enc key\0', mac: 'qkt/v1 hmac-sm3 mac key\0' } as const;

function hkdf(hmac: (k: Uint8Array, d: Uint8Array) => Uint8Array, salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const prk = hmac(salt, ikm); // §2.2 extract
  const out = new Uint8Array(length);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, at = 0; at < length; i++) {
    // §2.3 expand: T(i) = HMAC(PRK, T(i-1) || info || i)
    const input = concat(t, info, Uint8Array.of(i));
    t.fill(0);
    t = hmac(prk, input);
    input.fill(0);
    out.set(t.subarray(0, Math.min(t.length, length - at)), at);
    at += t.length;
  }
  wipe(t, prk);
  return out;
}

/** The SM4 key (16 bytes) and HMAC-SM3 key (32 bytes) of one session key. The caller wipes both. */
export function deriveSm4SuiteKeys(sessionKey32: Uint8Array, provider: CryptoProvider = nodeProvider): { enc16: Uint8Array; mac32: Uint8Array } {
  abytes(sessionKey32, 'sessionKey32', SUITE_KEY_BYTES);
  const h = provider.hmacSm3;
  const salt = ascii(SM4_SUITE_SALT);
  return { enc16: hkdf(h, salt, sessionKey32, ascii(SM4_SUITE_LABELS.enc), 16), mac32: hkdf(h, salt, sessionKey32, ascii(SM4_SUITE_LABELS.mac), 32) };
}

/** First counter block: nonce || u32 1 (block 1 first, as GCM's and RFC 8439's payload counters). */
function sm4Counter0(nonce12: Uint8Array): Uint8Array {
  return concat(nonce12, u32be(1));
}

/** MAC input: the nonce, then aad and ciphertext each after its u64 length, so no two inputs collide. */
function sm4MacInput(nonce12: Uint8Array, aad: Uint8Array, ct: Uint8Array): Uint8Array {
  return concat(nonce12, u64be(aad.length), aad, u64be(ct.length), ct);
}

// ---------------------------------------------------------------------------------------------
// A session cipher: one suite, one session key, keys derived once

/**
 * Seals and opens messages under one session key with one suite. Holds its own copy of the key
 * (and, for SM4, the derived keys); `wipe()` zero-fills them. Nonces are the caller's
 * (service.ts sessionNonce: direction || counter), never repeated under one key.
 */
export class SessionCipher {
  private readonly key: Uint8Array;
  private readonly sm4?: { enc16: Uint8Array; mac32: Uint8Array };
  private wiped = false;

  constructor(
    readonly suite: AeadSuite,
    sessionKey32: Uint8Array,
    readonly provider: CryptoProvider = nodeProvider,
  ) {
    aoneOf(suite, 'suite', AEAD_SUITES);
    abytes(sessionKey32, 'sessionKey32', SUITE_KEY_BYTES);
    if (suite === 'sm4-ctr-hmac-sm3') {
      this.sm4 = deriveSm4SuiteKeys(sessionKey32, provider);
      this.key = new Uint8Array(0);
    } else this.key = Uint8Array.from(sessionKey32);
  }

  private live(): void {
    if (this.wiped) throw new Error('session cipher wiped');
  }

  /** prefix || ciphertext || 16-byte tag; the prefix (default none) is typically the service header. */
  seal(nonce12: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, prefix: Uint8Array = new Uint8Array(0)): Uint8Array {
    this.live();
    abytes(nonce12, 'nonce12', SUITE_NONCE_BYTES);
    abytes(plaintext, 'plaintext');
    abytes(aad, 'aad');
    abytes(prefix, 'prefix');
    if (!this.sm4) return this.provider.aeadSeal(this.suite as 'aes-256-gcm' | 'chacha20-poly1305', this.key, nonce12, plaintext, aad, prefix);
    // Encrypt-then-MAC (Bellare & Namprempre 2000): the tag covers nonce, aad and ciphertext.
    const ct = this.provider.sm4Ctr(this.sm4.enc16, sm4Counter0(nonce12), plaintext);
    const mac = this.provider.hmacSm3(this.sm4.mac32, sm4MacInput(nonce12, aad, ct));
    const out = new Uint8Array(prefix.length + ct.length + SUITE_TAG_BYTES);
    out.set(prefix);
    out.set(ct, prefix.length);
    // RFC 2104 §5: a tag truncated to the leftmost 128 bits (>= half the output, >= 80 bits).
    out.set(mac.subarray(0, SUITE_TAG_BYTES), prefix.length + ct.length);
    mac.fill(0);
    return out;
  }

  /** The plaintext, or undefined if the message does not authenticate (nothing is decrypted then). */
  open(nonce12: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
    this.live();
    abytes(nonce12, 'nonce12', SUITE_NONCE_BYTES);
    abytes(sealed, 'sealed');
    abytes(aad, 'aad');
    if (sealed.length < SUITE_TAG_BYTES) return undefined;
    if (!this.sm4) return this.provider.aeadOpen(this.suite as 'aes-256-gcm' | 'chacha20-poly1305', this.key, nonce12, sealed, aad);
    const ct = sealed.subarray(0, sealed.length - SUITE_TAG_BYTES);
    const mac = this.provider.hmacSm3(this.sm4.mac32, sm4MacInput(nonce12, aad, ct));
    const ok = ctEqual(mac.subarray(0, SUITE_TAG_BYTES), sealed.subarray(ct.length));
    mac.fill(0);
    if (!ok) return undefined;
    return this.provider.sm4Ctr(this.sm4.enc16, sm4Counter0(nonce12), ct);
  }

  wipe(): void {
    this.key.fill(0);
    wipe(this.sm4?.enc16, this.sm4?.mac32);
    this.wiped = true;
  }
}
