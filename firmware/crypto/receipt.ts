// Delivery receipts (docs/batch.md, "Receipt"): the module's proof to the KMD that it committed a
// batch. HMAC-SHA256 (RFC 2104, FIPS 198-1) under the receipt key, over a fixed binary encoding.
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { deriveReceiptKey, BATCH_ID_BYTES } from './kdf.js';
import { CryptoFormatError } from './errors.js';
import { DEVICE_KEY_BYTES, TERMINAL_ID_RE, abytes, aint, aterminalId, ascii, concat, ctEqual, fromAscii, u32be, u8, wipe } from './_util.js';
export { CryptoFormatError } from './errors.js';

export const RECEIPT_MAGIC = 'QKTR';
/** Version 2 adds the module's live batches (docs/batch.md "Receipt"); version 1 receipts still verify. */
export const RECEIPT_VERSION = 2;
/** Live batch ids a version 2 receipt lists at most: the module's pool holds at most 32 batches. */
export const RECEIPT_MAX_LIVE = 32;
export const RECEIPT_MAC_BYTES = 32;
const FIXED = 62; // magic 4, version 1, batchId 16, seq 4, bits 4, headerDigest 32, id length 1

export interface ReceiptFields {
  terminalId: string;
  batchId: Uint8Array;
  seq: number;
  bits: number;
  /** SHA-256 of the batch's encoded header: the receipt names exactly the batch that was opened. */
  headerDigest: Uint8Array;
  /**
   * Version 2: the full ids of every batch the module held live when it made the receipt. A
   * batch the KMD exported with a lower seq that is not listed is gone from the module for good
   * (used up, crumbs burned, or never delivered and now stale), so the station retires it.
   * Absent: a version 1 receipt.
   */
  live?: Uint8Array[];
}

export interface Receipt extends ReceiptFields {
  mac: Uint8Array;
}

/** The MAC input: the fields in a fixed order and width (layout in docs/batch.md). */
export function encodeReceiptFields(f: ReceiptFields): Uint8Array {
  if (f === null || typeof f !== 'object') throw new TypeError('receipt fields must be an object');
  aterminalId(f.terminalId, 'terminalId');
  abytes(f.batchId, 'batchId', BATCH_ID_BYTES);
  aint(f.seq, 'seq', 0, 0xffffffff);
  aint(f.bits, 'bits', 8, 2 ** 23);
  abytes(f.headerDigest, 'headerDigest', 32);
  if (f.live !== undefined) {
    if (!Array.isArray(f.live) || f.live.length > RECEIPT_MAX_LIVE) throw new RangeError(`live must list at most ${RECEIPT_MAX_LIVE} batch ids`);
    f.live.forEach((id, i) => abytes(id, `live[${i}]`, BATCH_ID_BYTES));
  }
  const tid = ascii(f.terminalId);
  return concat(
    ascii(RECEIPT_MAGIC),
    u8(f.live === undefined ? 1 : 2),
    f.batchId,
    u32be(f.seq),
    u32be(f.bits),
    f.headerDigest,
    u8(tid.length),
    tid,
    ...(f.live === undefined ? [] : [u8(f.live.length), ...f.live]),
  );
}

function receiptMac(deviceKey: Uint8Array, body: Uint8Array): Uint8Array {
  const key = deriveReceiptKey(deviceKey);
  try {
    return hmac(sha256, key, body);
  } finally {
    wipe(key);
  }
}

export function makeReceipt(deviceKey: Uint8Array, fields: ReceiptFields): Receipt {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  const body = encodeReceiptFields(fields);
  return {
    terminalId: fields.terminalId,
    batchId: fields.batchId.slice(),
    seq: fields.seq,
    bits: fields.bits,
    headerDigest: fields.headerDigest.slice(),
    ...(fields.live === undefined ? {} : { live: fields.live.map((id) => id.slice()) }),
    mac: receiptMac(deviceKey, body),
  };
}

/** True only for an intact receipt from the holder of deviceKey. Malformed fields give false. */
export function verifyReceipt(deviceKey: Uint8Array, receipt: Receipt): boolean {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  let body: Uint8Array;
  try {
    body = encodeReceiptFields(receipt);
    abytes(receipt.mac, 'mac', RECEIPT_MAC_BYTES);
  } catch {
    return false;
  }
  // Constant-time compare: a timing leak would let a forger learn the MAC byte by byte.
  return ctEqual(receiptMac(deviceKey, body), receipt.mac);
}

/** Receipt as the carrier stores it: encoded fields then the 32-byte MAC. */
export function encodeReceipt(receipt: Receipt): Uint8Array {
  abytes(receipt.mac, 'receipt.mac', RECEIPT_MAC_BYTES);
  return concat(encodeReceiptFields(receipt), receipt.mac);
}

/** Parse a stored receipt. Not verified: call verifyReceipt with the terminal's device key. */
export function decodeReceipt(bytes: Uint8Array): Receipt {
  abytes(bytes, 'bytes');
  if (bytes.length < FIXED + 1 + RECEIPT_MAC_BYTES) throw new CryptoFormatError('receipt truncated');
  if (fromAscii(bytes.subarray(0, 4)) !== RECEIPT_MAGIC) throw new CryptoFormatError('not a qkt receipt');
  const version = bytes[4];
  if (version !== 1 && version !== 2) throw new CryptoFormatError(`receipt version ${version} not supported`);
  const n = bytes[FIXED - 1]!;
  let end = FIXED + n;
  let live: Uint8Array[] | undefined;
  if (version === 2) {
    if (bytes.length < end + 1 + RECEIPT_MAC_BYTES) throw new CryptoFormatError('receipt truncated');
    const k = bytes[end]!;
    if (k > RECEIPT_MAX_LIVE) throw new CryptoFormatError(`receipt lists ${k} live batches, more than ${RECEIPT_MAX_LIVE}`);
    if (bytes.length !== end + 1 + k * BATCH_ID_BYTES + RECEIPT_MAC_BYTES) throw new CryptoFormatError('receipt length does not match its id length and live batch count');
    live = Array.from({ length: k }, (_, i) => bytes.slice(end + 1 + i * BATCH_ID_BYTES, end + 1 + (i + 1) * BATCH_ID_BYTES));
    end += 1 + k * BATCH_ID_BYTES;
  } else if (bytes.length !== end + RECEIPT_MAC_BYTES) throw new CryptoFormatError('receipt length does not match its id length');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const terminalId = fromAscii(bytes.subarray(FIXED, FIXED + n));
  if (!TERMINAL_ID_RE.test(terminalId)) throw new CryptoFormatError('receipt terminal id malformed');
  // The encoder's range for bits, checked here too: a decoded receipt is one encodeReceipt can
  // write back (property test, issue 8), not a value verifyReceipt can only refuse.
  const bits = v.getUint32(25, false);
  if (bits < 8 || bits > 2 ** 23) throw new CryptoFormatError(`receipt bits ${bits} not in [8, ${2 ** 23}]`);
  return {
    terminalId,
    batchId: bytes.slice(5, 21),
    seq: v.getUint32(21, false),
    bits,
    headerDigest: bytes.slice(29, 61),
    ...(live ? { live } : {}),
    mac: bytes.slice(end),
  };
}
