// On-flash formats of the key pool: journal records (16-byte units, CRC-32), data-sector header,
// consumption marks. docs/keypool.md describes the same layout in prose; keep them in step.

import { crc32 } from 'node:zlib';

/** Journal and headers are written in 16-byte units. */
export const UNIT = 16;
/** Journal sector header: magic 'QKJ1'. */
export const JOURNAL_MAGIC = 0x314a_4b51;
/** Data sector header: magic 'QKD1'. */
export const DATA_MAGIC = 0x3144_4b51;
export const FORMAT_VERSION = 1;
/** Data sector header size (one unit); marks follow it, then the key payload. */
export const DATA_HEADER = UNIT;

export type Purpose = 'enc' | 'auth' | 'any';
export const PURPOSE_CODE: Record<Purpose, number> = { enc: 1, auth: 2, any: 3 };
export const PURPOSE_NAME: Record<number, Purpose> = { 1: 'enc', 2: 'auth', 3: 'any' };

/** Record types. Values are on flash: never renumber. */
export const REC = {
  /** checkpoint: pool geometry and limits (first record of every journal sector) */
  FORMAT: 0x01,
  /** checkpoint: counters (second record) */
  GLOBAL: 0x02,
  /** checkpoint: one live batch */
  BATCH: 0x03,
  BEGIN: 0x10,
  PROGRESS: 0x11,
  COMMIT: 0x12,
  DROP: 0x13,
  RELEASE: 0x14,
  ZEROIZE: 0x15,
} as const;

/** Key bytes per data sector: the rest of the sector after the header, 1/5 of it for marks (2 bits per key byte). */
export function payloadPerSector(sectorSize: number): number {
  return Math.floor(((sectorSize - DATA_HEADER) * 4) / 5 / 4) * 4;
}

export function marksSize(sectorSize: number): number {
  return payloadPerSector(sectorSize) / 4;
}

/** Units a record with `payloadLen` payload bytes occupies: 2 bytes type/length + payload + 4 bytes CRC. */
export function unitsFor(payloadLen: number): number {
  return Math.ceil((payloadLen + 6) / UNIT);
}

/** CRC-32 of a record, bound to the journal sector generation so a record can't be read in a later generation. */
function recordCrc(bytes: Uint8Array, ringSeq: number): number {
  const seq = new Uint8Array(4);
  new DataView(seq.buffer).setUint32(0, ringSeq, true);
  return crc32(bytes, crc32(seq));
}

/** Encode a record: [type u8][units u8][payload, 0xFF padded][crc32 LE over all before it + ringSeq]. */
export function encodeRecord(type: number, payload: Uint8Array, ringSeq: number): Uint8Array {
  const n = unitsFor(payload.length);
  const out = new Uint8Array(n * UNIT).fill(0xff);
  out[0] = type;
  out[1] = n;
  out.set(payload, 2);
  new DataView(out.buffer).setUint32(n * UNIT - 4, recordCrc(out.subarray(0, n * UNIT - 4), ringSeq), true);
  return out;
}

/** Decode the record at the start of `buf`, or undefined if it is not a complete valid record. */
export function decodeRecord(buf: Uint8Array, ringSeq: number): { type: number; units: number; payload: DataView } | undefined {
  if (buf.length < UNIT) return undefined;
  const type = buf[0]!;
  const n = buf[1]!;
  if (type === 0xff || type === 0 || n < 1 || n * UNIT > buf.length) return undefined;
  const dv = new DataView(buf.buffer, buf.byteOffset, n * UNIT);
  if (dv.getUint32(n * UNIT - 4, true) !== recordCrc(buf.subarray(0, n * UNIT - 4), ringSeq)) return undefined;
  return { type, units: n, payload: new DataView(buf.buffer, buf.byteOffset + 2, n * UNIT - 6) };
}

export function encodeJournalHeader(ringSeq: number): Uint8Array {
  const out = new Uint8Array(UNIT);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, JOURNAL_MAGIC, true);
  dv.setUint32(4, ringSeq, true);
  dv.setUint32(8, FORMAT_VERSION, true);
  dv.setUint32(12, crc32(out.subarray(0, 12)), true);
  return out;
}

