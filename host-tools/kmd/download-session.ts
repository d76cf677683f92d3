// The DOWNLOAD session (docs/protocol.md 3.11.2, "Session binding"): a key derived from the AUTH
// exchange, a MAC on every later request and response, and a counter, so a connection taken over
// after AUTH gets nothing and changes nothing. One module for both ends: the KMD (download.ts) and
// the carrier (download-client.ts) seal and open with these functions.
//
//   session key = HKDF-SHA256 (RFC 5869) of the carrier key, salt = challenge || nonce,
//                 info = "qkt download session v1" 0x00 kmdId 0x00 carrierId, 32 bytes
//   tag         = HMAC-SHA256 (RFC 2104) under the session key of
//                 "qkt download mac v1" 0x00 || direction || group || command || counter (u64 BE) || m
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ctEqual } from '../../firmware/crypto/_util.js';
import { decodePayload, encodePayload } from '../../firmware/link/codec.js';
import type { Payload } from '../../firmware/link/codec.js';
import { Group } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';

export const SESSION_LABEL = 'qkt download session v1';
export const MAC_LABEL = 'qkt download mac v1';
export const SESSION_KEY_BYTES = 32;
export const NONCE_BYTES = 32;
export const TAG_BYTES = 32;
/** Direction byte: carrier -> KMD (requests), KMD -> carrier (responses). */
export const TO_KMD = 0x01;
export const TO_CARRIER = 0x02;
/** Counters accepted out of order: at most this far below the highest seen (pipelined reads, lost frames). */
export const REPLAY_WINDOW = 64;
/**
 * What sealing adds around a message's own CBOR map: the outer map with `c` (up to 9 bytes), `m`'s
 * byte-string head (up to 5) and `t` (34), keys included; rounded up. The KMD's maxChunk leaves it.
 */
export const SEAL_OVERHEAD = 64;

const enc = new TextEncoder();

function u64be(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** The session key both ends derive after AUTH. The caller zeroizes it when the session ends. */
export function sessionKey(carrierKey: Uint8Array, kmdId: string, carrierId: string, challenge: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (challenge.length !== 32) throw new RangeError('challenge must be 32 bytes');
  if (nonce.length !== NONCE_BYTES) throw new RangeError(`nonce must be ${NONCE_BYTES} bytes`);
  const info = concat(enc.encode(SESSION_LABEL), new Uint8Array([0]), enc.encode(kmdId), new Uint8Array([0]), enc.encode(carrierId));
  return hkdf(sha256, carrierKey, concat(challenge, nonce), info, SESSION_KEY_BYTES);
}

/** The tag over one sealed message's bytes `m`. */
export function messageTag(key: Uint8Array, direction: number, command: number, counter: number, m: Uint8Array): Uint8Array {
  const head = concat(enc.encode(MAC_LABEL), new Uint8Array([0, direction, Group.DOWNLOAD, command]), u64be(counter));
  return hmac(sha256, key, concat(head, m));
}

/** `inner` as a sealed payload `{c, m, t}`. */
export function seal(key: Uint8Array, direction: number, command: number, counter: number, inner: Payload): Payload {
  const m = encodePayload(inner);
  return { c: counter, m, t: messageTag(key, direction, command, counter, m) };
}

/**
 * Check a sealed payload's shape and tag; its counter and inner map. BAD_REQUEST for a malformed
 * one, AUTH_FAILED for a wrong tag (compared in constant time). The counter is the caller's to check.
 */
export function open(key: Uint8Array, direction: number, command: number, p: Payload): { counter: number; inner: Payload } {
  const c = p['c'];
  const m = p['m'];
  const t = p['t'];
  if (typeof c !== 'number' || !Number.isSafeInteger(c) || c < 0) throw new LinkError(Rc.BAD_REQUEST, 'field "c" must be an unsigned integer (session counter)');
  if (!(m instanceof Uint8Array)) throw new LinkError(Rc.BAD_REQUEST, 'field "m" must be a byte string (sealed message)');
  if (!(t instanceof Uint8Array) || t.length !== TAG_BYTES) throw new LinkError(Rc.BAD_REQUEST, `field "t" must be ${TAG_BYTES} bytes (session MAC)`);
  if (!ctEqual(messageTag(key, direction, command, c, m), t)) throw new LinkError(Rc.AUTH_FAILED, 'session MAC does not verify');
  const inner = decodePayload(m);
  if (!inner) throw new LinkError(Rc.BAD_REQUEST, 'sealed message is not a CBOR map');
  return { counter: c, inner };
}

/**
 * The KMD's record of request counters (after RFC 4303 3.4.3's anti-replay window): a counter is
 * taken once, and only if it is at least 1 and within REPLAY_WINDOW of the highest taken. Constant
 * size whatever the session's length.
 */
export class ReplayWindow {
  private highest = 0;
  /** Bit i set: counter highest - i was taken. */
  private seen = 0n;

  /** True if `c` is fresh; it is then recorded. */
  take(c: number): boolean {
    if (c < 1) return false;
    if (c > this.highest) {
      const shift = c - this.highest;
      this.seen = shift >= REPLAY_WINDOW ? 1n : ((this.seen << BigInt(shift)) | 1n) & ((1n << BigInt(REPLAY_WINDOW)) - 1n);
      this.highest = c;
      return true;
    }
    const back = this.highest - c;
    if (back >= REPLAY_WINDOW) return false;
    const bit = 1n << BigInt(back);
    if (this.seen & bit) return false;
    this.seen |= bit;
    return true;
  }
}
