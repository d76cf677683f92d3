// Property tests of every decoder of untrusted bytes in firmware/crypto (issue 8): the sealed batch
// header (decodeBatchHeader, parseSealedHeader, BatchOpener), receipts, admin tokens and service
// headers, fed random bytes and mutations of valid encodings (bit flips, overwrites, truncation at
// every length, extension, insertion, deletion). Each either returns a valid result (it re-encodes
// to the very bytes it read: the formats are canonical) or throws its own typed error with a
// message; nothing else escapes, the input is never modified, and a refused chunk never advances
// the opener.
import t from 'tap';
import type { Test } from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import {
  BATCH_MAGIC,
  BatchError,
  BatchOpener,
  HEADER_FIXED_BYTES,
  MAX_BATCH_BITS,
  MAX_CHUNK_SIZE,
  PURPOSES,
  TAG_BYTES,
  batchLayout,
  chunkRange,
  decodeBatchHeader,
  encodeBatchHeader,
  parseSealedHeader,
  sealBatch,
} from './batch.js';
import type { BatchHeaderInput } from './batch.js';
import { decodeReceipt, encodeReceipt, makeReceipt, verifyReceipt, RECEIPT_MAGIC } from './receipt.js';
import { ADMIN_COMMANDS, TOKEN_MAGIC, decodeAdminToken, makeAdminToken, verifyAdminToken } from './token.js';
import type { AdminTokenFields } from './token.js';
import { CryptoFormatError, ServiceAuthError } from './errors.js';
import {
  MAX_KEY_RANGES,
  SERVICE_HEADER_VERSION,
  decodeServiceHeader,
  encodeServiceHeader,
  keyBits,
  otpOpen,
  otpSeal,
  sessionOpen,
  sessionSeal,
} from './service.js';
import type { KeyRange, ServiceHeader } from './service.js';
import { TERMINAL_ID_RE } from './_util.js';
import type { ErrorClass } from '../test-support/mutate.js';
import { decodesCleanly, everyTruncation, hex, mutate, mutatedArb, mutationsArb, offsetView, randomWithPrefixArb, sameBytes } from '../test-support/mutate.js';

const RUNS = 400;
const ascii = (s: string) => new TextEncoder().encode(s);
const DEVICE_KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);

// ---- valid encodings

const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
const terminalIdArb = fc.string({ unit: fc.constantFrom(...ID_CHARS), minLength: 1, maxLength: 32 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

const headerInputArb: fc.Arbitrary<BatchHeaderInput> = fc.record({
  batchId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  terminalId: terminalIdArb,
  seq: u32,
  purpose: fc.constantFrom(...PURPOSES),
  bits: fc.integer({ min: 1, max: MAX_BATCH_BITS / 8 }).map((n) => n * 8),
  chunkSize: fc.integer({ min: 1, max: MAX_CHUNK_SIZE }),
  createdAt: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});
const headerBytesArb = headerInputArb.map(encodeBatchHeader);
/** Header, a tag, and the first bytes of the chunks: what parseSealedHeader reads from a file. */
const sealedPrefixArb = fc
  .tuple(headerBytesArb, fc.uint8Array({ minLength: TAG_BYTES, maxLength: TAG_BYTES }), fc.uint8Array({ maxLength: 48 }))
  .map(([h, tag, rest]) => Uint8Array.from([...h, ...tag, ...rest]));

const receiptArb = fc
  .record({
    terminalId: terminalIdArb,
    batchId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    seq: u32,
    bits: fc.integer({ min: 1, max: MAX_BATCH_BITS / 8 }).map((n) => n * 8),
    headerDigest: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  })
  .map((f) => encodeReceipt(makeReceipt(DEVICE_KEY, f)));

const tokenFieldsArb: fc.Arbitrary<AdminTokenFields> = fc.record({
  terminalId: terminalIdArb,
  command: fc.constantFrom(...ADMIN_COMMANDS),
  counter: fc.integer({ min: 1, max: 0xffffffff }),
});
const tokenArb = tokenFieldsArb.map((f) => makeAdminToken(DEVICE_KEY, f));

const rangeArb: fc.Arbitrary<KeyRange> = fc
  .tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: MAX_BATCH_BITS / 8 - 1 }), fc.integer({ min: 1, max: 4096 }))
  .map(([batchId, offBytes, lenBytes]) => {
    const bits = Math.min(lenBytes, MAX_BATCH_BITS / 8 - offBytes) * 8;
    return { batchId, bitOffset: offBytes * 8, bits };
  });
