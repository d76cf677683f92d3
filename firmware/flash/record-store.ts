// A tiny power-safe append-only record log over a sector range (the module's secure area):
// typed records of up to 256 bytes with CRC-32, compacted into the next sector when full.

import { crc32 } from 'node:zlib';
import type { BlockDevice } from './block-device.js';
import { FlashError } from './errors.js';

/** Records are 16-byte aligned: [type u8][0xA5][len u16][payload][0xFF pad][crc32], the CRC bound to the sector generation. */
const UNIT = 16;
const MAGIC = 0x3152_4b51; // 'QKR1'
export const MAX_RECORD = 256;

/** How compaction treats a record type: keep only the newest, or the newest `keep` (an audit log). */
export type RecordPolicy = { kind: 'latest' } | { kind: 'log'; keep: number };

export interface RecordStoreOptions {
  /** First sector of the range and how many (>= 2): compaction writes into the next one. */
  firstSector: number;
  sectorCount: number;
  /** Policy per record type (1..254). Types without one are treated as 'latest'. */
  types?: Record<number, RecordPolicy>;
}

export type RecordStoreErrorCode = 'NOT_FORMATTED' | 'CORRUPT' | 'TOO_LARGE' | 'FULL' | 'WORN_OUT';

export class RecordStoreError extends Error {
  override readonly name = 'RecordStoreError';
  constructor(
    readonly code: RecordStoreErrorCode,
    message: string,
  ) {
    super(message);
  }
}

interface Entry {
  type: number;
  /** Offset of the payload within the sector. */
  at: number;
  len: number;
}

function header(gen: number): Uint8Array {
  const out = new Uint8Array(UNIT);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, gen, true);
  dv.setUint32(8, 0xffff_ffff, true);
  dv.setUint32(12, crc32(out.subarray(0, 12)), true);
  return out;
}

function encode(type: number, payload: Uint8Array, gen: number): Uint8Array {
  const units = Math.ceil((4 + payload.length + 4) / UNIT);
  const out = new Uint8Array(units * UNIT).fill(0xff);
  const dv = new DataView(out.buffer);
  out[0] = type;
  out[1] = 0xa5;
  dv.setUint16(2, payload.length, true);
  out.set(payload, 4);
  const g = new Uint8Array(4);
  new DataView(g.buffer).setUint32(0, gen, true);
  dv.setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4), crc32(g)), true);
  return out;
}

function blank(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0xff) return false;
  return true;
}

export class RecordStore {
  private active = -1;
  private gen = 0;
  private pos = 0;
  private dirty = false;
  private entries: Entry[] = [];
  private readonly S: number;

  private constructor(
    private readonly flash: BlockDevice,
    private readonly opts: RecordStoreOptions,
  ) {
    this.S = flash.geometry.sectorSize;
    const { firstSector, sectorCount } = opts;
    if (!Number.isSafeInteger(sectorCount) || sectorCount < 2) throw new RangeError('sectorCount must be >= 2');
    if (!Number.isSafeInteger(firstSector) || firstSector < 0 || (firstSector + sectorCount) * this.S > flash.geometry.size) {
      throw new RangeError('sector range outside the flash');
    }
  }

  /** Erase the range and start an empty store. Only ever called explicitly. */
  static format(flash: BlockDevice, opts: RecordStoreOptions): RecordStore {
    const st = new RecordStore(flash, opts);
    // Kill every header first so a half-done format can't be opened as an old store.
    for (let i = 0; i < opts.sectorCount; i++) flash.program((opts.firstSector + i) * st.S, new Uint8Array(UNIT));
    for (let i = 0; i < opts.sectorCount; i++) flash.erase(opts.firstSector + i);
    flash.program(opts.firstSector * st.S, header(1));
    flash.sync();
    return RecordStore.open(flash, opts);
  }

  /** Open the store: reads only; fails closed (NOT_FORMATTED) on a blank or foreign range. */
  static open(flash: BlockDevice, opts: RecordStoreOptions): RecordStore {
    const st = new RecordStore(flash, opts);
    st.load();
    return st;
  }

  private load(): void {
    let best = -1;
    let bestGen = -1;
    for (let i = 0; i < this.opts.sectorCount; i++) {
      const h = this.flash.read((this.opts.firstSector + i) * this.S, UNIT);
      const dv = new DataView(h.buffer, h.byteOffset, UNIT);
      if (dv.getUint32(0, true) !== MAGIC || dv.getUint32(12, true) !== crc32(h.subarray(0, 12))) continue;
      const g = dv.getUint32(4, true);
      if (g === bestGen) throw new RecordStoreError('CORRUPT', `two record sectors claim generation ${g}`);
      if (g > bestGen) {
        best = i;
        bestGen = g;
      }
    }
    if (best < 0) throw new RecordStoreError('NOT_FORMATTED', 'no record store in this sector range');
    const buf = this.flash.read((this.opts.firstSector + best) * this.S, this.S);
    const entries: Entry[] = [];
    let u = 1;
    let dirty = false;
    const units = this.S / UNIT;
    while (u < units) {
      const at = u * UNIT;
      if (blank(buf.subarray(at, at + UNIT))) {
        if (!blank(buf.subarray(at))) dirty = true; // a torn record whose first unit stayed blank
        break;
      }
      const rec = this.decode(buf, at, bestGen);
      if (!rec) {
        for (let v = u + 1; v < units; v++) {
          if (this.decode(buf, v * UNIT, bestGen)) throw new RecordStoreError('CORRUPT', `damaged record at unit ${u} followed by valid ones`);
        }
        dirty = true; // torn tail: that append never returned
        break;
      }
      entries.push({ type: rec.type, at: at + 4, len: rec.len });
      u += rec.units;
    }
    this.active = best;
    this.gen = bestGen;
    this.pos = u;
    this.dirty = dirty;
    this.entries = entries;
  }

