// Frame codec of link protocol v1 (docs/protocol.md, "Frames"): header + CBOR payload + CRC-32,
// COBS-encoded and terminated by 0x00. Pure functions; the incremental splitter is framer.ts.
import { crc32 } from 'node:zlib';
import { cobsEncodeInto, cobsMaxEncodedLength } from './cobs.js';

export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [1];
export const HEADER_SIZE = 6;
export const CRC_SIZE = 4;
/** Smallest valid body: a header, an empty CBOR payload is not allowed (at least 1 byte), a CRC. */
export const MIN_BODY_SIZE = HEADER_SIZE + 1 + CRC_SIZE;

export const Kind = {
  REQUEST: 0,
  RESPONSE: 1,
  ERROR: 2,
  EVENT: 3,
} as const;
export type KindValue = (typeof Kind)[keyof typeof Kind];

export interface FrameHeader {
  version: number;
  kind: KindValue;
  group: number;
  command: number;
  seq: number;
}

/** Build one wire frame (0x00 + COBS body + 0x00) from a header and an already CBOR-encoded payload. */
export function encodeFrame(header: FrameHeader, payload: Uint8Array): Uint8Array {
  const body = new Uint8Array(HEADER_SIZE + payload.length + CRC_SIZE);
  writeHeader(body, header);
  body.set(payload, HEADER_SIZE);
  const crc = crc32(body.subarray(0, HEADER_SIZE + payload.length));
  new DataView(body.buffer).setUint32(HEADER_SIZE + payload.length, crc, false);
  // A leading 0x00 too: line noise received before this frame is then cut off as its own
  // (corrupt) frame instead of corrupting this one. Back-to-back delimiters are idle fill.
  const out = new Uint8Array(cobsMaxEncodedLength(body.length) + 2);
  const n = cobsEncodeInto(body, out.subarray(1));
  out[n + 1] = 0;
  return out.subarray(0, n + 2);
}

function writeHeader(body: Uint8Array, h: FrameHeader): void {
  body[0] = h.version;
  body[1] = h.kind;
  body[2] = h.group;
  body[3] = h.command;
  body[4] = (h.seq >>> 8) & 0xff;
  body[5] = h.seq & 0xff;
}

/** Parse the header of a CRC-checked body (at least MIN_BODY_SIZE - CRC_SIZE bytes). */
export function readHeader(body: Uint8Array): FrameHeader {
  return {
    version: body[0]!,
    kind: body[1]! as KindValue, // checked by the codec: values above 3 are not frames of ours
    group: body[2]!,
    command: body[3]!,
    seq: (body[4]! << 8) | body[5]!,
  };
}

/** True when the last 4 bytes of `body` are the big-endian CRC-32 (IEEE) of the rest. */
export function crcOk(body: Uint8Array): boolean {
  if (body.length < CRC_SIZE) return false;
  const n = body.length - CRC_SIZE;
  const want = ((body[n]! << 24) | (body[n + 1]! << 16) | (body[n + 2]! << 8) | body[n + 3]!) >>> 0;
  return crc32(body.subarray(0, n)) === want;
}
