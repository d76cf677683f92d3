// Sealed batch v1: frozen fixture, node:crypto cross-check, streaming by chunk offsets, tamper
// tests (each to its typed error), zeroization, and no key bytes in any error message.
import t from 'tap';
import type { Test } from 'tap';
import { createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import {
  BatchAuthError,
  BatchError,
  BatchFormatError,
  BatchOpener,
  BatchRejectedError,
  MAX_BATCH_BITS,
  TAG_BYTES,
  batchKeyIds,
  batchLayout,
  chunkRange,
  decodeBatchHeader,
  encodeBatchHeader,
  parseSealedHeader,
  sealBatch,
} from './batch.js';
import type { BatchHeaderInput, Purpose } from './batch.js';
import { deriveBatchKey } from './kdf.js';
import { hex, loadJson, toHex } from '../../fixtures/crypto/load.js';

interface SealedFixture {
  deviceKey: string;
  header: { version: 1; batchId: string; terminalId: string; seq: number; purpose: Purpose; bits: number; chunkSize: number; createdAt: number };
  keys: string;
  headerBytes: string;
  headerDigest: string;
  headerTag: string;
  chunks: string[];
  sealed: string;
}
const fx = loadJson<SealedFixture>('sealed-batch.json');
const fxHeader: BatchHeaderInput = { ...fx.header, batchId: hex(fx.header.batchId) };

const rand = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function makeBatch(o: Partial<BatchHeaderInput> = {}, deviceKey = rand(32)) {
  const header: BatchHeaderInput = {
    batchId: rand(16),
    terminalId: 'T-42',
    seq: 3,
    purpose: 'any',
    bits: 8 * 1000,
    chunkSize: 256,
    createdAt: 1_767_225_600_000,
    ...o,
  };
  const keys = rand(header.bits / 8);
  return { deviceKey, header, keys, sealed: sealBatch({ deviceKey, header, keys }) };
}

/** Open a whole sealed file the way the module does: header, tag, then chunk by chunk. */
function openAll(deviceKey: Uint8Array, sealed: Uint8Array, opts?: ConstructorParameters<typeof BatchOpener>[3]): Uint8Array {
  const info = parseSealedHeader(sealed);
  const op = new BatchOpener(deviceKey, info.headerBytes, info.tag, opts);
  try {
    const parts: Uint8Array[] = [];
    for (let i = op.nextIndex; i < info.chunkCount; i++) {
      const { start, end } = chunkRange(info, i);
      parts.push(op.openChunk(i, sealed.subarray(start, end)));
    }
    op.finish();
    return new Uint8Array(Buffer.concat(parts));
  } finally {
    op.dispose();
  }
}

t.test('frozen fixture: sealBatch reproduces the bytes exactly; the module opens them', async (t) => {
  const dk = hex(fx.deviceKey);
  const sealed = sealBatch({ deviceKey: dk, header: fxHeader, keys: hex(fx.keys) });
  t.equal(toHex(sealed), fx.sealed, 'format has not drifted');
  t.equal(toHex(encodeBatchHeader(fxHeader)), fx.headerBytes);
  const info = parseSealedHeader(hex(fx.sealed));
  t.equal(toHex(info.headerBytes), fx.headerBytes);
  t.equal(toHex(info.tag), fx.headerTag);
  t.equal(toHex(info.headerDigest), fx.headerDigest);
  t.same({ ...info.header, batchId: toHex(info.header.batchId) }, fx.header);
  t.equal(info.chunkCount, fx.chunks.length);
  t.equal(info.totalLength, sealed.length);
  fx.chunks.forEach((c, i) => {
    const { start, end } = chunkRange(info, i);
    t.equal(toHex(sealed.subarray(start, end)), c, `chunk ${i} at its documented offset`);
  });
  t.equal(toHex(openAll(dk, sealed)), fx.keys);
});

t.test('header layout: offsets as documented', async (t) => {
  const hb = hex(fx.headerBytes);
  t.equal(Buffer.from(hb.subarray(0, 4)).toString(), 'QKTB');
  t.equal(hb[4], 1, 'version');
  t.equal(hb[5], 1, 'purpose enc = 1');
  t.equal(toHex(hb.subarray(6, 22)), fx.header.batchId);
  t.equal(Buffer.from(hb).readUInt32BE(22), 7, 'seq');
  t.equal(Buffer.from(hb).readUInt32BE(26), 800, 'bits');
  t.equal(Buffer.from(hb).readUInt32BE(30), 32, 'chunkSize');
  t.equal(Number(Buffer.from(hb).readBigUInt64BE(34)), 1767225600000, 'createdAt');
  t.equal(hb[42], fx.header.terminalId.length);
  t.equal(Buffer.from(hb.subarray(43)).toString(), fx.header.terminalId);
  t.equal(hb.length, 43 + fx.header.terminalId.length);
});

t.test('cross-check: node:crypto opens random batches by the documented rules', async (t) => {
  for (const [bits, chunkSize] of [[8, 1], [8 * 4096, 4096], [8 * 5000, 4096], [8 * 77, 16], [8 * 300, 65536]] as const) {
    const b = makeBatch({ bits, chunkSize });
    const info = parseSealedHeader(b.sealed);
    const key = hkdfSync('sha256', b.deviceKey, Buffer.from('qkt device key v1'), Buffer.concat([Buffer.from('qkt/v1 batch key\0'), b.header.batchId]), 32);
    const nonce = (d: number, i: number) => Buffer.concat([Buffer.from([0, 0, 0, d]), Buffer.alloc(4), Buffer.from([i >>> 24, (i >>> 16) & 255, (i >>> 8) & 255, i & 255])]);
    // Header tag: GCM over an empty plaintext with the header as AAD.
    const h = createDecipheriv('aes-256-gcm', Buffer.from(key), nonce(0, 0));
    h.setAAD(info.headerBytes);
    h.setAuthTag(info.tag);
    h.final();
    const digest = createHash('sha256').update(info.headerBytes).digest();
    const out: Buffer[] = [];
    for (let i = 0; i < info.chunkCount; i++) {
      const { start, end } = chunkRange(info, i);
      const c = createDecipheriv('aes-256-gcm', Buffer.from(key), nonce(1, i));
      c.setAAD(Buffer.concat([digest, Buffer.from([i >>> 24, (i >>> 16) & 255, (i >>> 8) & 255, i & 255, i === info.chunkCount - 1 ? 1 : 0])]));
      c.setAuthTag(b.sealed.subarray(end - 16, end));
      out.push(c.update(b.sealed.subarray(start, end - 16)), c.final());
    }
    t.equal(Buffer.concat(out).toString('hex'), toHex(b.keys), `bits=${bits} chunkSize=${chunkSize}`);
    t.equal(toHex(openAll(b.deviceKey, b.sealed)), toHex(b.keys));
  }
});

t.test('layout: geometry, last partial chunk, maximum batch', async (t) => {
  const l = batchLayout(50, 8 * 10000, 4096);
  t.same(l, { headerLength: 50, tagOffset: 50, chunksOffset: 66, chunkCount: 3, sealedChunkSize: 4112, lastSealedChunkSize: 1808 + 16, totalLength: 66 + 10000 + 48 });
  t.same(chunkRange(l, 2), { start: 66 + 2 * 4112, end: 66 + 2 * 4112 + 1824 });
  t.throws(() => chunkRange(l, 3), RangeError);
  const big = makeBatch({ bits: MAX_BATCH_BITS, chunkSize: 4096 });
  t.equal(parseSealedHeader(big.sealed).chunkCount, 256);
  t.equal(big.sealed.length, 1024 * 1024 + 256 * TAG_BYTES + 16 + 43 + 4);
  t.equal(toHex(openAll(big.deviceKey, big.sealed)), toHex(big.keys), '1 MiB of key material round-trips');
  t.same(batchKeyIds(big.header as never), { batchId: big.header.batchId, firstBitOffset: 0, endBitOffset: MAX_BATCH_BITS });
});

t.test('parseSealedHeader needs only the prefix', async (t) => {
  const b = makeBatch();
  const info = parseSealedHeader(b.sealed.subarray(0, 43 + 4 + 16));
  t.equal(info.totalLength, b.sealed.length);
  t.throws(() => parseSealedHeader(b.sealed.subarray(0, 43 + 4 + 15)), { name: 'BatchFormatError', code: 'truncated' });
  t.throws(() => parseSealedHeader(b.sealed.subarray(0, 20)), { name: 'BatchFormatError', code: 'truncated' });
});

t.test('resume at a committed chunk', async (t) => {
  const b = makeBatch({ bits: 8 * 1024, chunkSize: 100 });
  const info = parseSealedHeader(b.sealed);
  const got = openAll(b.deviceKey, b.sealed, { resumeAt: 4 });
  t.equal(toHex(got), toHex(b.keys.subarray(400)));
  t.throws(() => new BatchOpener(b.deviceKey, info.headerBytes, info.tag, { resumeAt: info.chunkCount + 1 }), RangeError);
});

// ---- tamper tests ---------------------------------------------------------------------------

const errors: Error[] = [];
function expectError(t: Test, fn: () => unknown, type: new (...a: never[]) => BatchError, code: string, what: string): void {
  try {
    fn();
    t.fail(`${what}: no error`);
  } catch (e) {
    errors.push(e as Error);
    t.ok(e instanceof type && (e as BatchError).code === code, `${what}: ${(e as Error).name}/${(e as BatchError).code}`);
  }
}

const tb = makeBatch({ bits: 8 * 700, chunkSize: 200, terminalId: 'T-tamper' });
const tinfo = parseSealedHeader(tb.sealed);

t.test('every header byte flipped: refused before any chunk', async (t) => {
  for (let i = 0; i < tinfo.headerLength; i++) {
    const hb = tinfo.headerBytes.slice();
    hb[i]! ^= 0x01;
    let err: unknown;
    try {
      new BatchOpener(tb.deviceKey, hb, tinfo.tag);
    } catch (e) {
      err = e;
      errors.push(e as Error);
    }
    // A flip either breaks the structure (format) or yields a well-formed header the tag refuses.
    t.ok(err instanceof BatchFormatError || (err instanceof BatchAuthError && err.code === 'header-auth'), `byte ${i}: ${(err as Error)?.name}`);
  }
});

t.test('every tag byte flipped: BatchAuthError header-auth', async (t) => {
  for (let i = 0; i < TAG_BYTES; i++) {
    const tag = tinfo.tag.slice();
    tag[i]! ^= 0x80;
    expectError(t, () => new BatchOpener(tb.deviceKey, tinfo.headerBytes, tag), BatchAuthError, 'header-auth', `tag byte ${i}`);
  }
  expectError(t, () => new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag.subarray(1)), BatchFormatError, 'bad-length', 'short tag');
});