const serviceHeaderArb: fc.Arbitrary<ServiceHeader> = fc.oneof(
  fc.record({
    mode: fc.constant('aead' as const),
    counter: u32,
    keyIds: fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: MAX_BATCH_BITS / 8 - 32 })).map(([batchId, o]) => [{ batchId, bitOffset: o * 8, bits: 256 }]),
  }),
  fc.record({
    mode: fc.constant('otp' as const),
    counter: u32,
    keyIds: fc.array(rangeArb, { minLength: 1, maxLength: MAX_KEY_RANGES }),
  }).filter((h) => keyBits(h.keyIds) >= 256),
);
/** A whole service message: the header, then some sealed payload bytes. */
const serviceMessageArb = fc.tuple(serviceHeaderArb.map(encodeServiceHeader), fc.uint8Array({ maxLength: 64 })).map(([h, p]) => Uint8Array.from([...h, ...p]));

// ---- result checks: a decoder may only return what re-encodes to the bytes it read

function checkHeader(input: Uint8Array) {
  return (h: ReturnType<typeof decodeBatchHeader>) => {
    if (!sameBytes(encodeBatchHeader(h), input)) throw new Error(`decoded header does not re-encode to ${hex(input)}`);
  };
}

function checkSealed(input: Uint8Array) {
  return (info: ReturnType<typeof parseSealedHeader>) => {
    if (!sameBytes(encodeBatchHeader(info.header), info.headerBytes)) throw new Error('parsed header does not re-encode');
    if (!sameBytes(info.headerBytes, input.subarray(0, info.headerLength))) throw new Error('headerBytes is not the input prefix');
    if (!sameBytes(info.tag, input.subarray(info.headerLength, info.headerLength + TAG_BYTES))) throw new Error('tag is not the input bytes');
    const l = batchLayout(info.headerLength, info.header.bits, info.header.chunkSize);
    if (l.totalLength !== info.totalLength || info.chunkCount < 1 || info.chunksOffset !== info.headerLength + TAG_BYTES) throw new Error('layout inconsistent');
    chunkRange(info, info.chunkCount - 1);
  };
}

function checkReceipt(input: Uint8Array) {
  return (r: ReturnType<typeof decodeReceipt>) => {
    if (!sameBytes(encodeReceipt(r), input)) throw new Error(`decoded receipt does not re-encode to ${hex(input)}`);
  };
}

function checkToken(input: Uint8Array) {
  return (f: AdminTokenFields) => {
    if (!TERMINAL_ID_RE.test(f.terminalId) || !ADMIN_COMMANDS.includes(f.command) || !(f.counter >= 1 && f.counter <= 0xffffffff)) {
      throw new Error(`decoded token fields invalid: ${JSON.stringify(f)}`);
    }
    // The body re-encodes to the bytes read (makeAdminToken = body || MAC; the MAC is not checked here).
    const body = makeAdminToken(DEVICE_KEY, f).subarray(0, input.length - 32);
    if (!sameBytes(body, input.subarray(0, input.length - 32))) throw new Error(`decoded token does not re-encode to ${hex(input)}`);
  };
}

function checkService(input: Uint8Array) {
  return (r: ReturnType<typeof decodeServiceHeader>) => {
    if (!sameBytes(encodeServiceHeader(r.header), input.subarray(0, r.length))) throw new Error(`decoded service header does not re-encode to ${hex(input)}`);
  };
}

