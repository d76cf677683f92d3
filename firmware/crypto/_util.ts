// Internal helpers for firmware/crypto: argument validation at the public entries (TypeError for a
// wrong type, RangeError for a wrong size, the parameter named), big-endian integers, zero-fill.
import { equalBytes } from '@noble/ciphers/utils.js';

export const DEVICE_KEY_BYTES = 32;

/** Terminal and carrier ids: 1..32 chars of [A-Za-z0-9._-] (ASCII, so one byte per char). */
export const TERMINAL_ID_RE = /^[A-Za-z0-9._-]{1,32}$/;

export function isBytes(a: unknown): a is Uint8Array {
  return a instanceof Uint8Array;
}

/** Validate a byte-array argument; `len` undefined means any length. */
export function abytes(value: unknown, name: string, len?: number): Uint8Array {
  if (!isBytes(value)) throw new TypeError(`${name} must be a Uint8Array`);
  if (len !== undefined && value.length !== len) {
    throw new RangeError(`${name} must be ${len} bytes, got ${value.length}`);
  }
  return value;
}

/** Validate an integer in [min, max]. */
export function aint(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new TypeError(`${name} must be an integer`);
  if (value < min || value > max) throw new RangeError(`${name} must be in [${min}, ${max}], got ${value}`);
  return value;
}

export function aterminalId(value: unknown, name = 'terminalId'): string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string`);
  if (!TERMINAL_ID_RE.test(value)) throw new RangeError(`${name} must be 1-32 chars of [A-Za-z0-9._-]`);
  return value;
}

export function aoneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string`);
  if (!(allowed as readonly string[]).includes(value)) {
    throw new RangeError(`${name} must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export function ascii(s: string): Uint8Array {
  // Only called on validated ids and fixed labels, all ASCII: one byte per char.
  return new Uint8Array(Buffer.from(s, 'latin1'));
}

export function fromAscii(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function u8(n: number): Uint8Array {
  return Uint8Array.of(n & 0xff);
}

export function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, false);
  return b;
}

export function u64be(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), false);
  return b;
}

/** Constant-time equality of two byte strings (length is not secret). */
export function ctEqual(a: Uint8Array, b: Uint8Array): boolean {
  return equalBytes(a, b);
}

/** Zero-fill secrets once they are no longer needed. */
export function wipe(...arrays: Array<Uint8Array | undefined>): void {
  for (const a of arrays) a?.fill(0);
}
