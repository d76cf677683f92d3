// The one power-safe record log of the module: an append-only log of CRC'd records in a ring of
// dedicated sectors, each ring sector opened by a checkpoint of the owner's whole state. The key
// pool's journal and the secure area both run on it (docs/keypool.md, docs/secure-area.md).
//
// Layout of a ring sector, in 16-byte units:
//   unit 0      header [magic u32][generation u32][version u32][crc32 u32] (LE), written LAST
//   unit 1..    records [type u8][units u8][payload, 0xFF padded][crc32 LE over all before it
//               and the generation], back to back; the first blank unit ends the log.
// A rollover erases the next ring sector, writes the owner's checkpoint there and then the
// header with generation + 1: until the header lands, the old sector stays the valid one, so a
// cut anywhere loses nothing. The newest valid header wins (one wrong bit in a header is put
// right: readHeader); two equal generations fail closed.
// Because the checkpoint is all a rollover keeps, its size bounds the log: the owner keeps its
// checkpoint under half a sector (checked by `create`), so a rollover never fails for lack of room.

import { crc32 } from 'node:zlib';
import type { BlockDevice } from './block-device.js';
import { FlashError } from './errors.js';

/** Records and headers are written in 16-byte units. */
export const UNIT = 16;

export type RecordLogErrorCode =
  /** no ring sector has a valid header for this log (blank, foreign or killed). */
  | 'NOT_FORMATTED'
  /** damage a power cut cannot cause (a bad record before valid ones, two equal generations). */
  | 'CORRUPT'
  /** the checkpoint or a record is larger than the log allows. */
  | 'TOO_LARGE'
  /** no ring sector can be erased any more. */
  | 'WORN_OUT';

