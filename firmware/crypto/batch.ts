// The sealed batch format v1 (docs/batch.md, "Sealed batch"): a fixed binary header, a header tag,
// then the key material in AES-256-GCM (NIST SP 800-38D) chunks under a per-batch HKDF key.
// The carrier/laptop can parse the header (non-secret); only the module with the device key opens it.
import { gcm } from '@noble/ciphers/aes.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { deriveBatchKey, BATCH_ID_BYTES } from './kdf.js';
import { BatchAuthError, BatchFormatError, BatchRejectedError } from './errors.js';
import {
  DEVICE_KEY_BYTES,
  TERMINAL_ID_RE,
  abytes,
  aint,
  aoneOf,
  aterminalId,
  ascii,
  concat,
  fromAscii,
  u32be,
  u64be,
  u8,
  wipe,
} from './_util.js';

export { BatchError, BatchAuthError, BatchFormatError, BatchRejectedError } from './errors.js';
export type { BatchErrorCode } from './errors.js';

export const BATCH_MAGIC = 'QKTB';
export const BATCH_FORMAT_VERSION = 1;
/** Bytes of the header before the terminal id. */
export const HEADER_FIXED_BYTES = 43;
export const TAG_BYTES = 16;
/** 8 Mbit = 2^23 bits = 1 MiB of key material (DESIGN.md, "Units"). */
export const MAX_BATCH_BITS = 2 ** 23;
/** The module holds one chunk in RAM; 64 KiB bounds that buffer. */
export const MAX_CHUNK_SIZE = 65536;
export const DEFAULT_CHUNK_SIZE = 4096;

export type Purpose = 'enc' | 'auth' | 'any';
export const PURPOSES: readonly Purpose[] = ['enc', 'auth', 'any'];
// Wire codes start at 1 so an erased (0x00) or blank byte never decodes as a purpose.
const PURPOSE_CODE: Record<Purpose, number> = { enc: 1, auth: 2, any: 3 };

// GCM nonces (SP 800-38D §8.2.1, deterministic construction): 4-byte field = domain, 8-byte
// invocation field = index. The key is unique per batch (HKDF over a random 128-bit batch id), so
// (key, nonce) never repeats: one header tag (domain 0) and one nonce per chunk index (domain 1).
const NONCE_DOMAIN_HEADER = 0;
const NONCE_DOMAIN_CHUNK = 1;

export interface BatchHeader {
  version: 1;
  /** 16 random bytes from the KMD; names the batch and, with a bit offset, each key in it. */
  batchId: Uint8Array;
  terminalId: string;
  /** Anti-rollback counter: the module accepts only seq > its last accepted seq. u32. */
  seq: number;
  purpose: Purpose;
  /** Key bits in the batch: multiple of 8, 1..2^23 (as 8..8388608). Key ids are (batchId, 0..bits-1). */
  bits: number;
  /** Plaintext bytes per chunk (the last chunk may be shorter), 1..65536. */
  chunkSize: number;
  /** Milliseconds since the Unix epoch, UTC, when the KMD sealed the batch. */
  createdAt: number;
}

export type BatchHeaderInput = Omit<BatchHeader, 'version'> & { version?: 1 };

/** Byte geometry of a sealed batch: what a transfer needs to stream it chunk by chunk. */
export interface BatchLayout {
  headerLength: number;
  tagOffset: number;
  chunksOffset: number;
  chunkCount: number;
  /** Sealed bytes of every chunk but the last: chunkSize + 16. */
  sealedChunkSize: number;
  lastSealedChunkSize: number;
  totalLength: number;
}

export interface SealedHeaderInfo extends BatchLayout {
  header: BatchHeader;
  headerBytes: Uint8Array;
  tag: Uint8Array;
  /** SHA-256 of headerBytes: bound into every chunk and into the receipt. */
  headerDigest: Uint8Array;
}

function validateHeader(h: BatchHeaderInput): BatchHeader {
  if (h === null || typeof h !== 'object') throw new TypeError('header must be an object');
  if (h.version !== undefined && h.version !== BATCH_FORMAT_VERSION) {
    throw new RangeError(`header.version must be ${BATCH_FORMAT_VERSION}`);
  }
  abytes(h.batchId, 'header.batchId', BATCH_ID_BYTES);
  aterminalId(h.terminalId, 'header.terminalId');
  aint(h.seq, 'header.seq', 0, 0xffffffff);
  aoneOf(h.purpose, 'header.purpose', PURPOSES);
  aint(h.bits, 'header.bits', 8, MAX_BATCH_BITS);
  if (h.bits % 8 !== 0) throw new RangeError('header.bits must be a multiple of 8');
  aint(h.chunkSize, 'header.chunkSize', 1, MAX_CHUNK_SIZE);
  aint(h.createdAt, 'header.createdAt', 0, Number.MAX_SAFE_INTEGER);
  return {
    version: 1,
    batchId: h.batchId,
    terminalId: h.terminalId,
    seq: h.seq,
    purpose: h.purpose,
    bits: h.bits,
    chunkSize: h.chunkSize,
    createdAt: h.createdAt,
  };
}

