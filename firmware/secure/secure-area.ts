// The module's secure area: the first SECURE_SECTORS sectors of its flash, which the key pool
// never touches. Its state (identity, counters, live batch ids, two audit rings) lives in RAM and
// on the module's one record log (firmware/flash/record-log.ts): each change is one appended
// record, each new log sector opens with a checkpoint of the whole state. Every record kind has a
// bound derived from the sector size, so the checkpoint always fits and compaction never fails
// for lack of room (docs/secure-area.md states the bounds and the retention rules).
import type { BlockDevice } from '../flash/block-device.js';
import { FlashError, PowerCutError } from '../flash/errors.js';
import { RecordLog, RecordLogError, UNIT, unitsFor } from '../flash/record-log.js';
import type { LogRecord, NewRecord } from '../flash/record-log.js';
import { AUDIT_TYPES, SECURITY_EVENTS } from './types.js';
import type { AuditEvent, AuditType, Identity, SecureArea, SecureHealth } from './types.js';

/** Sectors reserved at the start of the flash for the secure area's record log. */
export const SECURE_SECTORS = 4;
/** Live batches a pool holds at most (POOL_OPTIONS: the KeyPool default): their full ids are kept. */
export const KEEP_BATCH_IDS = 32;
/** At most one coalesced `refused` event per this long, however many refusals come in. */
export const REFUSAL_INTERVAL_MS = 10 * 60 * 1000;

const MAGIC = 0x3253_4b51; // 'QKS2': the secure area on the record log (QKR1 was the old record store)
const VERSION = 1;
const T = { IDENTITY: 1, ADMIN_COUNTER: 2, FAILED_AUTH: 3, EVENT: 4, BATCH_IDS: 5 } as const;
/** An event record is 3 units: 14 bytes of fields and up to 28 bytes of detail (16 for `refused`, which adds count and first). */
const EVENT_UNITS = 3;
const DETAIL_MAX = 28;
const REFUSED_DETAIL_MAX = 16;
/** Batch ids per checkpoint record (9 units for 8). */
const IDS_PER_RECORD = 8;

/** The bounds of the secure area for a sector size: what a checkpoint can hold, by kind. */
export function secureBounds(sectorSize: number): { checkpointUnits: number; securityEvents: number; routineEvents: number; batchIds: number } {
  const units = sectorSize / UNIT;
  // Three quarters of a sector for the checkpoint, a quarter to append into before the next one.
  const checkpointUnits = Math.floor((units * 3) / 4) - 1;
  const fixed = unitsFor(1 + 32 + 32) + unitsFor(4) + unitsFor(2) + Math.ceil(KEEP_BATCH_IDS / IDS_PER_RECORD) * unitsFor(1 + 16 * IDS_PER_RECORD);
  const slots = Math.floor((checkpointUnits - fixed) / EVENT_UNITS);
  if (slots < 4) throw new RangeError(`sectors of ${sectorSize} bytes are too small for the secure area`);
  const securityEvents = Math.min(16, Math.floor(slots / 3));
  return { checkpointUnits, securityEvents, routineEvents: slots - securityEvents, batchIds: KEEP_BATCH_IDS };
}

export class SecureAreaError extends Error {
  constructor(
    message: string,
    readonly code: 'ALREADY_ENROLLED' | 'FULL' | 'BAD_INPUT',
  ) {
    super(message);
    this.name = 'SecureAreaError';
  }
}

interface State {
  identity: { terminalId: string; deviceKey: Uint8Array } | undefined;
  adminCounter: number;
  failed: { count: number; locked: boolean };
  /** poolId -> full 16-byte batch id, oldest first. */
  batchIds: Map<number, Uint8Array>;
  security: AuditEvent[];
  routine: AuditEvent[];
  lastN: number;
}

const emptyState = (): State => ({ identity: undefined, adminCounter: 0, failed: { count: 0, locked: false }, batchIds: new Map(), security: [], routine: [], lastN: 0 });

const poolIdOf = (id: Uint8Array): number => ((id[0]! << 24) | (id[1]! << 16) | (id[2]! << 8) | id[3]!) >>> 0;
const ascii = (s: string, max: number): Buffer => Buffer.from(s.replace(/[^\x20-\x7e]/g, '?').slice(0, max), 'ascii');

class FlashSecureArea implements SecureArea {
  /** Undefined on a blank (never enrolled, or factory-reset) module. */
  private log: RecordLog | undefined;
  private s: State = emptyState();
  private readonly bounds: ReturnType<typeof secureBounds>;
  private live: (() => Iterable<number>) | undefined;
  private damage: string | undefined;
  private pending = { count: 0, first: 0, last: 0, detail: '' };
  /** When refusals were last written (boot counts as a write): at most one `refused` event per interval. */
  private lastRefusalWrite: number;