export class RecordLogError extends Error {
  override readonly name = 'RecordLogError';
  constructor(
    readonly code: RecordLogErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface LogRecord {
  type: number;
  /** The payload as stored: the bytes written, then 0xFF padding up to the unit boundary. */
  payload: DataView;
}

export interface NewRecord {
  type: number;
  payload: Uint8Array;
}

export interface RecordLogOptions {
  /** First ring sector (absolute index) and how many (>= 2). */
  firstSector: number;
  sectorCount: number;
  /** Header magic and format version: a sector of another log or version never validates. */
  magic: number;
  version: number;
  /** The owner's whole state as records, written at the start of each new ring sector. */
  checkpoint: () => NewRecord[];
  /** Units the checkpoint may take at most (default: half a sector less the header). The rest is room to append. */
  checkpointUnits?: number;
}

/** Units a record with `payloadLen` payload bytes occupies: 2 bytes type/units + payload + 4 bytes CRC. */
export function unitsFor(payloadLen: number): number {
  return Math.ceil((payloadLen + 6) / UNIT);
}

/** Largest payload of one record: 255 units. */
export const MAX_PAYLOAD = 255 * UNIT - 6;

/** CRC-32 of a record, bound to the sector generation so a record can't be read in a later one. */
function recordCrc(bytes: Uint8Array, gen: number): number {
  const g = new Uint8Array(4);
  new DataView(g.buffer).setUint32(0, gen, true);
  return crc32(bytes, crc32(g));
}

export function encodeRecord(type: number, payload: Uint8Array, gen: number): Uint8Array {
  const n = unitsFor(payload.length);
  const out = new Uint8Array(n * UNIT).fill(0xff);
  out[0] = type;
  out[1] = n;
  out.set(payload, 2);
  new DataView(out.buffer).setUint32(n * UNIT - 4, recordCrc(out.subarray(0, n * UNIT - 4), gen), true);
  return out;
}

/** The record at the start of `buf`, or undefined if it is not a complete valid record of generation `gen`. */
export function decodeRecord(buf: Uint8Array, gen: number): { type: number; units: number; payload: DataView } | undefined {
  if (buf.length < UNIT) return undefined;
  const type = buf[0]!;
  const n = buf[1]!;
  if (type === 0xff || type === 0 || n < 1 || n * UNIT > buf.length) return undefined;
  const dv = new DataView(buf.buffer, buf.byteOffset, n * UNIT);
  if (dv.getUint32(n * UNIT - 4, true) !== recordCrc(buf.subarray(0, n * UNIT - 4), gen)) return undefined;
  return { type, units: n, payload: new DataView(buf.buffer, buf.byteOffset + 2, n * UNIT - 6) };
}

export function encodeHeader(magic: number, gen: number, version: number): Uint8Array {
  const out = new Uint8Array(UNIT);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, magic, true);
  dv.setUint32(4, gen, true);
  dv.setUint32(8, version, true);
  dv.setUint32(12, crc32(out.subarray(0, 12)), true);
  return out;
}

/** The generation in a header of this log, or undefined. */
export function decodeHeader(buf: Uint8Array, magic: number, version: number): number | undefined {
  const dv = new DataView(buf.buffer, buf.byteOffset, UNIT);
  if (dv.getUint32(0, true) !== magic) return undefined;
  if (dv.getUint32(12, true) !== crc32(buf.subarray(0, 12))) return undefined;
  if (dv.getUint32(8, true) !== version) return undefined;
  return dv.getUint32(4, true);
}

/**
 * The generation in a header of this log, also when one of its 128 stored bits reads wrong
 * (`fixed`), or undefined. A ring sector's header can be the only thing that still names the
 * generation of a newer sector whose own header a cut tore (scan): one flipped bit in it must not
 * lose the log. Each bit is tried in turn; the fix must pass magic, version and CRC-32 whole,
 * and CRC-32 over 12 bytes tells any two-bit error from a one-bit one, so a header hit by bit
 * flips is never "fixed" into another valid one. A header torn mid-program (many bits not yet
 * cleared) could in principle sit one bit from some other valid header: that needs a 32-bit
 * CRC and the magic to match by chance (about 2^-80 per torn header under the fault model's
 * tearing, measured by an outside review); scan therefore takes a fixed header only when the
 * sector's first record verifies under its generation (records are bound to it). Blank and
 * killed (all zero) headers stay what they are.
 */
export function readHeader(buf: Uint8Array, magic: number, version: number): { gen: number; fixed: boolean } | undefined {
  const gen = decodeHeader(buf, magic, version);
  if (gen !== undefined) return { gen, fixed: false };
  const h = buf.slice(0, UNIT);
  if (isBlank(h) || isZero(h)) return undefined;
  for (let bit = 0; bit < UNIT * 8; bit++) {
    h[bit >> 3]! ^= 1 << (bit & 7);
    const g = decodeHeader(h, magic, version);
    h[bit >> 3]! ^= 1 << (bit & 7);
    if (g !== undefined) return { gen: g, fixed: true };
  }
  return undefined;
}

function isZero(buf: Uint8Array): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
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

/** What a scan found. */
export interface ScanResult {
  records: LogRecord[];
  /** Tolerant scans only: 16-byte units skipped because they held no valid record. */
  damagedUnits: number;
}

export class RecordLog {
  private active = -1;
  private gen = 0;
  /** Next free unit in the active sector. */
  private pos = 0;
  /** The active sector has a torn, damaged or unexpected tail: the next append rolls over first. */
  private dirty = false;
  /** The active sector holds damage, not just a torn tail: the next append rolls over to heal it. */
  private damaged = false;
  /** The active sector's header does not verify (torn or flipped): the generation to write there. */
  private repairGen: number | undefined;
  private readonly unitsPerSector: number;
  private readonly S: number;

  constructor(
    private readonly flash: BlockDevice,
    private readonly o: RecordLogOptions,
  ) {
    this.S = flash.geometry.sectorSize;
    this.unitsPerSector = this.S / UNIT;
    if (!Number.isSafeInteger(o.sectorCount) || o.sectorCount < 2) throw new RangeError('sectorCount must be an integer >= 2');
    if (!Number.isSafeInteger(o.firstSector) || o.firstSector < 0 || (o.firstSector + o.sectorCount) * this.S > flash.geometry.size) {
      throw new RangeError('record log sectors lie outside the flash');
    }
    if (this.S % UNIT !== 0 || flash.geometry.pageSize % UNIT !== 0) throw new RangeError(`sectors and pages must be multiples of ${UNIT} bytes`);
    if (o.checkpointUnits !== undefined && (!Number.isSafeInteger(o.checkpointUnits) || o.checkpointUnits < 1 || o.checkpointUnits > this.unitsPerSector - 2)) {
      throw new RangeError('checkpointUnits must leave a unit for the header and one to append');
    }
  }

