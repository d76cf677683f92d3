// SM4 block cipher (GB/T 32907-2016, also ISO/IEC 18033-3:2010/Amd 1) and CTR mode (NIST SP
// 800-38A §6.5) in plain TypeScript: the reference the node:crypto provider is checked against,
// and the fallback where Node's OpenSSL lacks SM4. No audited JS library implements SM4
// (noble-ciphers has none); this one is held to the standard's Appendix A vectors and to OpenSSL
// on random inputs (suites.test.ts). Not constant time (table S-box): a reference, not the engine.

// GB/T 32907 §6.2.1 S-box. Built from its algebraic form rather than typed in: S(x) =
// A·I(A·x ⊕ 0xd3) ⊕ 0xd3, I = inversion in GF(2^8) mod x^8+x^7+x^6+x^5+x^4+x^2+1, A the affine
// matrix below (columns, most significant input bit first). Tests check the result against the
// first row of the standard's table and the whole cipher against the Appendix A answers.
const SBOX = (() => {
  const POLY = 0x1f5;
  const mul = (a: number, b: number): number => {
    let r = 0;
    for (; b; b >>= 1) {
      if (b & 1) r ^= a;
      a <<= 1;
      if (a & 0x100) a ^= POLY;
    }
    return r;
  };
  const inv = (a: number): number => {
    // a^254 = a^-1 in GF(2^8) (0 maps to 0)
    let r = 1;
    for (let e = 254, b = a; e; e >>= 1, b = mul(b, b)) if (e & 1) r = mul(r, b);
    return a ? r : 0;
  };
  const COLS = [0xe5, 0xf2, 0x79, 0xbc, 0x5e, 0x2f, 0x97, 0xcb];
  const aff = (x: number): number => {
    let o = 0;
    for (let i = 0; i < 8; i++) if ((x >> (7 - i)) & 1) o ^= COLS[i]!;
    return o;
  };
  return Uint8Array.from({ length: 256 }, (_, x) => aff(inv(aff(x) ^ 0xd3)) ^ 0xd3);
})();
export const _SBOX_FOR_TESTS = SBOX;

const FK = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc]; // §7.3
// §7.3: CK_i byte j = (4i + j) * 7 mod 256
const CK = Array.from({ length: 32 }, (_, i) => {
  let v = 0;
  for (let j = 0; j < 4; j++) v = (v << 8) | (((4 * i + j) * 7) & 0xff);
  return v >>> 0;
});

const rotl = (x: number, n: number): number => ((x << n) | (x >>> (32 - n))) >>> 0;
const tau = (a: number): number =>
  ((SBOX[a >>> 24]! << 24) | (SBOX[(a >>> 16) & 0xff]! << 16) | (SBOX[(a >>> 8) & 0xff]! << 8) | SBOX[a & 0xff]!) >>> 0;
const T = (x: number): number => {
  const b = tau(x);
  return (b ^ rotl(b, 2) ^ rotl(b, 10) ^ rotl(b, 18) ^ rotl(b, 24)) >>> 0; // §6.2.2 L
};
const Tk = (x: number): number => {
  const b = tau(x);
  return (b ^ rotl(b, 13) ^ rotl(b, 23)) >>> 0; // §7.3 L'
};

/** The 32 round keys of a 16-byte key (§7.3). The caller wipes them. */
export function sm4KeySchedule(key16: Uint8Array): Uint32Array {
  if (key16.length !== 16) throw new RangeError('key16 must be 16 bytes');
  const dv = new DataView(key16.buffer, key16.byteOffset, 16);
  const K = new Uint32Array(36);
  for (let i = 0; i < 4; i++) K[i] = (dv.getUint32(4 * i, false) ^ FK[i]!) >>> 0;
  const rk = new Uint32Array(32);
  for (let i = 0; i < 32; i++) {
    K[i + 4] = (K[i]! ^ Tk((K[i + 1]! ^ K[i + 2]! ^ K[i + 3]! ^ CK[i]!) >>> 0)) >>> 0;
    rk[i] = K[i + 4]!;
  }
  K.fill(0);
  return rk;
}

/** Encrypt one 16-byte block (§7.1: 32 rounds, then the reverse transform R). */
export function sm4EncryptBlock(rk: Uint32Array, input: Uint8Array, output: Uint8Array): void {
  const iv = new DataView(input.buffer, input.byteOffset, 16);
  let x0 = iv.getUint32(0, false);
  let x1 = iv.getUint32(4, false);
  let x2 = iv.getUint32(8, false);
  let x3 = iv.getUint32(12, false);
  for (let i = 0; i < 32; i++) {
    const x4 = (x0 ^ T((x1 ^ x2 ^ x3 ^ rk[i]!) >>> 0)) >>> 0;
    x0 = x1;
    x1 = x2;
    x2 = x3;
    x3 = x4;
  }
  const ov = new DataView(output.buffer, output.byteOffset, 16);
  ov.setUint32(0, x3, false);
  ov.setUint32(4, x2, false);
  ov.setUint32(8, x1, false);
  ov.setUint32(12, x0, false);
}

/**
 * SM4-CTR (SP 800-38A §6.5): keystream block i = SM4(K, counter0 + i), the 128-bit counter
 * incremented big-endian (the same as OpenSSL's sm4-ctr). Encrypts and decrypts.
 */
export function sm4Ctr(key16: Uint8Array, counter0: Uint8Array, data: Uint8Array): Uint8Array {
  if (counter0.length !== 16) throw new RangeError('counter0 must be 16 bytes');
  const rk = sm4KeySchedule(key16);
  const ctr = Uint8Array.from(counter0);
  const ks = new Uint8Array(16);
  const out = new Uint8Array(data.length);
  for (let at = 0; at < data.length; at += 16) {
    sm4EncryptBlock(rk, ctr, ks);
    const n = Math.min(16, data.length - at);
    for (let i = 0; i < n; i++) out[at + i] = data[at + i]! ^ ks[i]!;
    for (let i = 15; i >= 0; i--) if ((ctr[i] = (ctr[i]! + 1) & 0xff) !== 0) break;
  }
  rk.fill(0);
  ks.fill(0);
  return out;
}
