// The module's secure area: the first SECURE_SECTORS sectors of its flash, which the key pool
// never touches. A small power-safe record log in two banks (ping-pong): records are appended
// with a CRC; when a bank fills, the live records are copied to the other bank, whose header is
// programmed last as the commit point. After a cut: the bank with the newest valid header wins,
// and a torn last record is ignored (and compacted away before the next append).
import { crc32 } from 'node:zlib';
import type { BlockDevice } from '../flash/block-device.js';
import { AUDIT_TYPES } from './types.js';
import type { AuditEvent, AuditType, Identity, SecureArea } from './types.js';

/** Sectors reserved at the start of the flash: two banks of two sectors. */
export const SECURE_SECTORS = 4;
const BANK_SECTORS = SECURE_SECTORS / 2;
const HEADER_BYTES = 16;
const BANK_MAGIC = 0x5153_4131; // "QSA1"
const REC_MAGIC = 0xa5;
/** Record: magic u8, type u8, len u8, payload, crc32 u32 (over type, len, payload, generation). */
const REC_OVERHEAD = 7;

const T = { IDENTITY: 1, ADMIN_COUNTER: 2, FAILED_AUTH: 3, AUDIT: 4, BATCH_ID: 5 } as const;
/** Audit events and batch ids kept across a compaction. */
const KEEP_AUDIT = 48;
const KEEP_BATCH_IDS = 64;

interface Rec {
  type: number;
  payload: Uint8Array;
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

class FlashSecureArea implements SecureArea {
  private bank = 0;
  private generation = 0;
  private end = HEADER_BYTES;
  private dirty = false;
  private records: Rec[] = [];
  private readonly bankBytes: number;

  constructor(
    private readonly flash: BlockDevice,
    private readonly clock: () => number,
  ) {
    this.bankBytes = BANK_SECTORS * flash.geometry.sectorSize;
    this.load();
  }

  // ---- on-flash log

  private bankAddr(b: number): number {
    return b * this.bankBytes;
  }

  private readHeader(b: number): number | undefined {
    const h = this.flash.read(this.bankAddr(b), HEADER_BYTES);
    const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
    if (v.getUint32(0) !== BANK_MAGIC) return undefined;
    if (crc32(h.subarray(0, 8)) !== v.getUint32(8)) return undefined;
    return v.getUint32(4);
  }

  private load(): void {
    const g0 = this.readHeader(0);
    const g1 = this.readHeader(1);
    this.records = [];
    if (g0 === undefined && g1 === undefined) {
      this.generation = 0; // blank: nothing written yet
      this.end = HEADER_BYTES;
      return;
    }
    this.bank = g1 !== undefined && (g0 === undefined || g1 > g0) ? 1 : 0;
    this.generation = (this.bank === 0 ? g0 : g1)!;
    const raw = this.flash.read(this.bankAddr(this.bank), this.bankBytes);
    let at = HEADER_BYTES;
    while (at + REC_OVERHEAD <= raw.length && raw[at] !== 0xff) {
      const len = raw[at + 2]!;
      const stop = at + 3 + len + 4;
      if (raw[at] !== REC_MAGIC || stop > raw.length || crc32(this.crcInput(raw[at + 1]!, raw.subarray(at + 3, at + 3 + len))) !== new DataView(raw.buffer, raw.byteOffset).getUint32(at + 3 + len)) {
        this.dirty = true; // a torn append: ignore it, compact before writing again
        break;
      }
      this.records.push({ type: raw[at + 1]!, payload: raw.slice(at + 3, at + 3 + len) });
      at = stop;
    }
    this.end = at;
  }

  private crcInput(type: number, payload: Uint8Array): Uint8Array {
    const b = new Uint8Array(2 + payload.length + 4);
    b[0] = type;
    b[1] = payload.length;
    b.set(payload, 2);
    new DataView(b.buffer).setUint32(2 + payload.length, this.generation);
    return b;
  }