  /** Units free in the active sector. */
  get freeUnits(): number {
    return this.unitsPerSector - this.pos;
  }

  /** Units a checkpoint may take at most: half a sector, so a rollover always leaves room to append. */
  get checkpointBudget(): number {
    return this.o.checkpointUnits ?? Math.floor(this.unitsPerSector / 2) - 1;
  }

  /** Where the log is (status, tests). */
  get position(): { sector: number; ringSeq: number; unit: number; dirty: boolean } {
    return { sector: this.o.firstSector + this.active, ringSeq: this.gen, unit: this.pos, dirty: this.dirty };
  }

  /** Valid ring sectors, newest first: [ring index, generation]. */
  generations(): Array<[number, number]> {
    return this.headers().map(({ idx, gen }) => [idx, gen]);
  }

  /** Ring sectors whose header reads (readHeader: one wrong bit is put right), newest first. */
  private headers(): Array<{ idx: number; gen: number; fixed: boolean }> {
    const out: Array<{ idx: number; gen: number; fixed: boolean }> = [];
    for (let idx = 0; idx < this.o.sectorCount; idx++) {
      const h = readHeader(this.flash.read((this.o.firstSector + idx) * this.S, UNIT), this.o.magic, this.o.version);
      if (h) out.push({ idx, ...h });
    }
    return out.sort((a, b) => b.gen - a.gen);
  }

  /**
   * Find the newest valid ring sector, make it the active one and return its records (checkpoint
   * first). Reads only. Fails closed with NOT_FORMATTED when no ring sector validates and with
   * CORRUPT on two equal generations. A bad record followed by valid ones is CORRUPT too, unless
   * `tolerant`: then it is skipped unit by unit, counted, and the next append rolls over (the
   * secure area prefers a module that boots and says what it lost to one that is bricked).
   */
  scan(o: { tolerant?: boolean } = {}): ScanResult {
    // A header put right must be borne out by its sector's first record (or an empty checkpoint).
    const gens = this.headers().filter(({ idx, gen, fixed }) => {
      if (!fixed) return true;
      const first = this.flash.read((this.o.firstSector + idx) * this.S + UNIT, this.S - UNIT);
      return isBlank(first.subarray(0, UNIT)) || decodeRecord(first, gen) !== undefined;
    });
    if (gens.length === 0) throw new RecordLogError('NOT_FORMATTED', 'no valid record log header in its sector range');
    let { idx: best, gen: bestGen } = gens[0]!;
    let brokenHeader = gens[0]!.fixed;
    const tie = gens.length > 1 && gens[1]!.gen === bestGen;
    if (tie && !o.tolerant) throw new RecordLogError('CORRUPT', `two sectors claim generation ${bestGen}`);
    // The newest sector may have a header that does not verify although its checkpoint is whole:
    // the header is programmed last, so a non-blank header over a checkpoint that verifies under
    // the next generation is either torn (cut while programming it: the checkpoint holds the same
    // state as the old sector) or hit by a bit flip after records were appended to it. Either
    // way that sector holds the newest state; ignoring it would roll the state back (counters,
    // anti-rollback, consumed keys) without a word. It is read, and its header completed on the
    // first write. A header of all zeros was killed on purpose (format, factory reset: kill())
    // and is never read again: neither a torn program nor a bit flip makes one.
    for (let i = 0; i < this.o.sectorCount; i++) {
      if (i === best || gens.some((g) => g.idx === i)) continue;
      const h = this.flash.read((this.o.firstSector + i) * this.S, UNIT);
      if (isBlank(h) || isZero(h)) continue;
      const first = this.flash.read((this.o.firstSector + i) * this.S + UNIT, this.S - UNIT);
      if (decodeRecord(first, bestGen + 1)) {
        best = i;
        bestGen += 1;
        brokenHeader = true;
        break;
      }
    }
    const r = this.readSector(best, bestGen, o.tolerant ?? false);
    if (tie) {
      r.damagedUnits++; // a cut cannot do this: count it as damage, and roll over before appending
      r.dirty = true;
    }
    // Repaired on the first write: completed in place where that only clears bits (a torn
    // header always allows it), otherwise by a rollover.
    this.repairGen = brokenHeader ? bestGen : undefined;
    this.active = best;
    this.gen = bestGen;
    this.pos = r.end;
    this.dirty = r.dirty;
    this.damaged = r.damagedUnits > 0;
    return { records: r.records, damagedUnits: r.damagedUnits };
  }