export function decodeJournalHeader(buf: Uint8Array): number | undefined {
  const dv = new DataView(buf.buffer, buf.byteOffset, UNIT);
  if (dv.getUint32(0, true) !== JOURNAL_MAGIC) return undefined;
  if (dv.getUint32(12, true) !== crc32(buf.subarray(0, 12))) return undefined;
  if (dv.getUint32(8, true) !== FORMAT_VERSION) return undefined;
  return dv.getUint32(4, true);
}

/** Data sector header: magic, batch uid (pool-internal, never reused), index of the sector in its batch. */
export function encodeDataHeader(uid: number, index: number): Uint8Array {
  const out = new Uint8Array(UNIT);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, DATA_MAGIC, true);
  dv.setUint32(4, uid, true);
  dv.setUint32(8, index, true);
  dv.setUint32(12, crc32(out.subarray(0, 12)), true);
  return out;
}

export function decodeDataHeader(buf: Uint8Array): { uid: number; index: number } | undefined {
  const dv = new DataView(buf.buffer, buf.byteOffset, UNIT);
  if (dv.getUint32(0, true) !== DATA_MAGIC) return undefined;
  if (dv.getUint32(12, true) !== crc32(buf.subarray(0, 12))) return undefined;
  return { uid: dv.getUint32(4, true), index: dv.getUint32(8, true) };
}

/** True when every byte is 0xFF. */
export function isBlank(buf: Uint8Array): boolean {
  let i = 0;
  const n = buf.length;
  if (buf.byteOffset % 4 === 0) {
    const words = new Uint32Array(buf.buffer, buf.byteOffset, n >>> 2);
    for (; i < words.length; i++) if (words[i] !== 0xffff_ffff) return false;
    i *= 4;
  }
  for (; i < n; i++) if (buf[i] !== 0xff) return false;
  return true;
}

/**
 * Consumption marks: payload byte j of a sector owns bits 2(j%4) and 2(j%4)+1 of marks byte
 * j/4 (two copies, so one flipped bit cannot un-consume a key). A byte is consumed when either
 * bit is cleared. The sector's frontier is one past the HIGHEST consumed byte: holes below it
 * (a torn mark) count as consumed, which burns rather than reuses.
 */
export function marksFrontier(marks: Uint8Array): number {
  for (let k = marks.length - 1; k >= 0; k--) {
    const v = marks[k]!;
    if (v === 0xff) continue;
    for (let jj = 3; jj >= 0; jj--) if (((v >> (jj * 2)) & 3) !== 3) return k * 4 + jj + 1;
  }
  return 0;
}

/** Marks bytes [a>>2, (c-1)>>2] after consuming payload bytes [a, c), given their current value. */
export function applyMarks(old: Uint8Array, a: number, c: number): Uint8Array {
  const k0 = a >> 2;
  const out = Uint8Array.from(old);
  for (let j = a; j < c; j++) out[(j >> 2) - k0]! &= ~(3 << ((j & 3) * 2)) & 0xff;
  return out;
}

/** Little helper to build record payloads field by field. */
export class Writer {
  private readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private pos = 0;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.dv = new DataView(this.bytes.buffer);
  }
  u8(v: number): this {
    this.dv.setUint8(this.pos, v);
    this.pos += 1;
    return this;
  }
  u16(v: number): this {
    this.dv.setUint16(this.pos, v, true);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.dv.setUint32(this.pos, v, true);
    this.pos += 4;
    return this;
  }
  f64(v: number): this {
    this.dv.setFloat64(this.pos, v, true);
    this.pos += 8;
    return this;
  }
  done(): Uint8Array {
    return this.bytes.subarray(0, this.pos);
  }
}

/** Field-by-field reader over a record payload. */
export class Reader {
  private pos = 0;
  constructor(private readonly dv: DataView) {}
  u8(): number {
    return this.dv.getUint8(this.pos++);
  }
  u16(): number {
    const v = this.dv.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(): number {
    const v = this.dv.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
}