t.test('any chunk byte flipped: chunk-auth, and the opener does not advance', async (t) => {
  for (let c = 0; c < tinfo.chunkCount; c++) {
    const { start, end } = chunkRange(tinfo, c);
    // All bytes of the first and last chunk; a sample of the others keeps the suite quick.
    const positions = c === 0 || c === tinfo.chunkCount - 1 ? [...Array(end - start).keys()] : [0, 17, end - start - 17, end - start - 1];
    const op = new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { resumeAt: c });
    for (const p of positions) {
      const chunk = tb.sealed.slice(start, end);
      chunk[p]! ^= 0x04;
      expectError(t, () => op.openChunk(c, chunk), BatchAuthError, 'chunk-auth', `chunk ${c} byte ${p}`);
      t.equal(op.nextIndex, c);
    }
    t.equal(toHex(op.openChunk(c, tb.sealed.subarray(start, end))), toHex(tb.keys.subarray(c * 200, c * 200 + 200)), 'the intact chunk still opens');
    op.dispose();
  }
});

t.test('reordered chunks, wrong index, truncation, chunk from another batch', async (t) => {
  const c0 = chunkRange(tinfo, 0);
  const c1 = chunkRange(tinfo, 1);
  const op = new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag);
  expectError(t, () => op.openChunk(0, tb.sealed.subarray(c1.start, c1.end)), BatchAuthError, 'chunk-auth', 'chunk 1 presented as chunk 0');
  expectError(t, () => op.openChunk(1, tb.sealed.subarray(c1.start, c1.end)), BatchFormatError, 'out-of-order', 'skipping chunk 0');
  t.throws(() => op.openChunk(-1, tb.sealed.subarray(c0.start, c0.end)), { name: 'RangeError', message: /index/ }, 'negative index is a caller bug');
  op.openChunk(0, tb.sealed.subarray(c0.start, c0.end));
  expectError(t, () => op.openChunk(0, tb.sealed.subarray(c0.start, c0.end)), BatchFormatError, 'out-of-order', 'chunk 0 replayed');
  expectError(t, () => op.finish(), BatchFormatError, 'incomplete', 'finish after 1 of 4 chunks');
  expectError(t, () => op.openChunk(1, tb.sealed.subarray(c1.start, c1.end - 1)), BatchFormatError, 'bad-length', 'cut chunk');
  op.dispose();

  // Truncation at the end: the file cut inside the final chunk, or the final chunk missing.
  const last = tinfo.chunkCount - 1;
  const lr = chunkRange(tinfo, last);
  const op2 = new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { resumeAt: last });
  expectError(t, () => op2.openChunk(last, tb.sealed.subarray(lr.start, tb.sealed.length - 5)), BatchFormatError, 'bad-length', 'file cut in the final chunk');
  // A full-size non-final chunk offered in the final slot (as if the batch had been re-cut) fails its tag.
  const b2 = makeBatch({ bits: 8 * 800, chunkSize: 200, terminalId: 'T-tamper' }, tb.deviceKey);
  const i2 = parseSealedHeader(b2.sealed);
  const op3 = new BatchOpener(tb.deviceKey, i2.headerBytes, i2.tag, { resumeAt: 3 });
  const r2 = chunkRange(i2, 2);
  expectError(t, () => op3.openChunk(3, b2.sealed.subarray(r2.start, r2.end)), BatchAuthError, 'chunk-auth', 'non-final chunk as final');
  const fromTb = chunkRange(tinfo, 2);
  expectError(t, () => op3.openChunk(3, tb.sealed.subarray(fromTb.start, fromTb.end)), BatchAuthError, 'chunk-auth', 'chunk of another batch (same device key)');
  op2.dispose();
  op3.dispose();
});