  /** Records of an older ring sector (tolerant), for an owner that lost something in the newest. */
  readOlder(ringIndex: number, gen: number): LogRecord[] {
    return this.readSector(ringIndex, gen, true).records;
  }

  private readSector(idx: number, gen: number, tolerant: boolean): { records: LogRecord[]; end: number; dirty: boolean; damagedUnits: number } {
    const buf = this.flash.read((this.o.firstSector + idx) * this.S, this.S);
    const records: LogRecord[] = [];
    let u = 1;
    let end = 1;
    let dirty = false;
    let damagedUnits = 0;
    // Tolerant scans: bad units seen since the last valid record. They count as damage only when
    // a valid record follows them; a bad tail is what a power cut leaves (one torn append).
    let pending = 0;
    while (u < this.unitsPerSector) {
      const at = buf.subarray(u * UNIT);
      if (isZero(at.subarray(0, UNIT))) {
        // A killed unit: the remains of a torn append, programmed to 0x00 so the log can go on
        // after it without an erase (see append). Skipped like padding.
        u++;
        if (pending === 0) end = u;
        continue;
      }
      const rec = isBlank(at.subarray(0, UNIT)) ? undefined : decodeRecord(at, gen);
      if (rec) {
        records.push({ type: rec.type, payload: rec.payload });
        damagedUnits += pending;
        pending = 0;
        u += rec.units;
        end = u;
        continue;
      }
      if (isBlank(at)) break; // the end of the log
      // A torn record (whose first unit may have stayed blank), or damage.
      dirty = true; // never append over it
      if (!tolerant) {
        for (let v = u + 1; v < this.unitsPerSector; v++) {
          if (decodeRecord(buf.subarray(v * UNIT), gen)) {
            throw new RecordLogError('CORRUPT', `record at sector ${this.o.firstSector + idx} unit ${u} is damaged and valid records follow it`);
          }
        }
        break;
      }
      pending++;
      u++;
    }
    return { records, end, dirty, damagedUnits };
  }

  /** True when the sector reads all 0xFF; the copy read is wiped (an old sector may hold a key record). */
  private blankSector(sector: number): boolean {
    const buf = this.flash.read(sector * this.S, this.S);
    const blank = isBlank(buf);
    buf.fill(0);
    return blank;
  }

  /**
   * Program 0x00 over every ring sector's header (always allowed on NOR), and sync. Sectors
   * without a valid header first, then the valid ones oldest first, the newest (the active one,
   * if this log was scanned) last: a cut part-way leaves the newest state readable or none,
   * never an older one.
   */
  killHeaders(): void {
    const valid = this.generations().map(([i]) => i).reverse();
    const last = this.active >= 0 ? [this.active] : [];
    const all = Array.from({ length: this.o.sectorCount }, (_, i) => i);
    const order = [...all.filter((i) => !valid.includes(i) && !last.includes(i)), ...valid.filter((i) => !last.includes(i)), ...last];
    for (const i of order) this.flash.program((this.o.firstSector + i) * this.S, new Uint8Array(UNIT));
    this.flash.sync();
  }

  /** Make every ring sector invalid (killHeaders), then erase them: the start of a format. */
  kill(): void {
    this.killHeaders();
    for (let i = 0; i < this.o.sectorCount; i++) {
      const s = this.o.firstSector + i;
      if (!this.blankSector(s)) this.flash.erase(s);
    }
  }

  /** Start a fresh log in ring sector 0 with `records` as its checkpoint. The caller killed the ring first. */
  create(records: NewRecord[]): void {
    this.checkFits(records);
    this.active = this.o.sectorCount - 1;
    this.gen = 0;
    this.rollover(records);
  }

  /**
   * Kill what a torn append left after the log (program it to 0x00, always allowed on NOR) so the
   * next record can follow it without an erase: a module that loses power often does not wear
   * its log out. False when the tail is not one torn record (then only a rollover helps).
   */
  private killTornTail(): boolean {
    const base = (this.o.firstSector + this.active) * this.S;
    const buf = this.flash.read(base, this.S);
    let last = this.pos - 1;
    for (let u = this.pos; u < this.unitsPerSector; u++) if (!isBlank(buf.subarray(u * UNIT, (u + 1) * UNIT))) last = u;
    buf.fill(0); // the sector may hold a key record: no stray copy in RAM
    if (last < this.pos || last - this.pos + 1 > 255) return false;
    programSpan(this.flash, base + this.pos * UNIT, new Uint8Array((last - this.pos + 1) * UNIT));
    this.pos = last + 1;
    this.dirty = false;
    return true;
  }