/** Random bytes, random bytes behind the right magic, mutated valid encodings, every truncation of one. */
function family<T>(
  t: Test,
  name: string,
  o: { decode: (b: Uint8Array) => T; errors: readonly ErrorClass[]; prefix: Uint8Array; valid: fc.Arbitrary<Uint8Array>; check: (input: Uint8Array) => (r: T) => void },
): void {
  // Each input is decoded twice, once as a view at an offset into a larger buffer: same outcome.
  const run = (b: Uint8Array) => {
    const r = decodesCleanly(b, o.decode, o.errors, o.check(b));
    const v = offsetView(b);
    if (!isDeepStrictEqual(decodesCleanly(v, o.decode, o.errors, o.check(v)), r)) throw new Error(`${hex(b)} decodes differently at a byte offset`);
    return r;
  };
  t.test(`${name}: ${RUNS} random inputs (half behind the magic)`, async (t) => {
    fc.assert(fc.property(randomWithPrefixArb(o.prefix), (b) => void run(b)), { numRuns: RUNS });
    t.pass(`${RUNS} runs`);
  });
  t.test(`${name}: ${RUNS} mutated valid encodings (flip, overwrite, truncate, extend, insert, delete)`, async (t) => {
    let accepted = 0;
    fc.assert(
      fc.property(mutatedArb(o.valid), ({ mutated }) => {
        if (run(mutated) !== undefined) accepted++;
      }),
      { numRuns: RUNS },
    );
    t.comment(`${accepted} of ${RUNS} mutants still decode (a flip in a free field is still a well-formed encoding)`);
    t.pass(`${RUNS} runs`);
  });
  t.test(`${name}: 20 valid encodings truncated at every length`, async (t) => {
    let n = 0;
    for (const v of fc.sample(o.valid, { numRuns: 20, seed: 8 })) {
      if (run(v) === undefined) throw new Error(`the valid encoding ${hex(v)} does not decode`);
      for (const cut of everyTruncation(v)) {
        run(cut);
        n++;
      }
    }
    t.pass(`${n} truncations`);
  });
}

family(t, 'decodeBatchHeader', {
  decode: decodeBatchHeader,
  errors: [BatchError],
  prefix: Uint8Array.from([...ascii(BATCH_MAGIC), 1]),
  valid: headerBytesArb,
  check: checkHeader,
});

family(t, 'parseSealedHeader', {
  decode: parseSealedHeader,
  errors: [BatchError],
  prefix: Uint8Array.from([...ascii(BATCH_MAGIC), 1]),
  valid: sealedPrefixArb,
  check: checkSealed,
});

family(t, 'decodeReceipt', {
  decode: decodeReceipt,
  errors: [CryptoFormatError],
  prefix: Uint8Array.from([...ascii(RECEIPT_MAGIC), 1]),
  valid: receiptArb,
  check: checkReceipt,
});

family(t, 'decodeAdminToken', {
  decode: decodeAdminToken,
  errors: [CryptoFormatError],
  prefix: Uint8Array.from([...ascii(TOKEN_MAGIC), 1]),
  valid: tokenArb,
  check: checkToken,
});

family(t, 'decodeServiceHeader', {
  decode: decodeServiceHeader,
  errors: [CryptoFormatError],
  prefix: Uint8Array.of(SERVICE_HEADER_VERSION),
  valid: serviceMessageArb,
  check: checkService,
});

// ---- authenticating decoders: a mutant is refused with the typed error, and never accepted

/** A small real batch: a few chunks, so that every chunk boundary gets mutated. */
const smallBatchArb = fc
  .record({
    batchId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    terminalId: terminalIdArb,
    seq: fc.integer({ min: 1, max: 0xffffffff }),
    purpose: fc.constantFrom(...PURPOSES),
    bits: fc.integer({ min: 1, max: 96 }).map((n) => n * 8),
    chunkSize: fc.integer({ min: 1, max: 40 }),
    createdAt: fc.integer({ min: 0, max: 2 ** 45 }),
  })
  .map((header) => ({ header, sealed: sealBatch({ deviceKey: DEVICE_KEY, header, keys: Uint8Array.from({ length: header.bits / 8 }, (_, i) => i) }) }));

