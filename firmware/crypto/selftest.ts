// Power-on self-tests, as a certified crypto module runs them (FIPS 140-3 §7.10 style known-answer
// tests): every primitive this module uses against published vectors. The module refuses service
// while any test fails. Vectors are embedded (firmware reads no files); fixtures/crypto/*.json
// holds the same values with their sources, and selftest.test.ts checks that the two agree.
import { gcm } from '@noble/ciphers/aes.js';
import { poly1305 } from '@noble/ciphers/_poly1305.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ctEqual } from './_util.js';
import { nodeProvider, sm3Digest } from './suites.js';

export type SelfTestName = 'sha-256' | 'hmac-sha256' | 'hkdf-sha256' | 'aes-256-gcm' | 'poly1305' | 'chacha20-poly1305' | 'sm4' | 'sm3';
export const SELF_TEST_NAMES: readonly SelfTestName[] = ['sha-256', 'hmac-sha256', 'hkdf-sha256', 'aes-256-gcm', 'poly1305', 'chacha20-poly1305', 'sm4', 'sm3'];

export interface SelfTestResult {
  name: SelfTestName;
  ok: boolean;
}

export interface SelfTestReport {
  ok: boolean;
  results: SelfTestResult[];
}

export interface SelfTestOptions {
  /** Fault injection for tests: flip one bit of this primitive's output, so its KAT fails. */
  corrupt?: SelfTestName;
}

/** The embedded known answers (hex). Exported so tests can hold them against fixtures/crypto. */
export const SELF_TEST_VECTORS = {
  // FIPS 180-4 examples (NIST CSRC example values, SHA256.pdf).
  'sha-256': [
    { message: '616263', digest: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' },
    {
      message: '6162636462636465636465666465666765666768666768696768696a68696a6b696a6b6c6a6b6c6d6b6c6d6e6c6d6e6f6d6e6f706e6f7071',
      digest: '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
    },
  ],
  // RFC 4231 §4.2, §4.3, §4.7 (test cases 1, 2, 6).
  'hmac-sha256': [
    { key: '0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b', data: '4869205468657265', mac: 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7' },
    { key: '4a656665', data: '7768617420646f2079612077616e7420666f72206e6f7468696e673f', mac: '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' },
    {
      key: 'aa'.repeat(131),
      data: '54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374',
      mac: '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
    },
  ],
  // RFC 5869 Appendix A.1 and A.3.
  'hkdf-sha256': [
    {
      ikm: '0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b',
      salt: '000102030405060708090a0b0c',
      info: 'f0f1f2f3f4f5f6f7f8f9',
      length: 42,
      okm: '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    },
    {
      ikm: '0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b',
      salt: '',
      info: '',
      length: 42,
      okm: '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
    },
  ],
  // McGrew & Viega GCM spec, Appendix B, test cases 13, 14 and 16 (AES-256).
  'aes-256-gcm': [
    { key: '00'.repeat(32), iv: '00'.repeat(12), plaintext: '', aad: '', ciphertext: '', tag: '530f8afbc74536b9a963b4f1c4cb738b' },
    {
      key: '00'.repeat(32),
      iv: '00'.repeat(12),
      plaintext: '00000000000000000000000000000000',
      aad: '',
      ciphertext: 'cea7403d4d606b6e074ec5d3baf39d18',
      tag: 'd0d1c8a799996bf0265b98b5d48ab919',
    },
    {
      key: 'feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308',
      iv: 'cafebabefacedbaddecaf888',
      plaintext: 'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39',
      aad: 'feedfacedeadbeeffeedfacedeadbeefabaddad2',
      ciphertext: '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662',
      tag: '76fc6ece0f4e1768cddf8853bb2d551b',
    },
  ],
  // RFC 8439 §2.5.2 and Appendix A.3 #5.
  poly1305: [
    {
      key: '85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b',
      message: '43727970746f6772617068696320466f72756d2052657365617263682047726f7570',
      tag: 'a8061dc1305136c6c22b8baf0c0127a9',
    },
    { key: '02' + '00'.repeat(31), message: 'ff'.repeat(16), tag: '03' + '00'.repeat(15) },
  ],
  // RFC 8439 §2.8.2 (the AEAD suite chacha20-poly1305).
  'chacha20-poly1305': [
    {
      key: '808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f',
      nonce: '070000004041424344454647',
      aad: '50515253c0c1c2c3c4c5c6c7',
      plaintext:
        '4c616469657320616e642047656e746c656d656e206f662074686520636c617373206f66202739393a204966204920636f756c64206f6666657220796f75206f6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73637265656e20776f756c642062652069742e',
      ciphertext:
        'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116',
      tag: '1ae10b594f09e26a7e902ecbd0600691',
    },
  ],
  // GB/T 32907-2016 Appendix A, example 1 (the suite sm4-ctr-hmac-sm3's cipher).
  sm4: [{ key: '0123456789abcdeffedcba9876543210', plaintext: '0123456789abcdeffedcba9876543210', iterations: 1, ciphertext: '681edf34d206965e86b3e94f536e4246' }],
  // GB/T 32905-2016 Appendix A, examples 1 and 2 (the suite's MAC and key derivation hash).
  sm3: [
    { message: '616263', digest: '66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0' },
    { message: '61626364'.repeat(16), digest: 'debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732' },
  ],
} as const;

function hex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'hex'));
}