  /** Append one record; in the flash once it returns (the caller syncs). Rolls over when full. */
  append(rec: NewRecord): void {
    const n = unitsFor(rec.payload.length);
    if (n > this.unitsPerSector - 1 - this.checkpointBudget) throw new RecordLogError('TOO_LARGE', `record of ${rec.payload.length} bytes is too large for this log`);
    this.repairHeader();
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.dirty && !this.damaged) this.killTornTail();
      if (this.dirty || this.pos + n > this.unitsPerSector) this.rollover(this.o.checkpoint());
      const addr = (this.o.firstSector + this.active) * this.S + this.pos * UNIT;
      // The target must be blank; if something is there (damage we did not see), move on.
      if (!isBlank(this.flash.read(addr, n * UNIT))) {
        this.dirty = true;
        continue;
      }
      programSpan(this.flash, addr, encodeRecord(rec.type, rec.payload, this.gen));
      this.pos += n;
      return;
    }
    throw new RecordLogError('CORRUPT', 'record log sector not blank after a rollover');
  }

  /** Roll over now (write a fresh checkpoint), e.g. to heal a damaged sector. */
  compact(): void {
    this.repairHeader();
    this.rollover(this.o.checkpoint());
  }

  /**
   * Finish the active sector's header if scan found it torn or flipped. Programming the right
   * header over a torn one only clears bits, so it completes it in place, with no erase: a ring
   * of two sectors must not erase its only other valid sector just after a cut (a second cut
   * there would leave no valid header at all). A header that would need a bit set (a flip from 1
   * to 0) can only be replaced by rolling over.
   */
  private repairHeader(): void {
    if (this.repairGen === undefined) return;
    const addr = (this.o.firstSector + this.active) * this.S;
    const want = encodeHeader(this.o.magic, this.repairGen, this.o.version);
    const have = this.flash.read(addr, UNIT);
    this.repairGen = undefined;
    if (want.every((b, i) => (b & ~have[i]!) === 0)) this.flash.program(addr, want);
    else this.dirty = true;
  }

  private checkFits(records: NewRecord[]): number {
    const units = records.reduce((s, r) => s + unitsFor(r.payload.length), 0);
    if (units > this.checkpointBudget) throw new RecordLogError('TOO_LARGE', `checkpoint of ${units} units exceeds the ${this.checkpointBudget}-unit budget`);
    return units;
  }

  /**
   * Move to the next usable ring sector: erase it, write the checkpoint, then the header. Until
   * the header is programmed the old sector stays the valid one, so a cut anywhere is harmless.
   */
  private rollover(records: NewRecord[]): void {
    this.checkFits(records);
    const gen = this.gen + 1;
    // Never the active sector itself: it holds the only valid copy of the state.
    for (let k = 1; k < this.o.sectorCount; k++) {
      const idx = (this.active + k) % this.o.sectorCount;
      const sector = this.o.firstSector + idx;
      try {
        if (!this.blankSector(sector)) this.flash.erase(sector);
        if (!this.blankSector(sector)) continue;
      } catch (e) {
        if (e instanceof FlashError && (e.code === 'WORN_OUT' || e.code === 'BAD_SECTOR')) continue;
        throw e;
      }
      let u = 1;
      for (const r of records) {
        const bytes = encodeRecord(r.type, r.payload, gen);
        programSpan(this.flash, sector * this.S + u * UNIT, bytes);
        u += bytes.length / UNIT;
        bytes.fill(0);
      }
      this.flash.program(sector * this.S, encodeHeader(this.o.magic, gen, this.o.version));
      for (const r of records) r.payload.fill(0); // a checkpoint may hold a key: no copy stays in RAM
      this.active = idx;
      this.gen = gen;
      this.pos = u;
      this.dirty = false;
      this.damaged = false;
      this.repairGen = undefined;
      return;
    }
    throw new RecordLogError('WORN_OUT', 'no usable record log sector left');
  }
}
