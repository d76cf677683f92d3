// On-flash formats of the key pool: journal records (16-byte units, CRC-32), data-sector header,
// consumption marks. docs/keypool.md describes the same layout in prose; keep them in step.

import { crc32 } from 'node:zlib';
import { UNIT } from '../flash/record-log.js';

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
  /** COMMIT that also retires older batches holding only crumbs, in the same record (atomic) */
  COMMIT_RETIRE: 0x16,
} as const;

/** Key bytes per data sector: the rest of the sector after the header, 1/5 of it for marks (2 bits per key byte). */
export function payloadPerSector(sectorSize: number): number {
  return Math.floor(((sectorSize - DATA_HEADER) * 4) / 5 / 4) * 4;
}

export function marksSize(sectorSize: number): number {
  return payloadPerSector(sectorSize) / 4;
}

export { UNIT, unitsFor, encodeRecord, decodeRecord, isBlank } from '../flash/record-log.js';

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
