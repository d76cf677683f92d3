// Service-data crypto between terminal and master station (docs/batch.md, "Service data"):
// OTP = XOR with pool key + one-time Poly1305 MAC (RFC 8439 §2.5, §2.8 input layout), or an
// AEAD session keyed from the pool (AES-256-GCM by default, ChaCha20-Poly1305 or SM4-CTR +
// HMAC-SM3: suites.ts), with a counter nonce and rekey limits.
import { poly1305 } from '@noble/ciphers/_poly1305.js';
import { BATCH_ID_BYTES } from './kdf.js';
import { AEAD_SUITES, DEFAULT_SUITE, SessionCipher, SUITE_MAX_MESSAGES } from './suites.js';
import type { AeadSuite, CryptoProvider } from './suites.js';
import { CryptoFormatError, ServiceAuthError } from './errors.js';
import { abytes, aint, aoneOf, concat, ctEqual, wipe } from './_util.js';

// ---------------------------------------------------------------------------------------------
// OTP with a one-time authenticator
export { CryptoFormatError, ServiceAuthError } from './errors.js';
export { AEAD_SUITES, DEFAULT_SUITE, SessionCipher } from './suites.js';
export type { AeadSuite } from './suites.js';

export const OTP_MAC_KEY_BYTES = 32;
export const OTP_TAG_BYTES = 16;

/** Pool bytes one OTP message consumes: the pad (plaintext length) plus the 32-byte MAC key. */
export function otpKeyBytes(plaintextLength: number): number {
  aint(plaintextLength, 'plaintextLength', 0, Number.MAX_SAFE_INTEGER - OTP_MAC_KEY_BYTES);
  return plaintextLength + OTP_MAC_KEY_BYTES;
}

function le64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function pad16(n: number): Uint8Array {
  return new Uint8Array((16 - (n % 16)) % 16);
}

/**
 * Poly1305 over aad and ciphertext laid out as in RFC 8439 §2.8 (each zero-padded to 16 bytes, then
 * both lengths as u64 LE), so (aad, ciphertext) pairs map to distinct MAC inputs. With a fresh,
 * uniformly random 32-byte key per message Poly1305 is a one-time authenticator: forgery chance
 * <= 8*ceil(L/16)/2^106 for L-byte input, whatever the attacker's computing power.
 */
function otpTag(macKey: Uint8Array, aad: Uint8Array, ct: Uint8Array): Uint8Array {
  const input = concat(aad, pad16(aad.length), ct, pad16(ct.length), le64(aad.length), le64(ct.length));
  return poly1305(input, macKey);
}

