// Message codec (docs/protocol.md, "Messages"): a frame header plus a CBOR payload (RFC 8949).
// Payloads are CBOR maps with short text keys; byte strings are plain major type 2 (no tags).
import { Encoder } from 'cbor-x';
import { Kind, PROTOCOL_VERSION, HEADER_SIZE, encodeFrame, readHeader } from './frame.js';
import type { FrameHeader, KindValue } from './frame.js';
import { LinkError, Rc } from './errors.js';
import type { ErrorDetails } from './errors.js';

// useRecords/structures off: cbor-x's record extension is not standard CBOR and other-language
// clients could not read it. tagUint8Array off: a Uint8Array is a plain byte string, not tag 64.
const cbor = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  variableMapSize: true,
  useFloat32: 0,
});

export type Payload = Record<string, unknown>;

// ---- Integers (docs/protocol.md 3.1) ------------------------------------------------------
// cbor-x 1.6 on its own gets CBOR integers wrong both ways: it writes a JS number outside
// [-2^32, 2^32) as a float64 (0xfb), and reads every 8-byte integer head (0x1b, 0x3b) as a
// BigInt, even a long encoding of a small value such as 0x1b0000000000000005 (also tag 2/3
// bignums). It writes a BigInt as 0x1b / 0x3b + 8 bytes, whatever its size. So the two walks
// below are the one place where the codec fixes integers:
// - out: an integral number or BigInt outside [-2^32, 2^32) becomes a BigInt (cbor-x then writes
//   0x1b / 0x3b + 8 bytes, the shortest head for it); a BigInt inside becomes a number (cbor-x
//   picks the shortest head). Integers of magnitude 2^64 or more have no CBOR integer encoding:
//   RangeError. Numbers that are not integers are left to cbor-x (float64; v1 defines none).
// - in: a BigInt that is a safe integer (|x| <= 2^53 - 1) becomes a number. Anything larger stays
//   a BigInt, so no precision is lost; the field readers (fields.ts) refuse it with BAD_REQUEST.
// Only arrays and plain objects are walked: payloads are made of those, and decoded maps are.

const TWO32 = 2 ** 32;
const BIG_TWO32 = 2n ** 32n;
const BIG_TWO64 = 2n ** 64n;
const BIG_MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function int64Out(v: bigint): bigint {
  if (v >= BIG_TWO64 || v <= -BIG_TWO64) throw new RangeError(`integer ${v} does not fit a CBOR integer`);
  return v;
}

/** A copy of `v` with its integers in the form cbor-x writes as CBOR integers (see above). */
function intsOut(v: unknown): unknown {
  if (typeof v === 'number') {
    return Number.isInteger(v) && (v >= TWO32 || v < -TWO32) ? int64Out(BigInt(v)) : v;
  }
  if (typeof v === 'bigint') return v < BIG_TWO32 && v >= -BIG_TWO32 ? Number(v) : int64Out(v);
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    v.forEach((x: unknown, i) => {
      const y = intsOut(x);
      if (y !== x) (out ??= [...v])[i] = y;
    });
    return out ?? v;
  }
  if (isPlainObject(v)) {
    let out: Record<string, unknown> | undefined;
    for (const [k, x] of Object.entries(v)) {
      const y = intsOut(x);
      if (y !== x) (out ??= { ...v })[k] = y;
    }
    return out ?? v;
  }
  return v;
}

/** `v`, freshly decoded, with safe-integer BigInts turned into numbers in place (see above). */
function intsIn(v: unknown): unknown {
  // Each container once: cbor-x resolves value-sharing tags (28/29), so a hostile payload may
  // share one array many times over, or even contain itself.
  const seen = new Set<object>();
  const fix = (x: unknown): unknown => {
    if (typeof x === 'bigint') return x <= BIG_MAX_SAFE && x >= -BIG_MAX_SAFE ? Number(x) : x;
    if ((Array.isArray(x) || isPlainObject(x)) && !seen.has(x)) {
      seen.add(x);
      const o = x as Record<string, unknown>;
      for (const k of Object.keys(o)) o[k] = fix(o[k]);
    }
    return x;
  };
  return fix(v);
}

export interface Message extends FrameHeader {
  payload: Payload;
}

/** Error responses carry this payload (CDDL `error-payload`). */
export interface ErrorPayload {
  g: number;
  rc: number;
  r?: string;
  d?: ErrorDetails;
}

export function encodePayload(payload: Payload): Uint8Array {
  return cbor.encode(intsOut(payload));
}

export function encodeMessage(m: Omit<Message, 'version'> & { version?: number }): Uint8Array {
  return encodeFrame(
    { version: m.version ?? PROTOCOL_VERSION, kind: m.kind, group: m.group, command: m.command, seq: m.seq },
    encodePayload(m.payload),
  );
}

export type DecodeResult =
  | { ok: true; message: Message }
  | { ok: false; header: FrameHeader; error: LinkError };

/**
 * A CBOR map carried as bytes inside a payload (a sealed message, docs/protocol.md 3.11), decoded
 * and checked as a frame's payload is; undefined if it is not one whole CBOR map.
 */
export function decodePayload(bytes: Uint8Array): Payload | undefined {
  let v: unknown;
  try {
    v = intsIn(cbor.decode(bytes));
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Object.getPrototypeOf(v) !== Object.prototype) return undefined;
  return v as Payload;
}

/** Decode a CRC-checked frame body into a message; a bad payload keeps the header for the reply. */
export function decodeMessage(body: Uint8Array): DecodeResult {
  const header = readHeader(body);
  if (!isKind(header.kind)) {
    return { ok: false, header, error: new LinkError(Rc.BAD_REQUEST, `kind ${header.kind} is not defined`) };
  }
  if (header.version !== PROTOCOL_VERSION) {
    return { ok: false, header, error: new LinkError(Rc.BAD_VERSION, `version ${header.version} not supported`) };
  }
  let payload: unknown;
  try {
    payload = intsIn(cbor.decode(body.subarray(HEADER_SIZE)));
  } catch {
    return { ok: false, header, error: new LinkError(Rc.BAD_REQUEST, 'payload is not valid CBOR') };
  }
  // Only a CBOR map (a plain object with mapsAsObjects) is a payload: a tagged date, a typed
  // array or an unknown tag decodes to another kind of object that no handler expects.
  if (payload === null || typeof payload !== 'object' || Object.getPrototypeOf(payload) !== Object.prototype) {
    return { ok: false, header, error: new LinkError(Rc.BAD_REQUEST, 'payload must be a CBOR map') };
  }
  return { ok: true, message: { ...header, payload: payload as Payload } };
}

export function errorPayload(group: number, e: LinkError): ErrorPayload {
  const p: ErrorPayload = { g: group, rc: e.rc };
  if (e.reason) p.r = e.reason;
  if (e.details) p.d = e.details;
  return p;
}

/** Turn a received ERROR payload back into a LinkError (host side). */
export function errorFromPayload(p: Payload): LinkError {
  const rc = typeof p['rc'] === 'number' ? p['rc'] : Rc.INTERNAL;
  const r = typeof p['r'] === 'string' ? p['r'] : undefined;
  const d = p['d'] && typeof p['d'] === 'object' ? (p['d'] as ErrorDetails) : undefined;
  return new LinkError(rc, r, d);
}

export function isKind(k: number): k is KindValue {
  return k === Kind.REQUEST || k === Kind.RESPONSE || k === Kind.ERROR || k === Kind.EVENT;
}
