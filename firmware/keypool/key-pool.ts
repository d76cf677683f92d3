// The terminal's power-safe key pool on NOR flash: streamed atomic batch staging, in-order
// consumption recorded before a key leaves, zeroization, recycling. Layout and proof: docs/keypool.md.

import type { BlockDevice } from '../flash/block-device.js';
import { FlashError } from '../flash/errors.js';
import { PoolError } from './errors.js';
import { RecordLog, RecordLogError, programSpan, type LogRecord, type NewRecord } from '../flash/record-log.js';
import {
  DATA_HEADER,
  FORMAT_VERSION,
  JOURNAL_MAGIC,
  PURPOSE_CODE,
  PURPOSE_NAME,
  REC,
  Reader,
  UNIT,
  Writer,
  applyMarks,
  decodeDataHeader,
  encodeDataHeader,
  isBlank,
  marksFrontier,
  marksSize,
  payloadPerSector,
  unitsFor,
  type Purpose,
} from './layout.js';

export type { Purpose } from './layout.js';

/** 8 Mbit = 2^23 bits (DESIGN.md "Units"): the paper's maximum pool. */
export const DEFAULT_MAX_KEY_BITS = 8 * 1024 * 1024;
/** Sectors of the journal ring when the options name none (every module's layout uses it). */
export const DEFAULT_JOURNAL_SECTORS = 8;
/** Largest single key one consume may take, in bytes. */
export const MAX_KEY_BYTES = 65536;

export interface KeyPoolOptions {
  /** Sectors at the start of the flash the pool never touches (the module's secure area). Default 4. */
  secureSectors?: number;
  /** Sectors of the journal ring that follow the secure area. At least 2; default 8. */
  journalSectors?: number;
  /** format: stored + staging key bits allowed (default 8 Mbit). mount: checked against the flash if given. */
  maxKeyBits?: number;
  /** format: most live batches (committed + staging) at once. Default 32. */
  maxBatches?: number;
  /** format: anti-rollback floor carried over (a batch needs seq > lastSeq). Default: none, any seq >= 0. */
  lastSeq?: number;
  /**
   * Remainders shorter than this (bytes) are crumbs: when a newer batch commits, older batches
   * holding only crumbs are retired and the crumbs burned. The module sets the shortest key a
   * session always takes (32 bytes); 0 (default) keeps every remainder.
   */
  crumbBytes?: number;
  /** Fire onLowWatermark when storedKeyBits falls below this. */
  lowWatermarkBits?: number;
  onLowWatermark?: (status: PoolStatus) => void;
}

/**
 * A batch to stage. `batchId` is a u32 chosen by the KMD, unique per terminal (a live batch
 * id is refused); `seq` is the u32 anti-rollback counter; `bits` a positive multiple of 8;
 * `firstKeyOffset` (bits, multiple of 8, default 0) is the bit offset of the batch's first
 * key in key ids, for batches that continue a KMD-side numbering.
 */
export interface StageMeta {
  batchId: number;
  seq: number;
  purpose: Purpose;
  bits: number;
  firstKeyOffset?: number;
}

/** Deterministic, non-secret key id (DESIGN.md "Security model"). */
export interface KeyId {
  batchId: number;
  bitOffset: number;
}

export interface ConsumedKey {
  keyId: KeyId;
  key: Uint8Array;
  /** consumeById only: key bits before the named key that were burned (skipped, never served). */
  skippedBits: number;
}

export interface BatchStatus {
  batchId: number;
  seq: number;
  purpose: Purpose;
  bits: number;
  consumedBits: number;
  firstKeyOffset: number;
}

/** Pool status in ETSI GS QKD 014 words (stored / max key bits) plus health. */
export interface PoolStatus {
  storedKeyBits: number;
  maxKeyBits: number;
  /** Key bits served or burned from committed batches since format (zeroized/discarded remainders not counted). */
  consumedKeyBits: number;
  batches: BatchStatus[];
  staging: { batchId: number; seq: number; purpose: Purpose; bits: number; durableBits: number } | null;
  /** Last committed anti-rollback seq, or null if none yet. */
  lastSeq: number | null;
  sectors: { data: number; free: number; inUse: number; releasable: number; bad: number };
  lowWatermarkBits: number;
}

/** Internal, per live batch. Sector table is the only per-batch allocation proportional to its size. */
interface Batch {
  uid: number;
  batchId: number;
  seq: number;
  purpose: Purpose;
  bits: number;
  fko: number;
  bytes: number;
  nSectors: number;
  /** Sectors below this index were released (consumed, erased). */
  firstLive: number;
  committed: boolean;
  /** Staging: bytes durably written. Committed: = bytes. */
  durable: number;
  /** Committed: bytes consumed or burned from the start of the batch. */
  frontier: number;
  /** Absolute sector per batch index, -1 if none. */
  sectors: Int32Array;
}

/** The live mount of each device: a newer mount makes older pool objects refuse (two writers would diverge). */
const mounts = new WeakMap<BlockDevice, KeyPool>();

/** The record log's typed errors, in the pool's words (NOT_FORMATTED, CORRUPT, WORN_OUT keep their code). */
function journalOp<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof RecordLogError)) throw e;
    if (e.code === 'NOT_FORMATTED') throw new PoolError('NOT_FORMATTED', 'no key pool journal on this flash (blank or not a pool); format explicitly');
    throw new PoolError(e.code === 'TOO_LARGE' ? 'GEOMETRY_MISMATCH' : e.code, `journal: ${e.message}`);
  }
}

const u32ok = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff_ffff;

