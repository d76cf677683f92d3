// The pool's metadata journal: an append-only log of CRC'd records in a ring of dedicated sectors.
// Each ring sector starts with a checkpoint of the whole state; its header, written last, switches to it.

import type { BlockDevice } from '../flash/block-device.js';
import { FlashError } from '../flash/errors.js';
import { PoolError } from './errors.js';
import { UNIT, decodeJournalHeader, decodeRecord, encodeJournalHeader, encodeRecord, isBlank, unitsFor } from './layout.js';

export interface JournalRecord {
  type: number;
  payload: DataView;
}

/** A record to write: type and payload bytes. */
export interface NewRecord {
  type: number;
  payload: Uint8Array;
}

/** Program `bytes` at `addr`, split at page boundaries (the device programs within one page). */
export function programSpan(flash: BlockDevice, addr: number, bytes: Uint8Array): void {
  const page = flash.geometry.pageSize;
  let off = 0;
  while (off < bytes.length) {
    const a = addr + off;
    const n = Math.min(bytes.length - off, page - (a % page));
    flash.program(a, bytes.subarray(off, off + n));
    off += n;
  }
}

export class Journal {
  private active = -1;
  private ringSeq = 0;
  /** Next free unit in the active sector. */
  private pos = 0;
  /** The active sector has a torn or unexpected tail: the next append must roll over first. */
  private dirty = false;
  private readonly unitsPerSector: number;

  constructor(
    private readonly flash: BlockDevice,
    /** First ring sector (absolute sector index) and ring length. */
    private readonly first: number,
    private readonly count: number,
    /** Supplies the checkpoint (state as records) when rolling over to a fresh sector. */
    private readonly checkpoint: () => NewRecord[],
  ) {
    this.unitsPerSector = flash.geometry.sectorSize / UNIT;
  }

  /** Units free in the active sector, for tests and sizing. */
  get freeUnits(): number {
    return this.unitsPerSector - this.pos;
  }

  /** Which ring sector is active and its generation (status, tests). */
  get position(): { sector: number; ringSeq: number; unit: number; dirty: boolean } {
    return { sector: this.first + this.active, ringSeq: this.ringSeq, unit: this.pos, dirty: this.dirty };
  }

  /**
   * Find the newest valid ring sector and return its records (checkpoint first). Reads only.
   * Fails closed: NOT_FORMATTED when no ring sector has a valid header, CORRUPT when a bad
   * record is followed by valid ones (a torn tail is the only damage a power cut can cause).
   */
  scan(): JournalRecord[] {
    const { sectorSize } = this.flash.geometry;
    let best = -1;
    let bestSeq = -1;
    let tie = false;
    for (let i = 0; i < this.count; i++) {
      const seq = decodeJournalHeader(this.flash.read((this.first + i) * sectorSize, UNIT));
      if (seq === undefined) continue;
      if (seq > bestSeq) {
        best = i;
        bestSeq = seq;
        tie = false;
      } else if (seq === bestSeq) tie = true;
    }
    if (best < 0) throw new PoolError('NOT_FORMATTED', 'no key pool journal on this flash (blank or not a pool); format explicitly');
    if (tie) throw new PoolError('CORRUPT', `two journal sectors claim generation ${bestSeq}`);
    const buf = this.flash.read((this.first + best) * sectorSize, sectorSize);
    const records: JournalRecord[] = [];
    let u = 1;
    let dirty = false;
    while (u < this.unitsPerSector) {
      const at = buf.subarray(u * UNIT);
      if (isBlank(at.subarray(0, UNIT))) {
        // End of log. Anything non-blank after it is a torn record whose first unit stayed
        // blank: don't append over it.
        if (!isBlank(at)) dirty = true;
        break;
      }
      const rec = decodeRecord(at, bestSeq);
      if (!rec) {
        for (let v = u + 1; v < this.unitsPerSector; v++) {
          if (decodeRecord(buf.subarray(v * UNIT), bestSeq)) {
            throw new PoolError('CORRUPT', `journal record at sector ${this.first + best} unit ${u} is damaged and valid records follow it`);
          }
        }
        dirty = true; // torn tail: the operation it recorded never completed
        break;
      }
      records.push({ type: rec.type, payload: rec.payload });
      u += rec.units;
    }
    this.active = best;
    this.ringSeq = bestSeq;
    this.pos = u;
    this.dirty = dirty;
    return records;
  }

  /**
   * Start a fresh journal in ring sector 0 (format). The caller has already made every ring
   * sector invalid and erased it.
   */
  create(records: NewRecord[]): void {
    this.active = this.count - 1;
    this.ringSeq = 0;
    this.rollover(records);
  }

  /** Append one record; durable once the program returns (the caller syncs). */
  append(rec: NewRecord): void {
    const n = unitsFor(rec.payload.length);
    if (n * UNIT > this.flash.geometry.sectorSize / 2) throw new RangeError('journal record too large');
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.dirty || this.pos + n > this.unitsPerSector) this.rollover(this.checkpoint());
      const addr = (this.first + this.active) * this.flash.geometry.sectorSize + this.pos * UNIT;
      // The target must be blank; if something is there (damage we did not see), move on.
      if (!isBlank(this.flash.read(addr, n * UNIT))) {
        this.dirty = true;
        continue;
      }
      programSpan(this.flash, addr, encodeRecord(rec.type, rec.payload, this.ringSeq));
      this.pos += n;
      return;
    }
    throw new PoolError('CORRUPT', 'journal sector not blank after rollover');
  }

  /**
   * Move to the next ring sector: erase it, write the checkpoint, then the header. Until the
   * header is programmed the old sector stays the valid one, so a cut anywhere here is harmless.
   */
  private rollover(records: NewRecord[]): void {
    const { sectorSize } = this.flash.geometry;
    const units = records.reduce((s, r) => s + unitsFor(r.payload.length), 0);
    if (1 + units > this.unitsPerSector) throw new PoolError('GEOMETRY_MISMATCH', 'checkpoint does not fit in a journal sector');
    const seq = this.ringSeq + 1;
    // Never the active sector itself: it holds the only valid copy of the state.
    for (let k = 1; k < this.count; k++) {
      const idx = (this.active + k) % this.count;
      const sector = this.first + idx;
      try {
        if (!isBlank(this.flash.read(sector * sectorSize, sectorSize))) this.flash.erase(sector);
        if (!isBlank(this.flash.read(sector * sectorSize, sectorSize))) continue;
      } catch (e) {
        if (e instanceof FlashError && (e.code === 'WORN_OUT' || e.code === 'BAD_SECTOR')) continue;
        throw e;
      }
      let u = 1;
      for (const r of records) {
        const bytes = encodeRecord(r.type, r.payload, seq);
        programSpan(this.flash, sector * sectorSize + u * UNIT, bytes);
        u += bytes.length / UNIT;
      }
      this.flash.program(sector * sectorSize, encodeJournalHeader(seq));
      this.active = idx;
      this.ringSeq = seq;
      this.pos = u;
      this.dirty = false;
      return;
    }
    throw new PoolError('WORN_OUT', 'no usable journal sector left');
  }
}