/** Encode a header (layout in docs/batch.md). Throws TypeError/RangeError on a bad field. */
export function encodeBatchHeader(header: BatchHeaderInput): Uint8Array {
  const h = validateHeader(header);
  const tid = ascii(h.terminalId);
  return concat(
    ascii(BATCH_MAGIC),
    u8(BATCH_FORMAT_VERSION),
    u8(PURPOSE_CODE[h.purpose]),
    h.batchId,
    u32be(h.seq),
    u32be(h.bits),
    u32be(h.chunkSize),
    u64be(h.createdAt),
    u8(tid.length),
    tid,
  );
}

/** Length of the encoded header at the start of `bytes`, from its length byte; checks the magic. */
function headerLengthOf(bytes: Uint8Array): number {
  if (bytes.length < HEADER_FIXED_BYTES) {
    throw new BatchFormatError('truncated', `header needs ${HEADER_FIXED_BYTES} bytes, got ${bytes.length}`);
  }
  if (fromAscii(bytes.subarray(0, 4)) !== BATCH_MAGIC) throw new BatchFormatError('bad-magic', 'not a qkt sealed batch');
  if (bytes[4] !== BATCH_FORMAT_VERSION) {
    throw new BatchFormatError('bad-version', `batch format version ${bytes[4]} not supported`);
  }
  return HEADER_FIXED_BYTES + bytes[HEADER_FIXED_BYTES - 1]!;
}

/** Decode exactly one encoded header. Untrusted input: every failure is a BatchFormatError. */
export function decodeBatchHeader(headerBytes: Uint8Array): BatchHeader {
  abytes(headerBytes, 'headerBytes');
  const len = headerLengthOf(headerBytes);
  if (headerBytes.length !== len) {
    throw new BatchFormatError('bad-length', `header is ${len} bytes, got ${headerBytes.length}`);
  }
  const v = new DataView(headerBytes.buffer, headerBytes.byteOffset, headerBytes.byteLength);
  const purposeCode = headerBytes[5];
  const purpose = PURPOSES.find((p) => PURPOSE_CODE[p] === purposeCode);
  if (!purpose) throw new BatchFormatError('bad-field', `purpose code ${purposeCode} unknown`);
  const createdAt = v.getBigUint64(34, false);
  const terminalId = fromAscii(headerBytes.subarray(HEADER_FIXED_BYTES));
  const h = {
    version: 1 as const,
    batchId: headerBytes.slice(6, 22),
    seq: v.getUint32(22, false),
    bits: v.getUint32(26, false),
    chunkSize: v.getUint32(30, false),
    createdAt: Number(createdAt),
    terminalId,
    purpose,
  };
  if (!TERMINAL_ID_RE.test(terminalId)) throw new BatchFormatError('bad-field', 'terminal id is not 1-32 chars of [A-Za-z0-9._-]');
  if (h.bits === 0 || h.bits > MAX_BATCH_BITS || h.bits % 8 !== 0) {
    throw new BatchFormatError('bad-field', `bits ${h.bits} not a multiple of 8 in [8, ${MAX_BATCH_BITS}]`);
  }
  if (h.chunkSize === 0 || h.chunkSize > MAX_CHUNK_SIZE) {
    throw new BatchFormatError('bad-field', `chunkSize ${h.chunkSize} not in [1, ${MAX_CHUNK_SIZE}]`);
  }
  if (createdAt > BigInt(Number.MAX_SAFE_INTEGER)) throw new BatchFormatError('bad-field', 'createdAt out of range');
  return h;
}