t.test("another terminal's device key; authentic but wrong terminal or stale seq", async (t) => {
  expectError(t, () => new BatchOpener(rand(32), tinfo.headerBytes, tinfo.tag), BatchAuthError, 'header-auth', 'wrong device key');
  expectError(t, () => openAll(rand(32), tb.sealed), BatchAuthError, 'header-auth', 'wrong device key, whole file');
  expectError(
    t,
    () => new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { expect: { terminalId: 'T-other' } }),
    BatchRejectedError,
    'wrong-terminal',
    'addressed to another terminal',
  );
  expectError(t, () => new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { expect: { lastSeq: 3 } }), BatchRejectedError, 'stale-seq', 'seq == last');
  expectError(t, () => new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { expect: { lastSeq: 9 } }), BatchRejectedError, 'stale-seq', 'seq < last');
  const ok = new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag, { expect: { terminalId: 'T-tamper', lastSeq: 2 } });
  t.equal(ok.header.seq, 3);
  ok.dispose();
});

t.test('malformed headers: BatchFormatError with a code', async (t) => {
  const hb = tinfo.headerBytes;
  const mut = (f: (b: Uint8Array) => void) => {
    const c = hb.slice();
    f(c);
    return c;
  };
  const cases: Array<[string, Uint8Array, string]> = [
    ['magic', mut((b) => (b[0] = 0x58)), 'bad-magic'],
    ['version 2', mut((b) => (b[4] = 2)), 'bad-version'],
    ['purpose 0', mut((b) => (b[5] = 0)), 'bad-field'],
    ['bits 0', mut((b) => b.fill(0, 26, 30)), 'bad-field'],
    ['bits not /8', mut((b) => (b[29] = b[29]! | 1)), 'bad-field'],
    ['chunkSize 0', mut((b) => b.fill(0, 30, 34)), 'bad-field'],
    ['terminal id char', mut((b) => (b[43] = 0x20)), 'bad-field'],
    ['id length longer than bytes', mut((b) => (b[42] = b[42]! + 1)), 'bad-length'],
    ['createdAt > 2^53', mut((b) => b.fill(0xff, 34, 42)), 'bad-field'],
  ];
  for (const [name, bytes, code] of cases) expectError(t, () => decodeBatchHeader(bytes), BatchFormatError, code, name);
  expectError(t, () => decodeBatchHeader(new Uint8Array(hb.length + 1).fill(0x51)), BatchFormatError, 'bad-magic', 'garbage');
});