/** Handle on the batch being staged. Invalid after commit, abort, zeroizeAll or remount. */
export class StageHandle {
  /** @internal */
  constructor(
    private readonly pool: KeyPool,
    private readonly batch: Batch,
  ) {}
  get batchId(): number {
    return this.batch.batchId;
  }
  get seq(): number {
    return this.batch.seq;
  }
  get purpose(): Purpose {
    return this.batch.purpose;
  }
  get bits(): number {
    return this.batch.bits;
  }
  get firstKeyOffset(): number {
    return this.batch.fko;
  }
  /** Bytes durably written: the truth after a power cut; resume writing here. */
  get durableOffset(): number {
    return this.batch.durable;
  }
  get durableBits(): number {
    return this.batch.durable * 8;
  }
  /** Append bytes at `offset` (must equal durableOffset). Durable when it returns. */
  write(offset: number, bytes: Uint8Array): void {
    this.pool._write(this.batch, offset, bytes);
  }
  /**
   * Move the durable offset back to `offset` (<= durableOffset), so a writer whose units are
   * larger than what the pool could keep after a cut (a sealed chunk) resumes on its own
   * boundary. Bytes past it stay programmed; writing the same bytes again completes them.
   */
  rewind(offset: number): void {
    this.pool._rewind(this.batch, offset);
  }
  /** Make the whole batch live, atomically. Refuses an incomplete batch or a stale seq. */
  commit(): BatchStatus {
    return this.pool._commit(this.batch);
  }
  /** Discard the staged batch and wipe what was written. */
  abort(): void {
    this.pool._drop(this.batch);
  }
}

export class KeyPool {
  private readonly S: number;
  private readonly P: number;
  private readonly M: number;
  private readonly secureSectors: number;
  private readonly journalSectors: number;
  private readonly dataStart: number;
  private readonly dataCount: number;
  private readonly journal: RecordLog;
  private maxKeyBits = DEFAULT_MAX_KEY_BITS;
  private maxBatches = 32;
  private lastSeq = -1;
  private nextUid = 1;
  private cursor = 0;
  private retiredBits = 0;
  private readonly batches = new Map<number, Batch>();
  private readonly owner: Array<Batch | undefined>;
  private readonly bad: Uint8Array;
  private dead = false;
  private readonly lowWatermarkBits: number;
  private readonly onLowWatermark: ((s: PoolStatus) => void) | undefined;

  private constructor(
    private readonly flash: BlockDevice,
    private readonly opts: KeyPoolOptions,
  ) {
    const { size, sectorSize, pageSize } = flash.geometry;
    this.S = sectorSize;
    this.secureSectors = opts.secureSectors ?? 4;
    this.journalSectors = opts.journalSectors ?? DEFAULT_JOURNAL_SECTORS;
    if (!Number.isSafeInteger(this.secureSectors) || this.secureSectors < 0) throw new RangeError('secureSectors must be a non-negative integer');
    if (!Number.isSafeInteger(this.journalSectors) || this.journalSectors < 2) throw new RangeError('journalSectors must be an integer >= 2');
    if (sectorSize % UNIT !== 0 || pageSize % UNIT !== 0 || sectorSize < 16 * UNIT) {
      throw new PoolError('GEOMETRY_MISMATCH', `key pool needs sectors of >= ${16 * UNIT} bytes and pages in multiples of ${UNIT}`);
    }
    const total = size / sectorSize;
    this.dataStart = this.secureSectors + this.journalSectors;
    this.dataCount = total - this.dataStart;
    if (this.dataCount < 2) throw new PoolError('GEOMETRY_MISMATCH', 'no room for key sectors after the secure area and journal');
    this.P = payloadPerSector(sectorSize);
    this.M = marksSize(sectorSize);
    this.owner = new Array<Batch | undefined>(this.dataCount);
    this.bad = new Uint8Array(this.dataCount);
    this.journal = new RecordLog(flash, {
      firstSector: this.secureSectors,
      sectorCount: this.journalSectors,
      magic: JOURNAL_MAGIC,
      version: FORMAT_VERSION,
      checkpoint: () => this.checkpoint(),
    });
    this.lowWatermarkBits = opts.lowWatermarkBits ?? 0;
    this.onLowWatermark = opts.onLowWatermark;
  }

  // ---------------------------------------------------------------- format / mount

  /**
   * Erase the pool region (never the secure area) and write an empty pool. Only ever called
   * explicitly. An interrupted format leaves no valid journal: mount then fails NOT_FORMATTED.
   */
  static format(flash: BlockDevice, opts: KeyPoolOptions = {}): KeyPool {
    const pool = new KeyPool(flash, opts);
    mounts.set(flash, pool);
    const maxKeyBits = opts.maxKeyBits ?? DEFAULT_MAX_KEY_BITS;
    const maxBatches = opts.maxBatches ?? 32;
    if (!u32ok(maxKeyBits) || maxKeyBits === 0 || maxKeyBits % 8 !== 0) throw new RangeError('maxKeyBits must be a positive multiple of 8 below 2^32');
    if (!Number.isSafeInteger(maxBatches) || maxBatches < 1 || maxBatches > 0xffff) throw new RangeError('maxBatches must be an integer in 1..65535');
    if (opts.lastSeq !== undefined && !u32ok(opts.lastSeq)) throw new RangeError('lastSeq must be a u32');
    // Room for a full pool plus one partly consumed sector per batch boundary.
    if (pool.dataCount < Math.ceil(maxKeyBits / 8 / pool.P) + 2) {
      throw new PoolError('GEOMETRY_MISMATCH', `maxKeyBits ${maxKeyBits} needs more key sectors than the ${pool.dataCount} available`);
    }
    const ckptUnits = 1 + unitsFor(23) + unitsFor(21) + maxBatches * unitsFor(30);
    if (ckptUnits > pool.S / UNIT / 2) throw new PoolError('GEOMETRY_MISMATCH', `maxBatches ${maxBatches} too large for ${pool.S}-byte journal sectors`);
    pool.maxKeyBits = maxKeyBits;
    pool.maxBatches = maxBatches;
    pool.lastSeq = opts.lastSeq ?? -1;
    const { sectorSize: S } = flash.geometry;
    // 1. Kill every journal header first (program 0x00 is always allowed), so no old pool can
    //    be mounted from a half-erased region if the power goes during format.
    //    Oldest first, the newest last, so a cut part-way never leaves an older pool mountable.
    pool.journal.killHeaders();
    // 2. Wipe the region.
    for (let s = pool.secureSectors; s < pool.dataStart + pool.dataCount; s++) {
      if (!isBlank(flash.read(s * S, S))) flash.erase(s);
    }
    // 3. The new journal; its header is the commit point of the format.
    journalOp(() => pool.journal.create(pool.checkpoint()));
    flash.sync();
    return KeyPool.mount(flash, opts);
  }

