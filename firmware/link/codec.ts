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
  return cbor.encode(payload);
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
    payload = cbor.decode(body.subarray(HEADER_SIZE));
  } catch {
    return { ok: false, header, error: new LinkError(Rc.BAD_REQUEST, 'payload is not valid CBOR') };
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload) || payload instanceof Uint8Array) {
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