t.test('validation at the public entry names the parameter', async (t) => {
  const base = { deviceKey: rand(32), header: { ...tb.header }, keys: rand(700) };
  t.throws(() => sealBatch({ ...base, deviceKey: rand(16) }), { name: 'RangeError', message: /deviceKey must be 32 bytes/ });
  t.throws(() => sealBatch({ ...base, keys: rand(699) }), { name: 'RangeError', message: /keys must be 700 bytes/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, bits: 12 } }), { name: 'RangeError', message: /header\.bits/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, bits: MAX_BATCH_BITS + 8 } }), { name: 'RangeError', message: /header\.bits/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, terminalId: 'x'.repeat(33) } }), { name: 'RangeError', message: /header\.terminalId/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, terminalId: 'ter minal' } }), { name: 'RangeError', message: /header\.terminalId/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, seq: 2 ** 32 } }), { name: 'RangeError', message: /header\.seq/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, purpose: 'sign' as Purpose } }), { name: 'RangeError', message: /header\.purpose/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, chunkSize: 65537 } }), { name: 'RangeError', message: /header\.chunkSize/ });
  t.throws(() => sealBatch({ ...base, header: { ...base.header, batchId: 'ab' as unknown as Uint8Array } }), { name: 'TypeError', message: /header\.batchId/ });
  t.throws(() => new BatchOpener(rand(32), 'x' as unknown as Uint8Array, tinfo.tag), { name: 'TypeError', message: /headerBytes/ });
});