/** Geometry of a sealed batch from its header length, bit count and chunk size. */
export function batchLayout(headerLength: number, bits: number, chunkSize: number): BatchLayout {
  aint(headerLength, 'headerLength', HEADER_FIXED_BYTES + 1, HEADER_FIXED_BYTES + 32);
  aint(bits, 'bits', 8, MAX_BATCH_BITS);
  aint(chunkSize, 'chunkSize', 1, MAX_CHUNK_SIZE);
  const keyBytes = Math.ceil(bits / 8);
  const chunkCount = Math.ceil(keyBytes / chunkSize);
  const lastPlain = keyBytes - (chunkCount - 1) * chunkSize;
  const chunksOffset = headerLength + TAG_BYTES;
  return {
    headerLength,
    tagOffset: headerLength,
    chunksOffset,
    chunkCount,
    sealedChunkSize: chunkSize + TAG_BYTES,
    lastSealedChunkSize: lastPlain + TAG_BYTES,
    totalLength: chunksOffset + keyBytes + chunkCount * TAG_BYTES,
  };
}

/** Byte range [start, end) of sealed chunk `index` inside the sealed batch file. */
export function chunkRange(layout: BatchLayout, index: number): { start: number; end: number } {
  aint(index, 'index', 0, layout.chunkCount - 1);
  const start = layout.chunksOffset + index * layout.sealedChunkSize;
  const end = start + (index === layout.chunkCount - 1 ? layout.lastSealedChunkSize : layout.sealedChunkSize);
  return { start, end };
}

function nonce(domain: number, index: number): Uint8Array {
  return concat(u32be(domain), u64be(index));
}

/** Chunk AAD: header digest, chunk index, final flag (a cut or reordered stream fails its tag). */
function chunkAad(headerDigest: Uint8Array, index: number, final: boolean): Uint8Array {
  return concat(headerDigest, u32be(index), u8(final ? 1 : 0));
}

/**
 * Seal a batch for one terminal: the whole file as it sits on the carrier. Pure: the batch id (the
 * only randomness) comes in the header. `keys` is bits/8 bytes of key material; the caller wipes it.
 */
