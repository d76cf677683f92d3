// The module's secure area: the first SECURE_SECTORS sectors of its flash, which the key pool
// never touches, holding identity, counters, the batch id map and the audit log as typed records
// in the flash's power-safe record store (old or new after a cut, never torn).
import type { BlockDevice } from '../flash/block-device.js';
import { RecordStore, RecordStoreError } from '../flash/record-store.js';
import type { RecordPolicy } from '../flash/record-store.js';
import { AUDIT_TYPES } from './types.js';
import type { AuditEvent, AuditType, Identity, SecureArea } from './types.js';

/** Sectors reserved at the start of the flash for the secure area's record log. */
export const SECURE_SECTORS = 4;

const T = { IDENTITY: 1, ADMIN_COUNTER: 2, FAILED_AUTH: 3, AUDIT: 4, BATCH_ID: 5 } as const;
/** Audit events and batch ids kept across a compaction. */
const KEEP_AUDIT = 48;
const KEEP_BATCH_IDS = 64;

export class SecureAreaError extends Error {
  constructor(
    message: string,
    readonly code: 'ALREADY_ENROLLED' | 'FULL' | 'BAD_INPUT',
  ) {
    super(message);
    this.name = 'SecureAreaError';
  }
}

const POLICIES: Record<number, RecordPolicy> = {
  [T.IDENTITY]: { kind: 'latest' },
  [T.ADMIN_COUNTER]: { kind: 'latest' },
  [T.FAILED_AUTH]: { kind: 'latest' },
  [T.AUDIT]: { kind: 'log', keep: KEEP_AUDIT },
  [T.BATCH_ID]: { kind: 'log', keep: KEEP_BATCH_IDS },
};
const STORE = { firstSector: 0, sectorCount: SECURE_SECTORS, types: POLICIES };

class FlashSecureArea implements SecureArea {
  /** Undefined on a blank (never enrolled, or factory-reset) module. */
  private store: RecordStore | undefined;

  constructor(
    private readonly flash: BlockDevice,
    private readonly clock: () => number,
  ) {
    try {
      this.store = RecordStore.open(flash, STORE);
    } catch (e) {
      if (!(e instanceof RecordStoreError && e.code === 'NOT_FORMATTED')) throw e;
    }
  }

  private append(type: number, payload: Uint8Array): void {
    if (!this.store) throw new SecureAreaError('module is not enrolled', 'BAD_INPUT');
    this.store.append(type, payload);
    this.flash.sync();
  }

  private latest(type: number): Uint8Array | undefined {
    return this.store?.latest(type);
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
    this.store = RecordStore.format(this.flash, STORE);
    this.append(T.IDENTITY, p);
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
    this.append(T.ADMIN_COUNTER, p);
  }

  failedAuth(): { count: number; locked: boolean } {
    const p = this.latest(T.FAILED_AUTH);
    return p ? { count: p[0]!, locked: p[1] === 1 } : { count: 0, locked: false };
  }

  setFailedAuth(count: number, locked: boolean): void {
    this.append(T.FAILED_AUTH, new Uint8Array([Math.min(count, 255), locked ? 1 : 0]));
  }

  audit(type: AuditType, detail: string): void {
    const d = Buffer.from(detail.replace(/[^\x20-\x7e]/g, '?').slice(0, 64), 'ascii');
    const p = new Uint8Array(4 + 8 + 1 + d.length);
    const v = dv(p);
    v.setUint32(0, this.auditCount() + 1);
    v.setFloat64(4, this.clock());
    p[12] = AUDIT_TYPES.indexOf(type);
    p.set(d, 13);
    this.append(T.AUDIT, p);
  }

  private auditEvents(): AuditEvent[] {
    return (this.store?.all(T.AUDIT) ?? []).map((p) => {
      const v = dv(p);
      return { n: v.getUint32(0), at: v.getFloat64(4), type: AUDIT_TYPES[p[12]!] ?? 'boot', detail: Buffer.from(p.subarray(13)).toString('ascii') };
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
    this.append(T.BATCH_ID, p);
  }

  batchIdFor(poolId: number): Uint8Array | undefined {
    const all = this.store?.all(T.BATCH_ID) ?? [];
    for (let i = all.length - 1; i >= 0; i--) if (dv(all[i]!).getUint32(0) === poolId) return all[i]!.slice(4, 20);
    return undefined;
  }

  factoryReset(): void {
    for (let s = 0; s < SECURE_SECTORS; s++) this.flash.erase(s);
    this.flash.sync();
    this.store = undefined;
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