t.test('dispose zero-fills the derived batch key', async (t) => {
  const op = new BatchOpener(tb.deviceKey, tinfo.headerBytes, tinfo.tag);
  const internal = (op as unknown as { _key: Uint8Array })._key;
  t.equal(toHex(internal), toHex(deriveBatchKey(tb.deviceKey, tb.header.batchId)), 'holds the batch key while open');
  op.dispose();
  t.ok(internal.every((b) => b === 0), 'all zero after dispose');
  t.ok(op.disposed);
  const c0 = chunkRange(tinfo, 0);
  expectError(t, () => op.openChunk(0, tb.sealed.subarray(c0.start, c0.end)), BatchFormatError, 'disposed', 'open after dispose');
  op.dispose();
});

t.test('no error message contains key bytes', async (t) => {
  t.ok(errors.length > 100, `${errors.length} errors collected`);
  const secrets = [tb.deviceKey, deriveBatchKey(tb.deviceKey, tb.header.batchId), tb.keys.subarray(0, 32)];
  for (const s of secrets) {
    const needles = [toHex(s), toHex(s.subarray(0, 4)), Buffer.from(s).toString('base64').slice(0, 8)];
    for (const e of errors) {
      const text = `${e.name} ${e.message} ${String(e.stack)}`;
      for (const n of needles) t.notOk(text.toLowerCase().includes(n.toLowerCase()), `no ${n.slice(0, 6)}… in "${e.message}"`, { diagnostic: false });
    }
  }
});