export function sealBatch(args: { deviceKey: Uint8Array; header: BatchHeaderInput; keys: Uint8Array }): Uint8Array {
  if (args === null || typeof args !== 'object') throw new TypeError('sealBatch expects { deviceKey, header, keys }');
  abytes(args.deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  const headerBytes = encodeBatchHeader(args.header);
  const h = validateHeader(args.header);
  abytes(args.keys, 'keys', h.bits / 8);
  const layout = batchLayout(headerBytes.length, h.bits, h.chunkSize);
  const digest = sha256(headerBytes);
  const key = deriveBatchKey(args.deviceKey, h.batchId);
  try {
    const out = new Uint8Array(layout.totalLength);
    out.set(headerBytes, 0);
    // Header tag = GMAC: GCM with empty plaintext and the header as AAD (SP 800-38D §3).
    out.set(gcm(key, nonce(NONCE_DOMAIN_HEADER, 0), headerBytes).encrypt(new Uint8Array(0)), layout.tagOffset);
    for (let i = 0; i < layout.chunkCount; i++) {
      const final = i === layout.chunkCount - 1;
      const plain = args.keys.subarray(i * h.chunkSize, Math.min((i + 1) * h.chunkSize, args.keys.length));
      const sealed = gcm(key, nonce(NONCE_DOMAIN_CHUNK, i), chunkAad(digest, i, final)).encrypt(plain);
      out.set(sealed, chunkRange(layout, i).start);
    }
    return out;
  } finally {
    wipe(key);
  }
}

/**
 * Read the non-secret part of a sealed batch: header, tag and geometry. `bytes` may be only a
 * prefix of the file (header + tag suffice). Nothing here is authenticated yet: only the module,
 * with the device key, can trust these fields (BatchOpener).
 */
export function parseSealedHeader(bytes: Uint8Array): SealedHeaderInfo {
  abytes(bytes, 'bytes');
  const headerLength = headerLengthOf(bytes);
  if (bytes.length < headerLength + TAG_BYTES) {
    throw new BatchFormatError('truncated', `header and tag need ${headerLength + TAG_BYTES} bytes, got ${bytes.length}`);
  }
  const headerBytes = bytes.slice(0, headerLength);
  const header = decodeBatchHeader(headerBytes);
  return {
    header,
    headerBytes,
    tag: bytes.slice(headerLength, headerLength + TAG_BYTES),
    headerDigest: sha256(headerBytes),
    ...batchLayout(headerLength, header.bits, header.chunkSize),
  };
}

export interface BatchOpenerOptions {
  /** Checked after the tag: the module's own terminal id and its last accepted seq. */
  expect?: { terminalId?: string; lastSeq?: number };
  /** Continue an interrupted transfer at this chunk (the module's committed chunk count). */
  resumeAt?: number;
}

/**
 * Module side: verify the header tag, then open chunks strictly in order, one at a time (the
 * module's RAM holds one chunk). A failed chunk does not advance: the same index can be retried.
 * Acceptance is the caller's: stage plaintext chunks, commit only after finish().
 */
export class BatchOpener {
  readonly header: BatchHeader;
  readonly headerDigest: Uint8Array;
  readonly layout: BatchLayout;
  /** The derived batch key; zero-filled by dispose() (and on a failed header tag). */
  private readonly _key: Uint8Array;
  private _next: number;
  private _disposed = false;

  constructor(deviceKey: Uint8Array, headerBytes: Uint8Array, tag: Uint8Array, options: BatchOpenerOptions = {}) {
    abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
    abytes(headerBytes, 'headerBytes');
    abytes(tag, 'tag');
    if (tag.length !== TAG_BYTES) throw new BatchFormatError('bad-length', `header tag must be ${TAG_BYTES} bytes, got ${tag.length}`);
    this.header = decodeBatchHeader(headerBytes);
    this.headerDigest = sha256(headerBytes);
    this.layout = batchLayout(headerBytes.length, this.header.bits, this.header.chunkSize);
    this._key = deriveBatchKey(deviceKey, this.header.batchId);
    try {
      gcm(this._key, nonce(NONCE_DOMAIN_HEADER, 0), headerBytes).decrypt(tag);
    } catch {
      this.dispose();
      throw new BatchAuthError('header-auth', 'header tag does not verify (forged header or wrong device key)');
    }
    // Policy checks only on authenticated fields: a forger cannot steer them.
    const exp = options.expect;
    if (exp?.terminalId !== undefined && exp.terminalId !== this.header.terminalId) {
      this.dispose();
      throw new BatchRejectedError('wrong-terminal', `batch is addressed to ${this.header.terminalId}, not ${exp.terminalId}`);
    }
    if (exp?.lastSeq !== undefined && !(this.header.seq > exp.lastSeq)) {
      this.dispose();
      throw new BatchRejectedError('stale-seq', `batch seq ${this.header.seq} is not newer than ${exp.lastSeq}`);
    }
    this._next = options.resumeAt === undefined ? 0 : aint(options.resumeAt, 'options.resumeAt', 0, this.layout.chunkCount);
  }

  /** Index of the next chunk openChunk expects. */
  get nextIndex(): number {
    return this._next;
  }

  get complete(): boolean {
    return this._next === this.layout.chunkCount;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /** Expected sealed length of chunk `index`. */
  sealedLength(index: number): number {
    return index === this.layout.chunkCount - 1 ? this.layout.lastSealedChunkSize : this.layout.sealedChunkSize;
  }

  /** Verify and decrypt chunk `index` (must be nextIndex). Returns key material: caller wipes it. */
  openChunk(index: number, sealedChunk: Uint8Array): Uint8Array {
    if (this._disposed) throw new BatchFormatError('disposed', 'opener is disposed');
    aint(index, 'index', 0, 0xffffffff);
    abytes(sealedChunk, 'sealedChunk');
    if (index !== this._next) {
      throw new BatchFormatError('out-of-order', `expected chunk ${this._next} of ${this.layout.chunkCount}, got ${index}`);
    }
    const want = this.sealedLength(index);
    if (sealedChunk.length !== want) {
      throw new BatchFormatError('bad-length', `chunk ${index} must be ${want} sealed bytes, got ${sealedChunk.length}`);
    }
    const final = index === this.layout.chunkCount - 1;
    let plain: Uint8Array;
    try {
      plain = gcm(this._key, nonce(NONCE_DOMAIN_CHUNK, index), chunkAad(this.headerDigest, index, final)).decrypt(sealedChunk);
    } catch {
      throw new BatchAuthError('chunk-auth', `chunk ${index} tag does not verify`);
    }
    this._next++;
    return plain;
  }

  /** Check that every chunk, through the final one, was opened. */
  finish(): void {
    if (this._disposed && !this.complete) throw new BatchFormatError('disposed', 'opener is disposed');
    if (!this.complete) {
      throw new BatchFormatError('incomplete', `batch truncated: ${this._next} of ${this.layout.chunkCount} chunks opened`);
    }
  }

  /** Zero-fill the derived batch key. Idempotent. */
  dispose(): void {
    wipe(this._key);
    this._disposed = true;
  }
}

/** Key ids of a batch: (batchId, bitOffset) for firstBitOffset <= bitOffset < endBitOffset. */
export function batchKeyIds(header: BatchHeader): { batchId: Uint8Array; firstBitOffset: number; endBitOffset: number } {
  return { batchId: header.batchId, firstBitOffset: 0, endBitOffset: header.bits };
}