  /**
   * Mount the pool on `flash`. Never formats: a blank, foreign or damaged image fails with a
   * typed error. Finishes what a power cut interrupted (releases consumed sectors, wipes
   * dead ones, re-zeroizes consumed bytes), which may write; never resets a consumption.
   */
  static mount(flash: BlockDevice, opts: KeyPoolOptions = {}): KeyPool {
    const pool = new KeyPool(flash, opts);
    mounts.set(flash, pool);
    try {
      const unowned = pool.load();
      pool.recover(unowned);
    } catch (e) {
      pool.dead = true;
      if (e instanceof FlashError) throw new PoolError('IO', `flash failed during mount: ${e.code}`, { cause: e });
      throw e;
    }
    return pool;
  }

  /** Read journal and sector headers into RAM. Returns unowned data sectors (relative indices). */
  private load(): number[] {
    const { records } = journalOp(() => this.journal.scan());
    const [fmt, glob] = records;
    if (!fmt || fmt.type !== REC.FORMAT || !glob || glob.type !== REC.GLOBAL) throw new PoolError('CORRUPT', 'journal checkpoint incomplete');
    const r = new Reader(fmt.payload);
    const version = r.u8();
    const sectorSize = r.u32();
    const pageSize = r.u32();
    const total = r.u32();
    const secure = r.u16();
    const journal = r.u16();
    this.maxKeyBits = r.u32();
    this.maxBatches = r.u16();
    const g = this.flash.geometry;
    if (version !== FORMAT_VERSION || sectorSize !== g.sectorSize || pageSize !== g.pageSize || total !== g.size / g.sectorSize || secure !== this.secureSectors || journal !== this.journalSectors) {
      throw new PoolError('GEOMETRY_MISMATCH', 'the pool on this flash was formatted with a different geometry or layout');
    }
    if (this.opts.maxKeyBits !== undefined && this.opts.maxKeyBits !== this.maxKeyBits) {
      throw new PoolError('GEOMETRY_MISMATCH', `pool was formatted for ${this.maxKeyBits} key bits, not ${this.opts.maxKeyBits}`);
    }
    for (const rec of records.slice(1)) this.apply(rec);

    // Sector ownership comes from data-sector headers naming a live batch uid and an index
    // not yet released. Anything else is free or garbage.
    const unowned: number[] = [];
    for (let d = 0; d < this.dataCount; d++) {
      const hdr = decodeDataHeader(this.flash.read((this.dataStart + d) * this.S, DATA_HEADER));
      const b = hdr && this.batches.get(hdr.uid);
      if (!hdr || !b || hdr.index < b.firstLive || hdr.index >= b.nSectors) {
        unowned.push(d);
        continue;
      }
      if (b.sectors[hdr.index] !== -1) throw new PoolError('CORRUPT', `two sectors hold index ${hdr.index} of batch ${b.batchId}`);
      b.sectors[hdr.index] = this.dataStart + d;
      this.owner[d] = b;
    }
    for (const b of this.batches.values()) {
      if (b.committed) {
        // Frontier = one past the highest consumed byte anywhere in the batch. A missing sector
        // (damaged header) burns everything up to its end: fail toward burning, never reuse.
        let f = b.firstLive * this.P;
        for (let i = b.firstLive; i < b.nSectors; i++) {
          const s = b.sectors[i]!;
          if (s < 0) {
            f = Math.max(f, Math.min(b.bytes, (i + 1) * this.P));
            continue;
          }
          const mf = marksFrontier(this.flash.read(s * this.S + DATA_HEADER, this.M));
          if (mf > 0) f = Math.max(f, i * this.P + mf);
        }
        b.frontier = Math.min(f, b.bytes);
      } else {
        // Staging: durable data needs every sector up to the durable offset.
        for (let i = 0; i * this.P < b.durable; i++) {
          if (b.sectors[i]! < 0) {
            b.durable = i * this.P;
            break;
          }
        }
      }
    }
    return unowned;
  }

  /**
   * Complete interrupted work; writes nothing on a cleanly shut down image. Idempotent, so a
   * cut during recovery is recovered the same way. Recycling consumed sectors is left to
   * maintain() and allocation: it is not needed for safety.
   */
  private recover(unowned: number[]): void {
    let wrote = false;
    // A committed batch missing a sector (damaged header) had everything up to it burned in
    // RAM by load(); make that durable so a sector that reads fine again later can't un-burn it.
    for (const b of this.sortedCommitted()) {
      let missing = -1;
      for (let i = b.firstLive; i < b.nSectors; i++) if (b.sectors[i]! < 0) missing = i;
      if (missing >= 0) {
        this.release(b, missing + 1, unowned);
        wrote = true;
      }
    }
    // Dead sectors (aborted, dropped, zeroized, released, torn allocations) still holding data.
    for (const d of unowned) {
      if (this.owner[d] || this.bad[d]) continue;
      const abs = this.dataStart + d;
      if (!isBlank(this.flash.read(abs * this.S, this.S))) {
        this.wipeSector(abs);
        wrote = true;
      }
    }
    // Every consumed byte still on flash must read 0x00: a cut may have torn the zeroize that
    // follows the marks (only the last key's, but its length is not recorded, so check all).
    for (const b of this.sortedCommitted()) {
      for (let i = b.firstLive; i * this.P < b.frontier; i++) {
        const len = Math.min(this.P, b.frontier - i * this.P);
        const addr = this.payloadAddr(b.sectors[i]!, 0);
        if (!this.flash.read(addr, len).every((x) => x === 0)) {
          programSpan(this.flash, addr, new Uint8Array(len));
          wrote = true;
        }
      }
    }
    if (wrote) this.flash.sync();
    // A batch whose last key was taken just before a cut: finish its retirement.
    this.retireExhausted();
  }