t.test(`BatchOpener: ${RUNS} mutated headers and tags are refused with a BatchError, none accepted`, async (t) => {
  fc.assert(
    fc.property(smallBatchArb, mutationsArb(), fc.boolean(), ({ header, sealed }, ms, onTag) => {
      const info = parseSealedHeader(sealed);
      const headerBytes = onTag ? info.headerBytes : mutate(info.headerBytes, ms);
      const tag = onTag ? mutate(info.tag, ms) : info.tag;
      const unchanged = sameBytes(headerBytes, info.headerBytes) && sameBytes(tag, info.tag);
      const opener = decodesCleanly(offsetView(headerBytes), (h) => new BatchOpener(DEVICE_KEY, h, offsetView(tag), { expect: { terminalId: header.terminalId, lastSeq: 0 } }), [BatchError]);
      if (opener && !unchanged) throw new Error(`a forged header or tag was accepted: ${hex(headerBytes)} / ${hex(tag)}`);
      if (!opener && unchanged) throw new Error('the genuine header was refused');
      opener?.dispose();
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test(`BatchOpener.openChunk: ${RUNS} mutated chunks are refused with a BatchError and do not advance; the genuine chunk then opens`, async (t) => {
  fc.assert(
    fc.property(smallBatchArb, fc.nat(), mutationsArb(), ({ sealed }, pick, ms) => {
      const info = parseSealedHeader(sealed);
      const opener = new BatchOpener(DEVICE_KEY, info.headerBytes, info.tag);
      const target = pick % info.chunkCount;
      for (let i = 0; i < target; i++) {
        const r = chunkRange(info, i);
        opener.openChunk(i, sealed.subarray(r.start, r.end));
      }
      const r = chunkRange(info, target);
      const genuine = sealed.slice(r.start, r.end);
      const bad = mutate(genuine, ms);
      const plain = decodesCleanly(offsetView(bad), (c) => opener.openChunk(target, c), [BatchError]);
      if (plain && !sameBytes(bad, genuine)) throw new Error(`a mutated chunk ${target} opened`);
      if (!plain) {
        if (opener.nextIndex !== target) throw new Error(`a refused chunk moved the opener to ${opener.nextIndex}`);
        opener.openChunk(target, genuine);
      }
      // A chunk sent again, or one from further on, is refused as out of order, with the index unchanged.
      const again = decodesCleanly(genuine, (c) => opener.openChunk(target, c), [BatchError]);
      if (again || opener.nextIndex !== target + 1) throw new Error('a chunk opened twice');
      opener.dispose();
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test(`verifyAdminToken: ${RUNS} random and ${RUNS + RUNS / 4} mutated tokens give { ok: false, reason }, never a throw`, async (t) => {
  const expect = { terminalId: 'T-7', command: 'zeroize' as const };
  const genuine = makeAdminToken(DEVICE_KEY, { ...expect, counter: 9 });
  const verify = (b: Uint8Array) => {
    const r = decodesCleanly(b, (x) => verifyAdminToken(DEVICE_KEY, x, expect), []);
    if (!r) throw new Error('unreachable');
    if (r.ok && !sameBytes(b, genuine)) throw new Error(`a forged token verified: ${hex(b)}`);
    if (!r.ok && (typeof r.reason !== 'string' || r.reason === '')) throw new Error('a refusal without a reason');
  };
  fc.assert(fc.property(randomWithPrefixArb(Uint8Array.from([...ascii(TOKEN_MAGIC), 1])), verify), { numRuns: RUNS });
  fc.assert(fc.property(mutationsArb(), (ms) => verify(mutate(genuine, ms))), { numRuns: RUNS });
  fc.assert(fc.property(mutationsArb(), (ms) => verify(offsetView(mutate(genuine, ms)))), { numRuns: RUNS / 4 });
  for (const cut of everyTruncation(genuine)) verify(cut);
  if (!verifyAdminToken(DEVICE_KEY, offsetView(genuine), expect).ok) throw new Error('the genuine token at a byte offset was refused');
  t.pass(`${2 * RUNS + RUNS / 4} runs and every truncation`);
});

t.test(`verifyReceipt: ${RUNS} mutated receipts that still decode never verify`, async (t) => {
  const genuine = encodeReceipt(makeReceipt(DEVICE_KEY, { terminalId: 'T-7', batchId: new Uint8Array(16).fill(3), seq: 4, bits: 64, headerDigest: new Uint8Array(32).fill(5) }));
  let decoded = 0;
  fc.assert(
    fc.property(mutationsArb(), (ms) => {
      const bad = mutate(genuine, ms);
      const r = decodesCleanly(bad, decodeReceipt, [CryptoFormatError]);
      if (!r) return;
      decoded++;
      if (verifyReceipt(DEVICE_KEY, r) !== sameBytes(bad, genuine)) throw new Error(`verifyReceipt wrong on ${hex(bad)}`);
    }),
    { numRuns: RUNS },
  );
  t.comment(`${decoded} of ${RUNS} mutants decoded, all refused by the MAC`);
  t.pass(`${RUNS} runs`);
});

t.test(`otpOpen and sessionOpen: ${RUNS} mutated messages each throw ServiceAuthError, never decrypt`, async (t) => {
  const pad = Uint8Array.from({ length: 48 }, (_, i) => (i * 31) & 0xff);
  const macKey = Uint8Array.from({ length: 32 }, (_, i) => i + 100);
  const plaintext = Uint8Array.from({ length: 48 }, (_, i) => i);
  const aad = Uint8Array.of(1, 2, 3);
  const otp = otpSeal(pad, plaintext, macKey, aad);
  const aead = sessionSeal(DEVICE_KEY, 7, plaintext, aad, 'up');
  fc.assert(
    fc.property(mutationsArb(), (ms) => {
      const bad = mutate(otp, ms);
      // The caller takes a pad as long as the message says (its header's key ranges): the same length here.
      const keyStream = Uint8Array.from({ length: Math.max(0, bad.length - 16) }, (_, i) => pad[i] ?? 0);
      const out = decodesCleanly(offsetView(bad), (m) => otpOpen(keyStream, m, macKey, aad), [ServiceAuthError]);
      if (out && !sameBytes(bad, otp)) throw new Error(`a mutated OTP message opened: ${hex(bad)}`);
      const badA = mutate(aead, ms);
      const outA = decodesCleanly(offsetView(badA), (m) => sessionOpen(DEVICE_KEY, 7, m, aad, 'up'), [ServiceAuthError]);
      if (outA && !sameBytes(badA, aead)) throw new Error(`a mutated AEAD message opened: ${hex(badA)}`);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test('header fields at their edges: every length and purpose byte, bits, chunk sizes and dates around their limits', async (t) => {
  // Directed cases next to the random ones: every value of the purpose and length bytes, and the
  // u32/u64 fields at and around their documented limits.
  const base = encodeBatchHeader({ batchId: new Uint8Array(16), terminalId: 'T1', seq: 1, purpose: 'any', bits: 64, chunkSize: 16, createdAt: 0 });
  const variants: Uint8Array[] = [];
  for (let v = 0; v < 256; v++) {
    for (const at of [5, HEADER_FIXED_BYTES - 1]) {
      const b = base.slice();
      b[at] = v;
      variants.push(b);
    }
  }
  const edge = (at: number, value: bigint, width: 4 | 8) => {
    const b = base.slice();
    const dv = new DataView(b.buffer);
    if (width === 4) dv.setUint32(at, Number(value), false);
    else dv.setBigUint64(at, value, false);
    variants.push(b);
  };
  for (const v of [0, 1, 7, 8, 9, MAX_BATCH_BITS - 8, MAX_BATCH_BITS, MAX_BATCH_BITS + 8, 0xffffffff]) edge(26, BigInt(v), 4);
  for (const v of [0, 1, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE + 1, 0xffffffff]) edge(30, BigInt(v), 4);
  for (const v of [0n, BigInt(Number.MAX_SAFE_INTEGER), BigInt(Number.MAX_SAFE_INTEGER) + 1n, 2n ** 64n - 1n]) edge(34, v, 8);
  let decoded = 0;
  for (const b of variants) {
    if (decodesCleanly(b, decodeBatchHeader, [BatchError], checkHeader(b))) decoded++;
    decodesCleanly(Uint8Array.from([...b, ...new Uint8Array(TAG_BYTES)]), parseSealedHeader, [BatchError]);
  }
  // In range: purposes 1-3; length byte 2 only (the id is 'T1'); bits 8, 2^23-8, 2^23; chunk sizes 1, 65536; dates 0, 2^53-1.
  t.equal(decoded, 3 + 1 + 3 + 2 + 2, 'exactly the in-range values decode');
  t.pass(`${variants.length} edge values`);
});