  constructor(
    private readonly flash: BlockDevice,
    private readonly clock: () => number,
  ) {
    this.bounds = secureBounds(flash.geometry.sectorSize);
    this.lastRefusalWrite = clock();
    const log = this.newLog();
    let scan;
    try {
      scan = log.scan({ tolerant: true });
    } catch (e) {
      if (!(e instanceof RecordLogError && e.code === 'NOT_FORMATTED')) throw e;
      // Blank is unenrolled; anything else written there is an area we cannot read.
      for (let i = 0; i < SECURE_SECTORS; i++) {
        if (!flash.read(i * flash.geometry.sectorSize, flash.geometry.sectorSize).every((b) => b === 0xff)) {
          this.damage = 'no valid secure area header (not blank: damaged or an older format)';
          break;
        }
      }
      return;
    }
    this.log = log;
    for (const r of scan.records) this.apply(r);
    wipeRead(scan.records); // the sector copy read holds the identity record
    if (scan.damagedUnits > 0) {
      this.damage = `${scan.damagedUnits * UNIT} bytes of the secure area were unreadable at boot`;
      this.recoverFromOlder(log);
      this.audit('area-damaged', `${scan.damagedUnits} units lost`); // rolls over: the area is rewritten clean
    }
  }

  private newLog(): RecordLog {
    return new RecordLog(this.flash, {
      firstSector: 0,
      sectorCount: SECURE_SECTORS,
      magic: MAGIC,
      version: VERSION,
      checkpointUnits: this.bounds.checkpointUnits,
      checkpoint: () => this.checkpoint(),
    });
  }

  /** Damage in the newest sector: take what it lost from the older ones, erring safe (counters only up). */
  private recoverFromOlder(log: RecordLog): void {
    for (const [idx, gen] of log.generations().slice(1)) {
      const old = emptyState();
      const apply = this.apply.bind(this);
      const keep = this.s;
      this.s = old;
      try {
        const recs = log.readOlder(idx, gen);
        for (const r of recs) apply(r);
        wipeRead(recs);
      } finally {
        this.s = keep;
      }
      if (this.s.identity) old.identity?.deviceKey.fill(0);
      else this.s.identity = old.identity;
      this.s.adminCounter = Math.max(this.s.adminCounter, old.adminCounter);
      this.s.failed = { count: Math.max(this.s.failed.count, old.failed.count), locked: this.s.failed.locked || old.failed.locked };
      for (const [k, v] of old.batchIds) if (!this.s.batchIds.has(k)) this.s.batchIds.set(k, v);
    }
  }

  // ---- record codec: every kind is self-delimiting (the log pads payloads with 0xFF)

  private apply(r: LogRecord): void {
    const p = new Uint8Array(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength);
    const v = r.payload;
    switch (r.type) {
      case T.IDENTITY: {
        const n = p[0]!;
        if (n < 1 || n > 32) return;
        this.s.identity = { terminalId: Buffer.from(p.subarray(1, 1 + n)).toString('ascii'), deviceKey: p.slice(1 + n, 1 + n + 32) };
        return;
      }
      case T.ADMIN_COUNTER:
        this.s.adminCounter = v.getUint32(0, true);
        return;
      case T.FAILED_AUTH:
        this.s.failed = { count: p[0]!, locked: p[1] === 1 };
        return;
      case T.BATCH_IDS: {
        const n = Math.min(p[0]!, IDS_PER_RECORD);
        for (let i = 0; i < n; i++) {
          const id = p.slice(1 + 16 * i, 17 + 16 * i);
          this.s.batchIds.delete(poolIdOf(id));
          this.s.batchIds.set(poolIdOf(id), id);
        }
        // No trim while replaying: which ids are live is known only once the pool is mounted;
        // the map is bounded meanwhile by what one sector holds, and the next checkpoint keeps
        // only live ids.
        return;
      }
      case T.EVENT: {
        const type = AUDIT_TYPES[p[12]!];
        if (!type) return;
        const len = p[13]!;
        const e: AuditEvent = { n: v.getUint32(0, true), at: v.getFloat64(4, true), type, detail: '' };
        let at = 14;
        if (type === 'refused') {
          e.count = v.getUint32(14, true);
          e.first = v.getFloat64(18, true);
          at = 26;
        }
        e.detail = Buffer.from(p.subarray(at, at + len)).toString('ascii');
        this.pushEvent(e);
        return;
      }
      default:
        return; // a kind from a later firmware: ignored, and dropped by the next checkpoint
    }
  }