  private encodeRec(r: Rec): Uint8Array {
    const out = new Uint8Array(REC_OVERHEAD + r.payload.length);
    out[0] = REC_MAGIC;
    out[1] = r.type;
    out[2] = r.payload.length;
    out.set(r.payload, 3);
    new DataView(out.buffer).setUint32(3 + r.payload.length, crc32(this.crcInput(r.type, r.payload)));
    return out;
  }

  /** Program `bytes` at absolute `addr`, split at page boundaries (one program never crosses one). */
  private program(addr: number, bytes: Uint8Array): void {
    const page = this.flash.geometry.pageSize;
    let off = 0;
    while (off < bytes.length) {
      const a = addr + off;
      const n = Math.min(bytes.length - off, page - (a % page));
      this.flash.program(a, bytes.subarray(off, off + n));
      off += n;
    }
  }

  private append(r: Rec): void {
    if (r.payload.length > 255) throw new SecureAreaError('record too large', 'BAD_INPUT');
    if (this.generation === 0 || this.dirty || this.end + REC_OVERHEAD + r.payload.length > this.bankBytes) this.compact();
    if (this.end + REC_OVERHEAD + r.payload.length > this.bankBytes) throw new SecureAreaError('secure area full', 'FULL');
    this.program(this.bankAddr(this.bank) + this.end, this.encodeRec(r));
    this.flash.sync();
    this.end += REC_OVERHEAD + r.payload.length;
    this.records.push(r);
  }

  /** Copy the live records to the other bank; its header, programmed last, is the commit point. */
  private compact(): void {
    const live = this.liveRecords();
    const target = this.generation === 0 ? 0 : 1 - this.bank;
    const gen = this.generation + 1;
    for (let s = 0; s < BANK_SECTORS; s++) this.flash.erase(target * BANK_SECTORS + s);
    this.generation = gen; // CRCs bind the generation: records of an older life never count
    let at = HEADER_BYTES;
    for (const r of live) {
      const enc = this.encodeRec(r);
      this.program(this.bankAddr(target) + at, enc);
      at += enc.length;
    }
    const h = new Uint8Array(HEADER_BYTES).fill(0xff);
    const v = new DataView(h.buffer);
    v.setUint32(0, BANK_MAGIC);
    v.setUint32(4, gen);
    v.setUint32(8, crc32(h.subarray(0, 8)));
    this.program(this.bankAddr(target), h);
    this.flash.sync();
    this.bank = target;
    this.end = at;
    this.records = live;
    this.dirty = false;
  }

  private liveRecords(): Rec[] {
    const last = (type: number) => {
      for (let i = this.records.length - 1; i >= 0; i--) if (this.records[i]!.type === type) return [this.records[i]!];
      return [];
    };
    const audit = this.records.filter((r) => r.type === T.AUDIT).slice(-KEEP_AUDIT);
    const ids = new Map<number, Rec>();
    for (const r of this.records) if (r.type === T.BATCH_ID) ids.set(dv(r.payload).getUint32(0), r);
    return [...last(T.IDENTITY), ...last(T.ADMIN_COUNTER), ...last(T.FAILED_AUTH), ...[...ids.values()].slice(-KEEP_BATCH_IDS), ...audit];
  }

  private latest(type: number): Uint8Array | undefined {
    for (let i = this.records.length - 1; i >= 0; i--) if (this.records[i]!.type === type) return this.records[i]!.payload;
    return undefined;
  }

  // ---- SecureArea

  enroll(id: Identity): void {
    if (this.identity()) throw new SecureAreaError('module is already enrolled', 'ALREADY_ENROLLED');
    const tid = Buffer.from(id.terminalId, 'ascii');
    if (id.deviceKey.length !== 32 || tid.length < 1 || tid.length > 32) throw new SecureAreaError('bad identity', 'BAD_INPUT');
    const p = new Uint8Array(1 + tid.length + 32);
    p[0] = tid.length;
    p.set(tid, 1);
    p.set(id.deviceKey, 1 + tid.length);
    this.append({ type: T.IDENTITY, payload: p });
    p.fill(0);
    this.audit('enrolled', id.terminalId);
  }

