// Key derivation from the 256-bit device key: HKDF-SHA256 (RFC 5869) with one fixed label per use,
// so a key derived for one purpose is never usable for another (docs/batch.md, "Key derivation").
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { DEVICE_KEY_BYTES, abytes, ascii, concat } from './_util.js';

export const BATCH_ID_BYTES = 16;
export const DERIVED_KEY_BYTES = 32;

/**
 * HKDF `info` labels (RFC 5869 §3.2: info binds the output to its application context).
 * ASCII, NUL-terminated so no label plus suffix can equal another label. Never change one: every
 * enrolled terminal's keys depend on them.
 */
export const LABELS = {
  batch: 'qkt/v1 batch key\0',
  receipt: 'qkt/v1 receipt mac\0',
  admin: 'qkt/v1 admin token mac\0',
  auth: 'qkt/v1 carrier auth\0',
} as const;

// RFC 5869 §3.1: the salt is optional; the device key is already uniformly random (§3.3), so the
// extract step only needs a fixed, public salt. A project-specific one keeps our PRK apart from any
// other protocol that might one day HKDF the same key with an empty salt.
const SALT = ascii('qkt device key v1');

function derive(deviceKey: Uint8Array, info: Uint8Array): Uint8Array {
  return hkdf(sha256, deviceKey, SALT, info, DERIVED_KEY_BYTES);
}

/** AES-256-GCM key for one sealed batch; batchId (16 random bytes from the KMD) makes it unique. */
export function deriveBatchKey(deviceKey: Uint8Array, batchId: Uint8Array): Uint8Array {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  abytes(batchId, 'batchId', BATCH_ID_BYTES);
  return derive(deviceKey, concat(ascii(LABELS.batch), batchId));
}

/** HMAC-SHA256 key for delivery receipts (terminal -> KMD). */
export function deriveReceiptKey(deviceKey: Uint8Array): Uint8Array {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  return derive(deviceKey, ascii(LABELS.receipt));
}

/** HMAC-SHA256 key for admin tokens (KMD -> terminal: zeroize, factory reset). */
export function deriveAdminKey(deviceKey: Uint8Array): Uint8Array {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  return derive(deviceKey, ascii(LABELS.admin));
}

/** Authentication key of an enrolled carrier (its "device key" is enrolled like a terminal's). */
export function deriveAuthKey(deviceKey: Uint8Array): Uint8Array {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  return derive(deviceKey, ascii(LABELS.auth));
}
