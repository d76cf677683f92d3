// SM3 hash (GB/T 32905-2016) and HMAC-SM3 (RFC 2104) in plain TypeScript:
// the reference the node:crypto provider is checked against, and the fallback where Node's
// OpenSSL lacks SM3. No audited JS library implements SM3 (noble-hashes has none); this one is
// held to the standard's Appendix A vectors and to OpenSSL on random inputs (suites.test.ts).
import { concat } from './_util.js';

const IV = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];
const rotl = (x: number, n: number): number => ((x << (n & 31)) | (x >>> ((32 - (n & 31)) & 31))) >>> 0;
const P0 = (x: number): number => (x ^ rotl(x, 9) ^ rotl(x, 17)) >>> 0;
const P1 = (x: number): number => (x ^ rotl(x, 15) ^ rotl(x, 23)) >>> 0;

/** One compression of a 64-byte block into V (GB/T 32905 §5.3). */
function compress(V: number[], block: DataView, at: number, W: Uint32Array, W1: Uint32Array): void {
  // §5.3.2 message expansion
  for (let j = 0; j < 16; j++) W[j] = block.getUint32(at + 4 * j, false);
  for (let j = 16; j < 68; j++) W[j] = (P1(W[j - 16]! ^ W[j - 9]! ^ rotl(W[j - 3]!, 15)) ^ rotl(W[j - 13]!, 7) ^ W[j - 6]!) >>> 0;
  for (let j = 0; j < 64; j++) W1[j] = (W[j]! ^ W[j + 4]!) >>> 0;
  // §5.3.3 compression function
  let [A, B, C, D, E, F, G, H] = V as [number, number, number, number, number, number, number, number];
  for (let j = 0; j < 64; j++) {
    const T = j < 16 ? 0x79cc4519 : 0x7a879d8a;
    const SS1 = rotl((rotl(A, 12) + E + rotl(T, j % 32)) >>> 0, 7);
    const SS2 = (SS1 ^ rotl(A, 12)) >>> 0;
    const FF = j < 16 ? A ^ B ^ C : (A & B) | (A & C) | (B & C);
    const GG = j < 16 ? E ^ F ^ G : (E & F) | (~E & G);
    const TT1 = ((FF >>> 0) + D + SS2 + W1[j]!) >>> 0;
    const TT2 = ((GG >>> 0) + H + SS1 + W[j]!) >>> 0;
    D = C;
    C = rotl(B, 9);
    B = A;
    A = TT1;
    H = G;
    G = rotl(F, 19);
    F = E;
    E = P0(TT2);
  }
  const out = [A, B, C, D, E, F, G, H];
  for (let i = 0; i < 8; i++) V[i] = (V[i]! ^ out[i]!) >>> 0;
}

/** SM3 digest (32 bytes) of `message`. */
export function sm3(message: Uint8Array): Uint8Array {
  // §5.2 padding: 1 bit, zeros to 448 mod 512, the bit length as u64 big-endian.
  const n = message.length;
  const total = Math.ceil((n + 9) / 64) * 64;
  const buf = new Uint8Array(total);
  buf.set(message);
  buf[n] = 0x80;
  const dv = new DataView(buf.buffer);
  dv.setBigUint64(total - 8, BigInt(n) * 8n, false);
  const V = [...IV];
  const W = new Uint32Array(68);
  const W1 = new Uint32Array(64);
  for (let at = 0; at < total; at += 64) compress(V, dv, at, W, W1);
  buf.fill(0);
  W.fill(0);
  W1.fill(0);
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  V.forEach((v, i) => ov.setUint32(4 * i, v, false));
  return out;
}

const BLOCK = 64;

/** HMAC-SM3 (RFC 2104 §2 with H = SM3, B = 64, L = 32). */
export function hmacSm3(key: Uint8Array, data: Uint8Array): Uint8Array {
  const k0 = new Uint8Array(BLOCK);
  if (key.length > BLOCK) {
    const h = sm3(key);
    k0.set(h);
    h.fill(0);
  } else k0.set(key);
  const ipad = k0.map((b) => b ^ 0x36);
  const opad = k0.map((b) => b ^ 0x5c);
  const innerIn = concat(ipad, data);
  const inner = sm3(innerIn);
  const outerIn = concat(opad, inner);
  const mac = sm3(outerIn);
  for (const a of [k0, ipad, opad, innerIn, inner, outerIn]) a.fill(0);
  return mac;
}