function xor(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/**
 * Split the pool material an OTP message's key ranges name (concatenated in header order): the
 * first 32 bytes are the Poly1305 key, the rest is the pad. Views into `material`; the caller wipes it.
 */
export function splitOtpKey(material: Uint8Array): { macKey32: Uint8Array; keyStream: Uint8Array } {
  abytes(material, 'material');
  if (material.length < OTP_MAC_KEY_BYTES) throw new RangeError(`material must be at least ${OTP_MAC_KEY_BYTES} bytes`);
  return { macKey32: material.subarray(0, OTP_MAC_KEY_BYTES), keyStream: material.subarray(OTP_MAC_KEY_BYTES) };
}

/**
 * One-time-pad seal: ciphertext = plaintext XOR keyStream, then a Poly1305 tag under macKey32.
 * keyStream and macKey32 are pool keys used exactly once; the pool (caller) zeroizes them.
 * Returns ciphertext || tag (16 bytes).
 */
export function otpSeal(keyStream: Uint8Array, plaintext: Uint8Array, macKey32: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Uint8Array {
  abytes(plaintext, 'plaintext');
  abytes(keyStream, 'keyStream', plaintext.length);
  abytes(macKey32, 'macKey32', OTP_MAC_KEY_BYTES);
  abytes(aad, 'aad');
  const ct = xor(plaintext, keyStream);
  return concat(ct, otpTag(macKey32, aad, ct));
}

/** Verify the tag (constant time) and only then remove the pad. Throws ServiceAuthError. */
export function otpOpen(keyStream: Uint8Array, sealed: Uint8Array, macKey32: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Uint8Array {
  abytes(sealed, 'sealed');
  if (sealed.length < OTP_TAG_BYTES) throw new ServiceAuthError('OTP message shorter than its tag');
  abytes(keyStream, 'keyStream', sealed.length - OTP_TAG_BYTES);
  abytes(macKey32, 'macKey32', OTP_MAC_KEY_BYTES);
  abytes(aad, 'aad');
  const ct = sealed.subarray(0, sealed.length - OTP_TAG_BYTES);
  const expected = otpTag(macKey32, aad, ct);
  const ok = ctEqual(expected, sealed.subarray(sealed.length - OTP_TAG_BYTES));
  wipe(expected);
  if (!ok) throw new ServiceAuthError('OTP message tag does not verify');
  return xor(ct, keyStream);
}

// ---------------------------------------------------------------------------------------------
// AEAD session

export const SESSION_KEY_BYTES = 32;
/** Rekey after this many messages per direction (far below every suite's limit: suites.ts SUITE_MAX_MESSAGES). */
export const REKEY_AFTER_MESSAGES = 2 ** 16;
/** Rekey after one hour: limits what one pool key protects if it ever leaked. */
export const REKEY_AFTER_MS = 60 * 60 * 1000;
export const MAX_SESSION_COUNTER = 0xffffffff;

/** 'up': terminal -> master station; 'down': station -> terminal. Both share the session key. */
export type Direction = 'up' | 'down';
export const DIRECTIONS: readonly Direction[] = ['up', 'down'];
const DIRECTION_CODE: Record<Direction, number> = { up: 1, down: 2 };

/**
 * 96-bit nonce of every suite (GCM: SP 800-38D §8.2.1 deterministic construction; ChaCha20-Poly1305:
 * RFC 8439 §2.8 nonce; SM4-CTR: the first 12 bytes of the counter block): fixed field = direction
 * (4 bytes), invocation field = message counter (8 bytes). Both sides use the same key, so the
 * direction keeps their nonces apart; each side sends a counter at most once, so (key, nonce)
 * never repeats.
 */
export function sessionNonce(direction: Direction, counter: number): Uint8Array {
  aoneOf(direction, 'direction', DIRECTIONS);
  aint(counter, 'counter', 0, MAX_SESSION_COUNTER);
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setUint32(0, DIRECTION_CODE[direction], false);
  // u64 big-endian counter; counter <= 2^32 - 1, so the high word is 0 (no BigInt on the hot path).
  v.setUint32(8, counter, false);
  return n;
}

/**
 * Seal one message of a session: ciphertext || 16-byte tag. `aad` is the service header. A
 * session that seals many messages keeps one SessionCipher instead (keys derived once):
 * cipherSeal below. `suite` defaults to AES-256-GCM.
 */
export function sessionSeal(sessionKey32: Uint8Array, counter: number, plaintext: Uint8Array, aad: Uint8Array, direction: Direction, suite: AeadSuite = DEFAULT_SUITE, provider?: CryptoProvider): Uint8Array {
  abytes(sessionKey32, 'sessionKey32', SESSION_KEY_BYTES);
  const c = new SessionCipher(suite, sessionKey32, provider);
  try {
    return cipherSeal(c, counter, plaintext, aad, direction);
  } finally {
    c.wipe();
  }
}

/** Open one message; throws ServiceAuthError if it does not authenticate. */
export function sessionOpen(sessionKey32: Uint8Array, counter: number, sealed: Uint8Array, aad: Uint8Array, direction: Direction, suite: AeadSuite = DEFAULT_SUITE, provider?: CryptoProvider): Uint8Array {
  abytes(sessionKey32, 'sessionKey32', SESSION_KEY_BYTES);
  const c = new SessionCipher(suite, sessionKey32, provider);
  try {
    return cipherOpen(c, counter, sealed, aad, direction);
  } finally {
    c.wipe();
  }
}

/** sessionSeal with a session's cipher. */
export function cipherSeal(cipher: SessionCipher, counter: number, plaintext: Uint8Array, aad: Uint8Array, direction: Direction): Uint8Array {
  abytes(plaintext, 'plaintext');
  abytes(aad, 'aad');
  return cipher.seal(sessionNonce(direction, counter), plaintext, aad);
}

/** A whole service message: header || sealed payload, the header as AAD, in one allocation. */
export function cipherSealMessage(cipher: SessionCipher, counter: number, plaintext: Uint8Array, header: Uint8Array, direction: Direction): Uint8Array {
  abytes(plaintext, 'plaintext');
  abytes(header, 'header');
  return cipher.seal(sessionNonce(direction, counter), plaintext, header, header);
}

/** sessionOpen with a session's cipher; throws ServiceAuthError if it does not authenticate. */
export function cipherOpen(cipher: SessionCipher, counter: number, sealed: Uint8Array, aad: Uint8Array, direction: Direction): Uint8Array {
  abytes(sealed, 'sealed');
  abytes(aad, 'aad');
  const nonce = sessionNonce(direction, counter);
  if (sealed.length < 16) throw new ServiceAuthError('session message shorter than its tag');
  const d = cipher.open(nonce, sealed, aad);
  if (!d) throw new ServiceAuthError(`session message ${counter} does not authenticate`);
  return d;
}

/**
 * Counts one session key's use in one direction and says when to rekey. The clock is injected
 * (ms). Sending: nextCounter() refuses once the key is spent. Receiving: accept() refuses replays
 * (counters must strictly increase).
 */
export class SessionKeyState {
  private _sent = 0;
  private _lastAccepted = -1;

  constructor(
    readonly startedAtMs: number,
    readonly limits: { maxMessages: number; maxAgeMs: number } = { maxMessages: REKEY_AFTER_MESSAGES, maxAgeMs: REKEY_AFTER_MS },
  ) {
    aint(startedAtMs, 'startedAtMs', 0, Number.MAX_SAFE_INTEGER);
    aint(limits.maxMessages, 'limits.maxMessages', 1, MAX_SESSION_COUNTER + 1);
    aint(limits.maxAgeMs, 'limits.maxAgeMs', 1, Number.MAX_SAFE_INTEGER);
  }

  get messages(): number {
    return this._sent;
  }

  needsRekey(nowMs: number): boolean {
    return this._sent >= this.limits.maxMessages || nowMs - this.startedAtMs >= this.limits.maxAgeMs;
  }

  /** The counter for the next outgoing message. Throws RangeError when a rekey is due. */
  nextCounter(nowMs: number): number {
    if (this.needsRekey(nowMs)) throw new RangeError('session key spent: rekey before sending');
    return this._sent++;
  }

  /** Receiving side: true (and remembered) only for a counter above every accepted one. */
  accept(counter: number, nowMs: number): boolean {
    if (!Number.isSafeInteger(counter) || counter < 0 || counter >= this.limits.maxMessages) return false;
    if (nowMs - this.startedAtMs >= this.limits.maxAgeMs) return false;
    if (counter <= this._lastAccepted) return false;
    this._lastAccepted = counter;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Service-data message header

export const SERVICE_HEADER_VERSION = 1;
export const MAX_KEY_RANGES = 16;
const MAX_BITS = 2 ** 23;

export type ServiceMode = 'otp' | 'aead';
export const SERVICE_MODES: readonly ServiceMode[] = ['otp', 'aead'];
/**
 * Header byte 1 names the mode and, for AEAD, the suite (docs/batch.md "Service header"). Code 2
 * is AES-256-GCM, as it was before suites, so older messages read the same. The byte is in the
 * AAD: a message cannot be moved to another suite without failing its tag.
 */
const OTP_CODE = 1;
const SUITE_CODE: Record<AeadSuite, number> = { 'aes-256-gcm': 2, 'chacha20-poly1305': 3, 'sm4-ctr-hmac-sm3': 4 };

/** A run of pool key: bits [bitOffset, bitOffset + bits) of batch batchId. Byte-aligned. */
export interface KeyRange {
  batchId: Uint8Array;
  bitOffset: number;
  bits: number;
}

export interface ServiceHeader {
  mode: ServiceMode;
  /** AEAD only: the suite; absent means aes-256-gcm (decodeServiceHeader leaves it out then). */
  suite?: AeadSuite;
  keyIds: KeyRange[];
  /** Message counter: the AEAD nonce counter, or the OTP message number (replay check). u32. */
  counter: number;
}

export const SERVICE_HEADER_FIXED_BYTES = 7;
export const KEY_RANGE_BYTES = 24;

function validateRange(r: KeyRange, name: string): void {
  if (r === null || typeof r !== 'object') throw new TypeError(`${name} must be an object`);
  abytes(r.batchId, `${name}.batchId`, BATCH_ID_BYTES);
  aint(r.bitOffset, `${name}.bitOffset`, 0, MAX_BITS - 8);
  aint(r.bits, `${name}.bits`, 8, MAX_BITS);
  if (r.bitOffset % 8 !== 0 || r.bits % 8 !== 0) throw new RangeError(`${name} must be byte-aligned (multiples of 8 bits)`);
  if (r.bitOffset + r.bits > MAX_BITS) throw new RangeError(`${name} ends beyond bit ${MAX_BITS}`);
}

/** Encode the header (layout in docs/batch.md); it is also the AAD of the message it heads. */
export function encodeServiceHeader(h: ServiceHeader): Uint8Array {
  if (h === null || typeof h !== 'object') throw new TypeError('header must be an object');
  aoneOf(h.mode, 'header.mode', SERVICE_MODES);
  if (h.suite !== undefined) {
    if (h.mode !== 'aead') throw new RangeError('header.suite applies to aead mode only');
    aoneOf(h.suite, 'header.suite', AEAD_SUITES);
  }
  aint(h.counter, 'header.counter', 0, MAX_SESSION_COUNTER);
  if (!Array.isArray(h.keyIds)) throw new TypeError('header.keyIds must be an array');
  aint(h.keyIds.length, 'header.keyIds.length', 1, MAX_KEY_RANGES);
  h.keyIds.forEach((r, i) => validateRange(r, `header.keyIds[${i}]`));
  if (h.mode === 'aead' && keyBits(h.keyIds) !== SESSION_KEY_BYTES * 8) {
    throw new RangeError('header.keyIds must name exactly 256 bits in aead mode');
  }
  if (h.mode === 'otp' && keyBits(h.keyIds) < OTP_MAC_KEY_BYTES * 8) {
    throw new RangeError('header.keyIds must name at least 256 bits (the MAC key) in otp mode');
  }
  // Written in place (one allocation): every AEAD message encodes one, so it is on the hot path.
  const out = new Uint8Array(SERVICE_HEADER_FIXED_BYTES + KEY_RANGE_BYTES * h.keyIds.length);
  const v = new DataView(out.buffer);
  out[0] = SERVICE_HEADER_VERSION;
  out[1] = h.mode === 'otp' ? OTP_CODE : SUITE_CODE[headerSuite(h)];
  v.setUint32(2, h.counter, false);
  out[6] = h.keyIds.length;
  h.keyIds.forEach((r, i) => {
    const o = SERVICE_HEADER_FIXED_BYTES + i * KEY_RANGE_BYTES;
    out.set(r.batchId, o);
    v.setUint32(o + 16, r.bitOffset, false);
    v.setUint32(o + 20, r.bits, false);
  });
  return out;
}

/** Decode the header at the start of a service message; `length` is where the payload begins. */
export function decodeServiceHeader(bytes: Uint8Array): { header: ServiceHeader; length: number } {
  abytes(bytes, 'bytes');
  if (bytes.length < SERVICE_HEADER_FIXED_BYTES) throw new CryptoFormatError('service header truncated');
  if (bytes[0] !== SERVICE_HEADER_VERSION) throw new CryptoFormatError(`service header version ${bytes[0]} not supported`);
  const suite = AEAD_SUITES.find((x) => SUITE_CODE[x] === bytes[1]);
  if (bytes[1] !== OTP_CODE && !suite) throw new CryptoFormatError(`service mode code ${bytes[1]} unknown`);
  const mode: ServiceMode = suite ? 'aead' : 'otp';
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const counter = v.getUint32(2, false);
  const n = bytes[6]!;
  if (n === 0 || n > MAX_KEY_RANGES) throw new CryptoFormatError(`service header key range count ${n} not in [1, ${MAX_KEY_RANGES}]`);
  const length = SERVICE_HEADER_FIXED_BYTES + n * KEY_RANGE_BYTES;
  if (bytes.length < length) throw new CryptoFormatError('service header truncated');
  const keyIds: KeyRange[] = [];
  for (let i = 0; i < n; i++) {
    const o = SERVICE_HEADER_FIXED_BYTES + i * KEY_RANGE_BYTES;
    keyIds.push({ batchId: bytes.slice(o, o + 16), bitOffset: v.getUint32(o + 16, false), bits: v.getUint32(o + 20, false) });
  }
  const header: ServiceHeader = suite && suite !== DEFAULT_SUITE ? { mode, suite, keyIds, counter } : { mode, keyIds, counter };
  try {
    keyIds.forEach((r, i) => validateRange(r, `keyIds[${i}]`));
    if (mode === 'aead' && keyBits(keyIds) !== 256) throw new RangeError('aead mode needs exactly 256 key bits');
    if (mode === 'otp' && keyBits(keyIds) < 256) throw new RangeError('otp mode needs at least 256 key bits');
  } catch (e) {
    throw new CryptoFormatError(`service header: ${(e as Error).message}`);
  }
  return { header, length };
}

/** Total key bits a header names. */
export function keyBits(ranges: readonly KeyRange[]): number {
  return ranges.reduce((s, r) => s + r.bits, 0);
}

/** The AEAD suite a header names (aes-256-gcm when it names none). */
export function headerSuite(h: Pick<ServiceHeader, 'suite'>): AeadSuite {
  return h.suite ?? DEFAULT_SUITE;
}

/** Messages per direction one session key of `suite` may ever seal (the ceiling of rekeyMessages). */
export function suiteMaxMessages(suite: AeadSuite): number {
  return SUITE_MAX_MESSAGES[suite];
}