  // ---------------------------------------------------------------- journal state

  private checkpoint(): NewRecord[] {
    const g = this.flash.geometry;
    const recs: NewRecord[] = [
      {
        type: REC.FORMAT,
        payload: new Writer(23).u8(FORMAT_VERSION).u32(g.sectorSize).u32(g.pageSize).u32(g.size / g.sectorSize)
          .u16(this.secureSectors).u16(this.journalSectors).u32(this.maxKeyBits).u16(this.maxBatches).done(),
      },
      {
        type: REC.GLOBAL,
        payload: new Writer(21).u8(this.lastSeq >= 0 ? 1 : 0).u32(Math.max(0, this.lastSeq)).u32(this.nextUid).u32(this.cursor).f64(this.retiredBits).done(),
      },
    ];
    for (const b of this.batches.values()) {
      recs.push({
        type: REC.BATCH,
        payload: new Writer(30).u32(b.uid).u32(b.batchId).u32(b.seq).u8(PURPOSE_CODE[b.purpose]).u8(b.committed ? 1 : 0)
          .u32(b.bits).u32(b.fko).u32(b.firstLive).u32(b.durable).done(),
      });
    }
    return recs;
  }

  private newBatch(uid: number, batchId: number, seq: number, purpose: Purpose, bits: number, fko: number): Batch {
    const bytes = bits / 8;
    const nSectors = Math.ceil(bytes / this.P);
    return {
      uid, batchId, seq, purpose, bits, fko, bytes, nSectors,
      firstLive: 0, committed: false, durable: 0, frontier: 0,
      sectors: new Int32Array(nSectors).fill(-1),
    };
  }

  /** Apply one journal record to the RAM state (replay at mount, and after each live append). */
  private apply(rec: LogRecord): void {
    const r = new Reader(rec.payload);
    const need = (uid: number): Batch => {
      const b = this.batches.get(uid);
      if (!b) throw new PoolError('CORRUPT', `journal names unknown batch uid ${uid}`);
      return b;
    };
    switch (rec.type) {
      case REC.GLOBAL: {
        const has = r.u8();
        const seq = r.u32();
        this.lastSeq = has ? seq : -1;
        this.nextUid = r.u32();
        this.cursor = r.u32() % this.dataCount;
        this.retiredBits = r.f64();
        return;
      }
      case REC.BATCH: {
        const uid = r.u32();
        const batchId = r.u32();
        const seq = r.u32();
        const purpose = PURPOSE_NAME[r.u8()];
        const committed = r.u8() === 1;
        const bits = r.u32();
        const fko = r.u32();
        if (!purpose || bits === 0 || bits % 8 !== 0) throw new PoolError('CORRUPT', 'bad batch record');
        const b = this.newBatch(uid, batchId, seq, purpose, bits, fko);
        b.firstLive = r.u32();
        b.durable = r.u32();
        b.committed = committed;
        this.batches.set(uid, b);
        return;
      }
      case REC.BEGIN: {
        const uid = r.u32();
        const batchId = r.u32();
        const seq = r.u32();
        const purpose = PURPOSE_NAME[r.u8()];
        const bits = r.u32();
        const fko = r.u32();
        const cursor = r.u32();
        if (!purpose || bits === 0 || bits % 8 !== 0 || this.batches.has(uid)) throw new PoolError('CORRUPT', 'bad begin record');
        this.batches.set(uid, this.newBatch(uid, batchId, seq, purpose, bits, fko));
        this.nextUid = uid + 1;
        this.cursor = cursor % this.dataCount;
        return;
      }
      case REC.PROGRESS: {
        const b = need(r.u32());
        b.durable = r.u32();
        return;
      }
      case REC.COMMIT:
      case REC.COMMIT_RETIRE: {
        const b = need(r.u32());
        b.committed = true;
        b.durable = b.bytes;
        this.lastSeq = r.u32();
        if (rec.type === REC.COMMIT_RETIRE) {
          const n = r.u8();
          for (let i = 0; i < n; i++) {
            const o = need(r.u32());
            if (o === b || !o.committed) throw new PoolError('CORRUPT', 'bad commit-retire record');
            this.retiredBits += o.bits;
            this.batches.delete(o.uid);
          }
        }
        return;
      }
      case REC.DROP: {
        const uid = r.u32();
        need(uid);
        this.retiredBits += r.u32();
        this.batches.delete(uid);
        return;
      }
      case REC.RELEASE: {
        const b = need(r.u32());
        b.firstLive = r.u32();
        if (b.firstLive >= b.nSectors) {
          this.retiredBits += b.bits;
          this.batches.delete(b.uid);
        }
        return;
      }
      case REC.ZEROIZE: {
        this.retiredBits += r.f64();
        this.batches.clear();
        return;
      }
      default:
        throw new PoolError('CORRUPT', `unknown journal record type ${rec.type}`);
    }
  }

  /** Append a record durably-ordered (program) and apply it to RAM. The caller syncs. */
  private log(type: number, payload: Uint8Array): void {
    journalOp(() => this.journal.append({ type, payload }));
    this.apply({ type, payload: new DataView(payload.buffer, payload.byteOffset, payload.byteLength) });
  }

  // ---------------------------------------------------------------- staging