  private encodeEvent(e: AuditEvent): Uint8Array {
    const refused = e.type === 'refused';
    const d = ascii(e.detail, refused ? REFUSED_DETAIL_MAX : DETAIL_MAX);
    const head = refused ? 26 : 14;
    const p = new Uint8Array(head + d.length);
    const v = new DataView(p.buffer);
    v.setUint32(0, e.n, true);
    v.setFloat64(4, e.at, true);
    p[12] = AUDIT_TYPES.indexOf(e.type);
    p[13] = d.length;
    if (refused) {
      v.setUint32(14, e.count ?? 0, true);
      v.setFloat64(18, e.first ?? e.at, true);
    }
    p.set(d, head);
    return p;
  }

  private encodeIds(ids: Uint8Array[]): Uint8Array {
    const p = new Uint8Array(1 + 16 * ids.length);
    p[0] = ids.length;
    ids.forEach((id, i) => p.set(id, 1 + 16 * i));
    return p;
  }

  private pushEvent(e: AuditEvent): void {
    const ring = SECURITY_EVENTS.has(e.type) ? this.s.security : this.s.routine;
    ring.push(e);
    const depth = SECURITY_EVENTS.has(e.type) ? this.bounds.securityEvents : this.bounds.routineEvents;
    while (ring.length > depth) ring.shift();
    this.s.lastN = Math.max(this.s.lastN, e.n);
  }

  /** Keep at most KEEP_BATCH_IDS ids: drop ids of batches no longer live first, never a live one while a dead one is left. */
  private trimBatchIds(): void {
    if (this.s.batchIds.size <= KEEP_BATCH_IDS) return;
    const live = this.liveSet();
    if (live) for (const k of [...this.s.batchIds.keys()]) if (this.s.batchIds.size > KEEP_BATCH_IDS && !live.has(k)) this.s.batchIds.delete(k);
    for (const k of [...this.s.batchIds.keys()]) if (this.s.batchIds.size > KEEP_BATCH_IDS) this.s.batchIds.delete(k);
  }