type Check = (out: (b: Uint8Array) => Uint8Array) => boolean;

// `out` passes every computed value through the fault injector before it is compared.
const CHECKS: Record<SelfTestName, Check> = {
  'sha-256': (out) => SELF_TEST_VECTORS['sha-256'].every((v) => ctEqual(out(sha256(hex(v.message))), hex(v.digest))),
  'hmac-sha256': (out) =>
    SELF_TEST_VECTORS['hmac-sha256'].every((v) => ctEqual(out(hmac(sha256, hex(v.key), hex(v.data))), hex(v.mac))),
  'hkdf-sha256': (out) =>
    SELF_TEST_VECTORS['hkdf-sha256'].every((v) =>
      // RFC 5869 §2.2: an absent salt is HashLen zeros; the empty-salt vector tests exactly that path.
      ctEqual(out(hkdf(sha256, hex(v.ikm), v.salt ? hex(v.salt) : undefined, hex(v.info), v.length)), hex(v.okm)),
    ),
  'aes-256-gcm': (out) =>
    SELF_TEST_VECTORS['aes-256-gcm'].every((v) => {
      const sealed = out(gcm(hex(v.key), hex(v.iv), hex(v.aad)).encrypt(hex(v.plaintext)));
      if (!ctEqual(sealed, hex(v.ciphertext + v.tag))) return false;
      // Decrypt must round-trip, and a flipped tag bit must be refused (the check we rely on most).
      const opened = gcm(hex(v.key), hex(v.iv), hex(v.aad)).decrypt(hex(v.ciphertext + v.tag));
      if (!ctEqual(opened, hex(v.plaintext))) return false;
      const bad = hex(v.ciphertext + v.tag);
      bad[bad.length - 1]! ^= 1;
      try {
        gcm(hex(v.key), hex(v.iv), hex(v.aad)).decrypt(bad);
        return false;
      } catch {
        return true;
      }
    }),
  poly1305: (out) => SELF_TEST_VECTORS.poly1305.every((v) => ctEqual(out(poly1305(hex(v.message), hex(v.key))), hex(v.tag))),
  // The AEAD suites run on the node:crypto provider (suites.ts): these test that provider, the
  // code path sessions use. AES-256-GCM sessions use it too, so its vectors run there as well.
  'chacha20-poly1305': (out) =>
    SELF_TEST_VECTORS['chacha20-poly1305'].every((v) => {
      const sealed = out(nodeProvider.aeadSeal('chacha20-poly1305', hex(v.key), hex(v.nonce), hex(v.plaintext), hex(v.aad)));
      if (!ctEqual(sealed, hex(v.ciphertext + v.tag))) return false;
      const opened = nodeProvider.aeadOpen('chacha20-poly1305', hex(v.key), hex(v.nonce), sealed, hex(v.aad));
      const bad = Uint8Array.from(sealed);
      bad[bad.length - 1]! ^= 1;
      return !!opened && ctEqual(opened, hex(v.plaintext)) && nodeProvider.aeadOpen('chacha20-poly1305', hex(v.key), hex(v.nonce), bad, hex(v.aad)) === undefined;
    }) &&
    SELF_TEST_VECTORS['aes-256-gcm'].every((v) => ctEqual(nodeProvider.aeadSeal('aes-256-gcm', hex(v.key), hex(v.iv), hex(v.plaintext), hex(v.aad)), hex(v.ciphertext + v.tag))),
  // SM4-CTR over one zero block with the plaintext as counter block is one SM4 encryption: the
  // suite's own code path answers the standard's block vector.
  sm4: (out) => SELF_TEST_VECTORS.sm4.every((v) => ctEqual(out(nodeProvider.sm4Ctr(hex(v.key), hex(v.plaintext), new Uint8Array(16))), hex(v.ciphertext))),
  sm3: (out) => SELF_TEST_VECTORS.sm3.every((v) => ctEqual(out(sm3Digest(hex(v.message))), hex(v.digest))),
};

/** Run every known-answer test. Never throws: a crash inside a primitive is a failed test. */
export function runSelfTests(options: SelfTestOptions = {}): SelfTestReport {
  if (options.corrupt !== undefined && !SELF_TEST_NAMES.includes(options.corrupt)) {
    throw new RangeError(`options.corrupt must be one of ${SELF_TEST_NAMES.join(', ')}`);
  }
  const results = SELF_TEST_NAMES.map((name): SelfTestResult => {
    const flip = options.corrupt === name;
    const out = (b: Uint8Array): Uint8Array => {
      if (!flip) return b;
      const c = b.length ? b.slice() : new Uint8Array(1);
      c[0]! ^= 0x01;
      return c;
    };
    try {
      return { name, ok: CHECKS[name](out) };
    } catch {
      return { name, ok: false };
    }
  });
  return { ok: results.every((r) => r.ok), results };
}