  /** Begin staging a batch. Refuses (pool unchanged) on rollback, duplicate, busy, or no room. */
  stage(meta: StageMeta): StageHandle {
    return this.run(() => {
      const { batchId, seq, purpose, bits } = meta;
      const fko = meta.firstKeyOffset ?? 0;
      if (!u32ok(batchId)) throw new TypeError('batchId must be a u32');
      if (!u32ok(seq)) throw new TypeError('seq must be a u32');
      if (!(purpose in PURPOSE_CODE)) throw new TypeError("purpose must be 'enc', 'auth' or 'any'");
      if (!u32ok(bits) || bits === 0 || bits % 8 !== 0) throw new RangeError('bits must be a positive multiple of 8 below 2^32');
      if (!u32ok(fko) || fko % 8 !== 0 || fko + bits > 0xffff_ffff) throw new RangeError('firstKeyOffset must be a multiple of 8 with firstKeyOffset + bits < 2^32');
      this.retireExhausted();
      if (this.stagingBatch()) throw new PoolError('STAGING_BUSY', 'a batch is already being staged; resume or abort it');
      if (seq <= this.lastSeq) throw new PoolError('ROLLBACK', `batch seq ${seq} is not above the last committed seq ${this.lastSeq}`);
      for (const b of this.batches.values()) if (b.batchId === batchId) throw new PoolError('DUPLICATE_BATCH', `batch ${batchId} is already in the pool`);
      if (this.batches.size >= this.maxBatches) throw new PoolError('TOO_MANY_BATCHES', `the pool holds its maximum of ${this.maxBatches} batches`);
      if (this.storedBits() + bits > this.maxKeyBits) {
        throw new PoolError('NO_SPACE', `batch of ${bits} bits does not fit: ${this.storedBits()} stored, max ${this.maxKeyBits}`);
      }
      const need = Math.ceil(bits / 8 / this.P);
      const avail = this.freeCount() + this.releasableCount();
      if (need > avail) {
        const bad = this.bad.reduce((n, x) => n + x, 0);
        throw new PoolError(bad > 0 ? 'WORN_OUT' : 'NO_SPACE', `batch needs ${need} sectors, ${avail} available (${bad} worn out or bad)`);
      }
      const uid = this.nextUid;
      this.log(REC.BEGIN, new Writer(25).u32(uid).u32(batchId).u32(seq).u8(PURPOSE_CODE[purpose]).u32(bits).u32(fko).u32(this.cursor).done());
      this.flash.sync();
      return new StageHandle(this, this.batches.get(uid)!);
    });
  }

  /** The batch being staged (e.g. after a remount, to resume at its durableOffset), or null. */
  staging(): StageHandle | null {
    this.alive();
    const b = this.stagingBatch();
    return b ? new StageHandle(this, b) : null;
  }

  /** @internal StageHandle.write */
  _write(b: Batch, offset: number, bytes: Uint8Array): void {
    this.run(() => {
      this.current(b);
      if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array');
      if (offset !== b.durable) throw new PoolError('STAGE_OFFSET', `write at ${offset}, expected the durable offset ${b.durable}`);
      if (offset + bytes.length > b.bytes) throw new PoolError('STAGE_OFFSET', `write past the end of the ${b.bytes}-byte batch`);
      if (bytes.length === 0) return;
      const end = offset + bytes.length;
      // A cut may have left these bytes partly programmed: the same bytes complete them,
      // different bytes can't be written. Check before touching anything.
      for (let pos = offset; pos < end; ) {
        const i = Math.floor(pos / this.P);
        const off = pos % this.P;
        const n = Math.min(this.P - off, end - pos);
        const s = b.sectors[i]!;
        if (s >= 0) {
          const old = this.flash.read(this.payloadAddr(s, off), n);
          for (let k = 0; k < n; k++) {
            if ((bytes[pos - offset + k]! & ~old[k]!) !== 0) {
              throw new PoolError('STAGE_CONFLICT', `bytes at ${pos + k} differ from what was written there before; abort the batch`);
            }
          }
        }
        pos += n;
      }
      for (let pos = offset; pos < end; ) {
        const i = Math.floor(pos / this.P);
        const off = pos % this.P;
        const n = Math.min(this.P - off, end - pos);
        let s = b.sectors[i]!;
        if (s < 0) s = this.allocate(b, i);
        programSpan(this.flash, this.payloadAddr(s, off), bytes.subarray(pos - offset, pos - offset + n));
        pos += n;
      }
      this.log(REC.PROGRESS, new Writer(8).u32(b.uid).u32(end).done());
      this.flash.sync();
    });
  }