  /** The pool's live batch ids, or undefined when unknown (no pool mounted): then nothing is dropped as dead. */
  private liveSet(): Set<number> | undefined {
    try {
      return this.live ? new Set(this.live()) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The whole state, bounded kind by kind (secureBounds): what a new log sector starts with. */
  private checkpoint(): NewRecord[] {
    const out: NewRecord[] = [];
    const id = this.s.identity;
    if (id) {
      const tid = Buffer.from(id.terminalId, 'ascii');
      const p = new Uint8Array(1 + tid.length + 32);
      p[0] = tid.length;
      p.set(tid, 1);
      p.set(id.deviceKey, 1 + tid.length);
      out.push({ type: T.IDENTITY, payload: p });
    }
    out.push({ type: T.ADMIN_COUNTER, payload: this.u32(this.s.adminCounter) });
    out.push({ type: T.FAILED_AUTH, payload: Uint8Array.of(Math.min(this.s.failed.count, 255), this.s.failed.locked ? 1 : 0) });
    // Only the ids of live batches are kept: the set is bounded by the pool's live batches.
    const live = this.liveSet(); // undefined when the pool is not mounted: keep every id (trimmed below)
    if (live) for (const k of [...this.s.batchIds.keys()]) if (!live.has(k)) this.s.batchIds.delete(k);
    this.trimBatchIds();
    const ids = [...this.s.batchIds.values()];
    for (let i = 0; i < ids.length; i += IDS_PER_RECORD) out.push({ type: T.BATCH_IDS, payload: this.encodeIds(ids.slice(i, i + IDS_PER_RECORD)) });
    for (const e of [...this.s.security, ...this.s.routine].sort((a, b) => a.n - b.n)) out.push({ type: T.EVENT, payload: this.encodeEvent(e) });
    return out;
  }

  private u32(n: number): Uint8Array {
    const p = new Uint8Array(4);
    new DataView(p.buffer).setUint32(0, n, true);
    return p;
  }

  private append(type: number, payload: Uint8Array): void {
    if (!this.log) throw new SecureAreaError('module is not enrolled', 'BAD_INPUT');
    this.log.append({ type, payload });
    this.flash.sync();
  }

  // ---- SecureArea

  enroll(id: Identity): void {
    if (this.s.identity) throw new SecureAreaError('module is already enrolled', 'ALREADY_ENROLLED');
    const tid = Buffer.from(id.terminalId, 'ascii');
    if (id.deviceKey.length !== 32 || tid.length < 1 || tid.length > 32) throw new SecureAreaError('bad identity', 'BAD_INPUT');
    const log = this.newLog();
    log.kill();
    this.s = emptyState();
    this.s.identity = { terminalId: id.terminalId, deviceKey: Uint8Array.from(id.deviceKey) };
    log.create(this.checkpoint());
    this.flash.sync();
    this.log = log;
    this.damage = undefined;
    this.audit('enrolled', id.terminalId);
  }

  identity(): Identity | undefined {
    const id = this.s.identity;
    return id ? { terminalId: id.terminalId, deviceKey: Uint8Array.from(id.deviceKey) } : undefined;
  }

  terminalId(): string | undefined {
    return this.s.identity?.terminalId;
  }

  adminCounter(): number {
    return this.s.adminCounter;
  }

  setAdminCounter(n: number): void {
    this.append(T.ADMIN_COUNTER, this.u32(n));
    this.s.adminCounter = n;
  }

  failedAuth(): { count: number; locked: boolean } {
    return { ...this.s.failed };
  }

  setFailedAuth(count: number, locked: boolean): void {
    const c = Math.min(count, 255);
    this.append(T.FAILED_AUTH, Uint8Array.of(c, locked ? 1 : 0));
    this.s.failed = { count: c, locked };
  }

  audit(type: AuditType, detail: string): void {
    if (!this.log) return;
    if (type !== 'refused') this.flushRefusals(true);
    this.writeEvent({ n: this.s.lastN + 1, at: this.clock(), type, detail });
  }

  private writeEvent(e: AuditEvent): void {
    // Stored as it will read back (detail cut to the record's room), then appended.
    const p = this.encodeEvent(e);
    try {
      this.append(T.EVENT, p);
    } catch (err) {
      if (err instanceof PowerCutError) throw err;
      // An audit write never fails a boot or a command: say so in STATUS instead.
      const why = err instanceof FlashError || err instanceof RecordLogError ? err.code : (err as Error).name;
      this.damage = `audit write failed (${why})`;
    }
    this.apply({ type: T.EVENT, payload: new DataView(p.buffer) });
  }

  refused(detail: string): void {
    if (!this.log) return;
    const now = this.clock();
    const r = this.pending;
    if (r.count === 0) r.first = now;
    r.count++;
    r.last = now;
    r.detail = detail;
    this.flushRefusals(false);
  }

  /** Write the pending refusals as one event: when another event is logged anyway, or once per interval. */
  private flushRefusals(force: boolean): void {
    const r = this.pending;
    if (r.count === 0) return;
    if (!force && r.last - this.lastRefusalWrite < REFUSAL_INTERVAL_MS) return;
    this.pending = { count: 0, first: 0, last: 0, detail: '' };
    this.lastRefusalWrite = r.last;
    this.writeEvent({ n: this.s.lastN + 1, at: r.last, type: 'refused', detail: r.detail, count: r.count, first: r.first });
  }

  auditLog(from: number, max: number): AuditEvent[] {
    return [...this.s.security, ...this.s.routine]
      .sort((a, b) => a.n - b.n)
      .filter((e) => e.n >= from)
      .slice(0, max)
      .map((e) => ({ ...e }));
  }

  auditCount(): number {
    return this.s.lastN;
  }

  rememberBatch(poolId: number, batchId: Uint8Array): void {
    const have = this.s.batchIds.get(poolId);
    if (have && Buffer.compare(have, batchId) === 0) return;
    if (batchId.length !== 16 || poolIdOf(batchId) !== poolId) throw new SecureAreaError('a batch id is 16 bytes and starts with its pool id', 'BAD_INPUT');
    this.append(T.BATCH_IDS, this.encodeIds([batchId]));
    this.s.batchIds.delete(poolId);
    this.s.batchIds.set(poolId, Uint8Array.from(batchId));
    this.trimBatchIds();
  }

  batchIdFor(poolId: number): Uint8Array | undefined {
    return this.s.batchIds.get(poolId)?.slice();
  }

  setLiveBatches(live: () => Iterable<number>): void {
    this.live = live;
  }

  health(): SecureHealth {
    return { damaged: this.damage !== undefined, ...(this.damage ? { reason: this.damage } : {}), pendingRefusals: this.pending.count };
  }

  factoryReset(): void {
    this.s.identity?.deviceKey.fill(0);
    // Every header killed before any erase: a cut part-way can never leave an older sector to
    // be read as the enrolled state (with older counters).
    (this.log ?? this.newLog()).kill();
    this.flash.sync();
    this.log = undefined;
    this.s = emptyState();
    this.damage = undefined;
    this.pending = { count: 0, first: 0, last: 0, detail: '' };
  }
}

/** Zero the buffers a scan read (one holds the device key); apply() has copied what it keeps. */
function wipeRead(records: LogRecord[]): void {
  const seen = new Set<ArrayBufferLike>();
  for (const r of records) {
    if (seen.has(r.payload.buffer)) continue;
    seen.add(r.payload.buffer);
    new Uint8Array(r.payload.buffer).fill(0);
  }
}

export type WritableSecureArea = SecureArea & { enroll(id: Identity): void };

/** Open the secure area of a module's flash (blank flash: an empty, unenrolled area). */
export function openSecureArea(flash: BlockDevice, clock: () => number = Date.now): WritableSecureArea {
  return new FlashSecureArea(flash, clock);
}
