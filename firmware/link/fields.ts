// Payload field readers for handlers: validate once at the entry, with the field's name in the
// error, so a malformed request gets BAD_REQUEST and never reaches a service.
import { LinkError, Rc } from './errors.js';
import type { Payload } from './codec.js';

// Integers beyond 2^53 - 1 arrive as BigInt (codec.ts keeps them exact) and are refused here like
// any non-number; a float with an integral value is a number and is taken (docs/protocol.md 3.1).
export function uint(p: Payload, key: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = p[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new LinkError(Rc.BAD_REQUEST, `field "${key}" must be an unsigned integer <= ${max}`);
  }
  return v;
}

export function optionalUint(p: Payload, key: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return p[key] === undefined ? undefined : uint(p, key, max);
}

export function bytes(p: Payload, key: string, maxLength: number, exactLength?: number): Uint8Array {
  const v = p[key];
  if (!(v instanceof Uint8Array)) throw new LinkError(Rc.BAD_REQUEST, `field "${key}" must be a byte string`);
  if (v.length > maxLength) throw new LinkError(Rc.TOO_LARGE, `field "${key}" exceeds ${maxLength} bytes`);
  if (exactLength !== undefined && v.length !== exactLength) {
    throw new LinkError(Rc.BAD_REQUEST, `field "${key}" must be ${exactLength} bytes`);
  }
  return v;
}

export function text(p: Payload, key: string, maxLength: number): string {
  const v = p[key];
  if (typeof v !== 'string' || v.length > maxLength) {
    throw new LinkError(Rc.BAD_REQUEST, `field "${key}" must be a string of at most ${maxLength} characters`);
  }
  return v;
}

export function oneOf<T extends string>(p: Payload, key: string, values: readonly T[]): T {
  const v = p[key];
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw new LinkError(Rc.BAD_REQUEST, `field "${key}" must be one of ${values.join(', ')}`);
  }
  return v as T;
}