  private decode(buf: Uint8Array, at: number, gen: number): { type: number; len: number; units: number } | undefined {
    if (at + UNIT > buf.length || buf[at + 1] !== 0xa5) return undefined;
    const type = buf[at]!;
    const len = buf[at + 2]! | (buf[at + 3]! << 8);
    if (type === 0 || type === 0xff || len > MAX_RECORD) return undefined;
    const n = Math.ceil((8 + len) / UNIT) * UNIT;
    if (at + n > buf.length) return undefined;
    const g = new Uint8Array(4);
    new DataView(g.buffer).setUint32(0, gen, true);
    const want = new DataView(buf.buffer, buf.byteOffset + at + n - 4, 4).getUint32(0, true);
    if (crc32(buf.subarray(at, at + n - 4), crc32(g)) !== want) return undefined;
    return { type, len, units: n / UNIT };
  }

  /** Append a record; durable (synced) when it returns. */
  append(type: number, bytes: Uint8Array): void {
    if (!Number.isSafeInteger(type) || type < 1 || type > 254) throw new TypeError('type must be an integer in 1..254');
    if (bytes.length > MAX_RECORD) throw new RecordStoreError('TOO_LARGE', `record of ${bytes.length} bytes exceeds ${MAX_RECORD}`);
    const n = Math.ceil((8 + bytes.length) / UNIT);
    if (this.dirty || this.pos + n > this.S / UNIT) this.compact(n);
    const addr = (this.opts.firstSector + this.active) * this.S + this.pos * UNIT;
    this.programSpan(addr, encode(type, bytes, this.gen));
    this.entries.push({ type, at: this.pos * UNIT + 4, len: bytes.length });
    this.pos += n;
    this.flash.sync();
  }

  /** The newest record of `type`, or undefined. */
  latest(type: number): Uint8Array | undefined {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.type === type) return this.readEntry(e);
    }
    return undefined;
  }

  /** Every stored record of `type`, oldest first (for a 'log' type: at least its last `keep`). */
  all(type: number): Uint8Array[] {
    return this.entries.filter((e) => e.type === type).map((e) => this.readEntry(e));
  }

  private readEntry(e: Entry): Uint8Array {
    return this.flash.read((this.opts.firstSector + this.active) * this.S + e.at, e.len);
  }

  private policy(type: number): RecordPolicy {
    return this.opts.types?.[type] ?? { kind: 'latest' };
  }

  /**
   * Copy what compaction keeps into the next sector of the range, then program its header:
   * until then the old sector stays the valid one, so a cut anywhere here loses nothing.
   */
  private compact(needUnits: number): void {
    const keep: Array<{ type: number; data: Uint8Array }> = [];
    const counts = new Map<number, number>();
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      const p = this.policy(e.type);
      const have = counts.get(e.type) ?? 0;
      const limit = p.kind === 'latest' ? 1 : p.keep;
      if (have >= limit) continue;
      counts.set(e.type, have + 1);
      keep.push({ type: e.type, data: this.readEntry(e) });
    }
    keep.reverse();
    const units = keep.reduce((s, k) => s + Math.ceil((8 + k.data.length) / UNIT), 0);
    if (1 + units + needUnits > this.S / UNIT) throw new RecordStoreError('FULL', 'kept records do not fit in one sector');
    const gen = this.gen + 1;
    for (let k = 1; k < this.opts.sectorCount; k++) {
      const idx = (this.active + k) % this.opts.sectorCount;
      const sector = this.opts.firstSector + idx;
      try {
        if (!blank(this.flash.read(sector * this.S, this.S))) this.flash.erase(sector);
      } catch (e) {
        if (e instanceof FlashError && (e.code === 'WORN_OUT' || e.code === 'BAD_SECTOR')) continue;
        throw e;
      }
      let u = 1;
      const entries: Entry[] = [];
      for (const k2 of keep) {
        const rec = encode(k2.type, k2.data, gen);
        this.programSpan(sector * this.S + u * UNIT, rec);
        entries.push({ type: k2.type, at: u * UNIT + 4, len: k2.data.length });
        u += rec.length / UNIT;
      }
      this.flash.program(sector * this.S, header(gen));
      this.active = idx;
      this.gen = gen;
      this.pos = u;
      this.dirty = false;
      this.entries = entries;
      return;
    }
    throw new RecordStoreError('WORN_OUT', 'no usable sector left for compaction');
  }

  private programSpan(addr: number, bytes: Uint8Array): void {
    const page = this.flash.geometry.pageSize;
    for (let off = 0; off < bytes.length; ) {
      const a = addr + off;
      const n = Math.min(bytes.length - off, page - (a % page));
      this.flash.program(a, bytes.subarray(off, off + n));
      off += n;
    }
  }
}