  /** @internal StageHandle.rewind */
  _rewind(b: Batch, offset: number): void {
    this.run(() => {
      this.current(b);
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > b.durable) throw new PoolError('STAGE_OFFSET', `rewind to ${offset}: not in 0..${b.durable}`);
      if (offset === b.durable) return;
      this.log(REC.PROGRESS, new Writer(8).u32(b.uid).u32(offset).done());
      this.flash.sync();
    });
  }

  /** @internal StageHandle.commit */
  _commit(b: Batch): BatchStatus {
    return this.run(() => {
      this.current(b);
      if (b.durable !== b.bytes) throw new PoolError('STAGE_INCOMPLETE', `only ${b.durable} of ${b.bytes} bytes written`);
      if (b.seq <= this.lastSeq) throw new PoolError('ROLLBACK', `batch seq ${b.seq} is not above the last committed seq ${this.lastSeq}`);
      // Older batches left with crumbs no key of the owner's can use are retired with the commit
      // (their few bytes burned), so they never pile up against maxBatches over a service life.
      // One record does both: a cut leaves the state before the commit or after it, never between.
      const crumb = this.opts.crumbBytes ?? 0;
      const crumbs = this.sortedCommitted().filter((o) => o.bytes - o.frontier < crumb);
      const before = this.storedBits();
      if (crumbs.length === 0) this.log(REC.COMMIT, new Writer(8).u32(b.uid).u32(b.seq).done());
      else {
        const w = new Writer(9 + 4 * crumbs.length).u32(b.uid).u32(b.seq).u8(crumbs.length);
        for (const o of crumbs) w.u32(o.uid);
        this.log(REC.COMMIT_RETIRE, w.done());
        // Their sectors are unowned now: wiped here, or by mount after a cut.
        for (const o of crumbs) {
          for (const abs of o.sectors) {
            if (abs < 0) continue;
            this.owner[abs - this.dataStart] = undefined;
            this.wipeSector(abs);
          }
        }
      }
      b.frontier = 0;
      this.flash.sync();
      this.watermark(before);
      return this.batchStatus(b);
    });
  }

  /** @internal StageHandle.abort and discardBatch */
  _drop(b: Batch): void {
    this.run(() => {
      this.current(b);
      this.dropBatch(b);
    });
  }

  // ---------------------------------------------------------------- consumption

  /**
   * Take the next `bytes`-byte key for `purpose`: from the committed batch with the lowest
   * seq that serves it ('any' batches serve both purposes; a key never spans batches, so a
   * batch whose remainder is too short is passed over and keeps it for shorter keys).
   * Recorded consumed in flash, synced, and zeroized before it is returned.
   */
  consume(purpose: Purpose, bytes: number): ConsumedKey {
    return this.run(() => {
      if (!(purpose in PURPOSE_CODE)) throw new TypeError("purpose must be 'enc', 'auth' or 'any'");
      this.checkKeyLen(bytes);
      const b = this.sortedCommitted().find((x) => (purpose === 'any' || x.purpose === purpose || x.purpose === 'any') && x.bytes - x.frontier >= bytes);
      if (!b) throw new PoolError('EXHAUSTED', `no ${purpose} key of ${bytes} bytes left`);
      return this.take(b, b.frontier, bytes);
    });
  }

  /**
   * Take exactly the key the peer named. Refuses a key that was consumed or burned, or that
   * the pool does not hold. Keys between the batch's frontier and the named one are burned
   * (zeroized, never served): consumption inside a batch is in order.
   */
  consumeById(keyId: KeyId, bytes: number): ConsumedKey {
    return this.run(() => {
      const { b, o } = this.locate(keyId, bytes);
      return this.take(b, o, bytes);
    });
  }

  /**
   * Read the named key without consuming it: for a peer that must check a message before it
   * spends the keys the message names (the station: a forged uplink burns nothing). Refuses
   * exactly what consumeById refuses. Writes nothing; the caller wipes the copy and, if the
   * message is authentic, takes the key with consumeById.
   */
  peekById(keyId: KeyId, bytes: number): Uint8Array {
    return this.run(() => {
      const { b, o } = this.locate(keyId, bytes);
      const key = new Uint8Array(bytes);
      this.pieces(o, o + bytes, (i, off, len, at) => key.set(this.flash.read(this.payloadAddr(this.sectorOf(b, i), off), len), at - o));
      return key;
    });
  }

  /** The live committed batch and byte offset of the named key, or the refusal consumeById and peekById share. */
  private locate(keyId: KeyId, bytes: number): { b: Batch; o: number } {
    if (!keyId || !u32ok(keyId.batchId) || !Number.isSafeInteger(keyId.bitOffset)) throw new TypeError('keyId must be {batchId: u32, bitOffset: integer}');
    this.checkKeyLen(bytes);
    const b = [...this.batches.values()].find((x) => x.committed && x.batchId === keyId.batchId);
    const rel = keyId.bitOffset - (b?.fko ?? 0);
    if (!b || rel < 0 || rel % 8 !== 0 || rel / 8 + bytes > b.bytes) {
      throw new PoolError('NOT_PRESENT', `no key of ${bytes} bytes at batch ${keyId.batchId} bit ${keyId.bitOffset}`);
    }
    if (rel / 8 < b.frontier) throw new PoolError('ALREADY_CONSUMED', `key at batch ${keyId.batchId} bit ${keyId.bitOffset} was already consumed`);
    return { b, o: rel / 8 };
  }

  /** Record [frontier, o+n) consumed (marks), zeroize it, sync; then hand out [o, o+n). */
  private take(b: Batch, o: number, n: number): ConsumedKey {
    const before = this.storedBits();
    const start = b.frontier;
    const end = o + n;
    const key = new Uint8Array(n);
    this.pieces(o, end, (i, off, len, at) => key.set(this.flash.read(this.payloadAddr(this.sectorOf(b, i), off), len), at - o));
    let cur = -1;
    try {
      // 1. marks, in increasing order: whatever a cut leaves, the frontier moves forward only
      this.pieces(start, end, (i, off, len) => {
        cur = i;
        const s = this.sectorOf(b, i);
        const k0 = off >> 2;
        const addr = s * this.S + DATA_HEADER + k0;
        const old = this.flash.read(addr, ((off + len - 1) >> 2) - k0 + 1);
        programSpan(this.flash, addr, applyMarks(old, off, off + len));
      });
      // 2. zeroize in place (NOR allows programming 0x00 over anything)
      this.pieces(start, end, (i, off, len) => {
        cur = i;
        programSpan(this.flash, this.payloadAddr(this.sectorOf(b, i), off), new Uint8Array(len));
      });
    } catch (e) {
      if (!(e instanceof FlashError) || (e.code !== 'WORN_OUT' && e.code !== 'BAD_SECTOR')) throw e;
      // The sector can't take marks: burn it (and everything before) durably in the journal
      // instead, and serve nothing. Later keys come from the next sector.
      this.bad[b.sectors[cur]! - this.dataStart] = 1;
      b.frontier = Math.max(b.frontier, Math.min(b.bytes, (cur + 1) * this.P));
      this.release(b, cur + 1);
      this.flash.sync();
      this.watermark(before);
      throw new PoolError('IO', `key sector failed (${e.code}); its keys were burned, none served`, { cause: e });
    }
    this.flash.sync();
    b.frontier = end;
    const keyId = { batchId: b.batchId, bitOffset: b.fko + o * 8 };
    // The last key of the batch is gone: retire it now, so its slot and sectors come back
    // (a cut before this is finished by mount). Lifetime batches are unlimited this way.
    if (b.frontier >= b.bytes) this.retire(b);
    this.watermark(before);
    return { keyId, key, skippedBits: (o - start) * 8 };
  }

  // ---------------------------------------------------------------- recycling, zeroize

  /** Recycle (release and erase) every fully consumed sector now; returns how many. Also done on demand and at mount. */
  maintain(): number {
    return this.run(() => {
      const n = this.releaseAll();
      if (n > 0) this.flash.sync();
      return n;
    });
  }

  /** Zeroize one live batch (committed or staging): its remaining keys are wiped. Returns its remaining bits. */
  discardBatch(batchId: number): number {
    return this.run(() => {
      const b = [...this.batches.values()].find((x) => x.batchId === batchId);
      if (!b) throw new PoolError('NOT_PRESENT', `no batch ${batchId} in the pool`);
      const left = b.committed ? (b.bytes - b.frontier) * 8 : 0;
      const before = this.storedBits();
      this.dropBatch(b);
      this.watermark(before);
      return left;
    });
  }

  /**
   * Wipe every key byte (the module's authorized zeroize). Power-safe: the ZEROIZE record
   * kills all batches first, then sectors are erased; a cut in between is finished by mount.
   * The anti-rollback counter survives. Returns the number of batches wiped (committed and
   * staging). A worn-out sector that can be neither erased nor zero-programmed is counted in
   * status().sectors.bad (its consumed keys were zeroized when used).
   */
  zeroizeAll(): number {
    return this.run(() => {
      const before = this.storedBits();
      const wiped = this.batches.size;
      let consumed = 0;
      for (const b of this.batches.values()) if (b.committed) consumed += b.frontier * 8;
      this.log(REC.ZEROIZE, new Writer(8).f64(consumed).done());
      this.owner.fill(undefined);
      for (let d = 0; d < this.dataCount; d++) {
        const abs = this.dataStart + d;
        if (!isBlank(this.flash.read(abs * this.S, this.S))) this.wipeSector(abs);
      }
      this.flash.sync();
      this.watermark(before);
      return wiped;
    });
  }

  // ---------------------------------------------------------------- status

  status(): PoolStatus {
    this.alive();
    const committed = this.sortedCommitted();
    const st = this.stagingBatch();
    let inUse = 0;
    let bad = 0;
    for (let d = 0; d < this.dataCount; d++) {
      if (this.owner[d]) inUse++;
      if (this.bad[d]) bad++;
    }
    return {
      storedKeyBits: this.storedBits(),
      maxKeyBits: this.maxKeyBits,
      consumedKeyBits: this.retiredBits + committed.reduce((s, b) => s + b.frontier * 8, 0),
      batches: committed.map((b) => this.batchStatus(b)),
      staging: st ? { batchId: st.batchId, seq: st.seq, purpose: st.purpose, bits: st.bits, durableBits: st.durable * 8 } : null,
      lastSeq: this.lastSeq >= 0 ? this.lastSeq : null,
      sectors: { data: this.dataCount, free: this.freeCount(), inUse, releasable: this.releasableCount(), bad },
      lowWatermarkBits: this.lowWatermarkBits,
    };
  }

  /**
   * Where things are on flash, for tests and benchmarks. Addresses only, never key bytes.
   */
  inspect(): {
    sectorSize: number;
    payloadPerSector: number;
    payloadOffset: number;
    dataStart: number;
    dataCount: number;
    journal: { sector: number; ringSeq: number; unit: number; dirty: boolean };
    batches: Array<{ batchId: number; uid: number; committed: boolean; firstLive: number; frontierBytes: number; durableBytes: number; sectors: number[] }>;
  } {
    return {
      sectorSize: this.S,
      payloadPerSector: this.P,
      payloadOffset: DATA_HEADER + this.M,
      dataStart: this.dataStart,
      dataCount: this.dataCount,
      journal: this.journal.position,
      batches: [...this.batches.values()].map((b) => ({
        batchId: b.batchId, uid: b.uid, committed: b.committed, firstLive: b.firstLive,
        frontierBytes: b.frontier, durableBytes: b.durable, sectors: [...b.sectors],
      })),
    };
  }

  // ---------------------------------------------------------------- internals

  private run<T>(fn: () => T): T {
    this.alive();
    try {
      return fn();
    } catch (e) {
      if (e instanceof PoolError || e instanceof TypeError || e instanceof RangeError) {
        if (e instanceof PoolError && e.code === 'CORRUPT') this.dead = true;
        throw e;
      }
      // A power cut or failed flash operation mid-way: RAM may no longer match flash.
      this.dead = true;
      if (e instanceof FlashError) throw new PoolError('IO', `flash operation failed: ${e.code}`, { cause: e });
      throw e;
    }
  }

  private alive(): void {
    if (this.dead) throw new PoolError('UNMOUNTED', 'pool lost power or failed; mount again');
    if (mounts.get(this.flash) !== this) throw new PoolError('UNMOUNTED', 'the flash was mounted again; this pool object is stale');
  }

  private current(b: Batch): void {
    if (this.batches.get(b.uid) !== b || b.committed) throw new PoolError('STALE_HANDLE', 'this staging handle is no longer valid');
  }

  private checkKeyLen(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > MAX_KEY_BYTES) throw new RangeError(`bytes must be an integer in 1..${MAX_KEY_BYTES}`);
  }

  private stagingBatch(): Batch | undefined {
    for (const b of this.batches.values()) if (!b.committed) return b;
    return undefined;
  }

  private sortedCommitted(): Batch[] {
    return [...this.batches.values()].filter((b) => b.committed).sort((a, b) => a.seq - b.seq || a.uid - b.uid);
  }

  private storedBits(): number {
    let s = 0;
    for (const b of this.batches.values()) if (b.committed) s += (b.bytes - b.frontier) * 8;
    return s;
  }

  private batchStatus(b: Batch): BatchStatus {
    return { batchId: b.batchId, seq: b.seq, purpose: b.purpose, bits: b.bits, consumedBits: b.frontier * 8, firstKeyOffset: b.fko };
  }

  private payloadAddr(sector: number, off: number): number {
    return sector * this.S + DATA_HEADER + this.M + off;
  }

  private sectorOf(b: Batch, i: number): number {
    const s = b.sectors[i];
    if (s === undefined || s < 0) {
      this.dead = true;
      throw new PoolError('CORRUPT', `batch ${b.batchId} has no sector for index ${i}`);
    }
    return s;
  }

  /** Split batch byte range [a, c) into per-sector pieces. */
  private pieces(a: number, c: number, fn: (index: number, off: number, len: number, at: number) => void): void {
    for (let pos = a; pos < c; ) {
      const i = Math.floor(pos / this.P);
      const off = pos % this.P;
      const n = Math.min(this.P - off, c - pos);
      fn(i, off, n, pos);
      pos += n;
    }
  }

  private freeCount(): number {
    let n = 0;
    for (let d = 0; d < this.dataCount; d++) if (!this.owner[d] && !this.bad[d]) n++;
    return n;
  }

  private releasableIndex(b: Batch): number {
    return b.frontier >= b.bytes ? b.nSectors : Math.floor(b.frontier / this.P);
  }

  private releasableCount(): number {
    let n = 0;
    for (const b of this.batches.values()) {
      if (!b.committed) continue;
      for (let i = b.firstLive; i < this.releasableIndex(b); i++) if (b.sectors[i]! >= 0) n++;
    }
    return n;
  }

  /** Release sectors [firstLive, k) of `b`: record first, then erase. `dead` collects freed ones if given. */
  private release(b: Batch, k: number, collect?: number[]): void {
    const freed: number[] = [];
    for (let i = b.firstLive; i < k; i++) {
      const s = b.sectors[i]!;
      if (s >= 0) {
        freed.push(s);
        b.sectors[i] = -1;
        this.owner[s - this.dataStart] = undefined;
      }
    }
    this.log(REC.RELEASE, new Writer(8).u32(b.uid).u32(k).done());
    for (const s of freed) {
      if (collect) collect.push(s - this.dataStart); // mount erases unowned garbage next
      else this.wipeSector(s);
    }
  }

  /** Retire a used-up batch durably: RELEASE of all its sectors deletes it (apply) and they are erased. */
  private retire(b: Batch): void {
    this.release(b, b.nSectors);
    this.flash.sync();
  }

  /** Retire every committed batch with nothing left (after a cut between its last marks and its retirement). */
  private retireExhausted(): boolean {
    let any = false;
    for (const b of this.sortedCommitted()) {
      if (b.frontier >= b.bytes) {
        this.retire(b);
        any = true;
      }
    }
    return any;
  }

  private releaseAll(): number {
    let n = 0;
    for (const b of this.sortedCommitted()) {
      const k = this.releasableIndex(b);
      if (k > b.firstLive) {
        for (let i = b.firstLive; i < k; i++) if (b.sectors[i]! >= 0) n++;
        this.release(b, k);
      }
    }
    return n;
  }

  private dropBatch(b: Batch): void {
    const consumed = b.committed ? b.frontier * 8 : 0;
    const sectors = [...b.sectors].filter((s) => s >= 0);
    for (const s of sectors) this.owner[s - this.dataStart] = undefined;
    this.log(REC.DROP, new Writer(8).u32(b.uid).u32(consumed).done());
    for (const s of sectors) this.wipeSector(s);
    this.flash.sync();
  }

  /** Erase a dead sector; a worn one is zero-programmed instead where possible. False if it kept data. */
  private wipeSector(abs: number): boolean {
    try {
      this.flash.erase(abs);
      return true;
    } catch (e) {
      if (!(e instanceof FlashError) || (e.code !== 'WORN_OUT' && e.code !== 'BAD_SECTOR')) throw e;
      this.bad[abs - this.dataStart] = 1;
      try {
        programSpan(this.flash, abs * this.S, new Uint8Array(this.S));
        return true;
      } catch (e2) {
        if (e2 instanceof FlashError) return false;
        throw e2;
      }
    }
  }

  /** Give batch `b` a blank sector for index `i`, round robin from the cursor (even wear for FIFO use). */
  private allocate(b: Batch, i: number): number {
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 0; k < this.dataCount; k++) {
        const d = (this.cursor + k) % this.dataCount;
        if (this.owner[d] || this.bad[d]) continue;
        const abs = this.dataStart + d;
        if (!isBlank(this.flash.read(abs * this.S, this.S))) {
          try {
            this.flash.erase(abs);
          } catch (e) {
            if (e instanceof FlashError && (e.code === 'WORN_OUT' || e.code === 'BAD_SECTOR')) {
              this.bad[d] = 1;
              continue;
            }
            throw e;
          }
          if (!isBlank(this.flash.read(abs * this.S, this.S))) {
            this.bad[d] = 1;
            continue;
          }
        }
        this.flash.program(abs * this.S, encodeDataHeader(b.uid, i));
        this.owner[d] = b;
        b.sectors[i] = abs;
        this.cursor = (d + 1) % this.dataCount;
        return abs;
      }
      if (this.releaseAll() === 0) break;
    }
    const bad = this.bad.reduce((s, x) => s + x, 0);
    if (bad > 0) throw new PoolError('WORN_OUT', `no usable sector left (${bad} worn out or bad)`);
    throw new PoolError('NO_SPACE', 'no free sector left');
  }

  private watermark(before: number): void {
    const now = this.storedBits();
    if (this.onLowWatermark && before >= this.lowWatermarkBits && now < this.lowWatermarkBits) {
      try {
        this.onLowWatermark(this.status());
      } catch {
        // A listener's failure must not undo or hide a completed consumption.
      }
    }
  }
}