  identity(): Identity | undefined {
    const p = this.latest(T.IDENTITY);
    if (!p) return undefined;
    const n = p[0]!;
    return { terminalId: Buffer.from(p.subarray(1, 1 + n)).toString('ascii'), deviceKey: p.slice(1 + n, 1 + n + 32) };
  }

  adminCounter(): number {
    const p = this.latest(T.ADMIN_COUNTER);
    return p ? dv(p).getUint32(0) : 0;
  }

  setAdminCounter(n: number): void {
    const p = new Uint8Array(4);
    dv(p).setUint32(0, n);
    this.append({ type: T.ADMIN_COUNTER, payload: p });
  }

  failedAuth(): { count: number; locked: boolean } {
    const p = this.latest(T.FAILED_AUTH);
    return p ? { count: p[0]!, locked: p[1] === 1 } : { count: 0, locked: false };
  }

  setFailedAuth(count: number, locked: boolean): void {
    this.append({ type: T.FAILED_AUTH, payload: new Uint8Array([Math.min(count, 255), locked ? 1 : 0]) });
  }

  audit(type: AuditType, detail: string): void {
    const d = Buffer.from(detail.replace(/[^\x20-\x7e]/g, '?').slice(0, 64), 'ascii');
    const p = new Uint8Array(4 + 8 + 1 + d.length);
    const v = dv(p);
    v.setUint32(0, this.auditCount() + 1);
    v.setFloat64(4, this.clock());
    p[12] = AUDIT_TYPES.indexOf(type);
    p.set(d, 13);
    this.append({ type: T.AUDIT, payload: p });
  }

  private auditEvents(): AuditEvent[] {
    return this.records
      .filter((r) => r.type === T.AUDIT)
      .map((r) => {
        const v = dv(r.payload);
        return { n: v.getUint32(0), at: v.getFloat64(4), type: AUDIT_TYPES[r.payload[12]!] ?? 'boot', detail: Buffer.from(r.payload.subarray(13)).toString('ascii') };
      });
  }

  auditLog(from: number, max: number): AuditEvent[] {
    return this.auditEvents()
      .filter((e) => e.n >= from)
      .slice(0, max);
  }

  auditCount(): number {
    const ev = this.auditEvents();
    return ev.length ? ev[ev.length - 1]!.n : 0;
  }

  rememberBatch(poolId: number, batchId: Uint8Array): void {
    if (this.batchIdFor(poolId) && Buffer.compare(this.batchIdFor(poolId)!, batchId) === 0) return;
    const p = new Uint8Array(4 + 16);
    dv(p).setUint32(0, poolId);
    p.set(batchId, 4);
    this.append({ type: T.BATCH_ID, payload: p });
  }

  batchIdFor(poolId: number): Uint8Array | undefined {
    for (let i = this.records.length - 1; i >= 0; i--) {
      const r = this.records[i]!;
      if (r.type === T.BATCH_ID && dv(r.payload).getUint32(0) === poolId) return r.payload.slice(4, 20);
    }
    return undefined;
  }

  factoryReset(): void {
    for (let s = 0; s < SECURE_SECTORS; s++) this.flash.erase(s);
    this.flash.sync();
    this.records = [];
    this.generation = 0;
    this.bank = 0;
    this.end = HEADER_BYTES;
    this.dirty = false;
  }
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export type WritableSecureArea = SecureArea & { enroll(id: Identity): void };

/** Open the secure area of a module's flash (blank flash: an empty, unenrolled area). */
export function openSecureArea(flash: BlockDevice, clock: () => number = Date.now): WritableSecureArea {
  return new FlashSecureArea(flash, clock);
}
