// What the module keeps in its secure area (the flash sectors the key pool never touches):
// identity and device key, anti-replay and retry counters, live batch ids and the audit log.
// Bounds and retention rules: docs/secure-area.md.

export interface Identity {
  terminalId: string;
  /** 256-bit device key shared with the KMD. Never leaves the module. */
  deviceKey: Uint8Array;
}

/** Audit event types. The index is stored on flash: append only, never reorder. */
export const AUDIT_TYPES = [
  'boot',
  'enrolled',
  'batch-accepted',
  'batch-refused',
  'zeroize',
  'factory-reset',
  'auth-failed',
  'lockout',
  'selftest-failed',
  'watchdog-reset',
  'refused',
  'area-damaged',
] as const;
export type AuditType = (typeof AUDIT_TYPES)[number];

/** Security events live in their own ring: no flood of routine events can evict them. */
export const SECURITY_EVENTS: ReadonlySet<AuditType> = new Set(['enrolled', 'zeroize', 'factory-reset', 'auth-failed', 'lockout', 'selftest-failed', 'area-damaged']);

export interface AuditEvent {
  /** Running number of the event since enrolment. */
  n: number;
  /** Module clock, ms since the Unix epoch (for `refused`: the last refusal). */
  at: number;
  type: AuditType;
  /** Short, non-secret detail (batch id, refusal code). */
  detail: string;
  /** `refused` only: how many refusals the event stands for, and when the first one came. */
  count?: number;
  first?: number;
}

/** What STATUS says about the secure area. */
export interface SecureHealth {
  /** Something in the area could not be read at boot (it was rewritten clean since, if it could be). */
  damaged: boolean;
  reason?: string;
  /** Refusals counted in RAM since the last `refused` event was written. */
  pendingRefusals: number;
}

export interface SecureArea {
  identity(): Identity | undefined;
  /** The terminal id alone: no copy of the device key is made. */
  terminalId(): string | undefined;
  /** Last accepted admin token counter (0 = none yet). */
  adminCounter(): number;
  setAdminCounter(n: number): void;
  failedAuth(): { count: number; locked: boolean };
  setFailedAuth(count: number, locked: boolean): void;
  /** Log an event. Never throws but for a power cut: a failing audit write marks the area damaged. */
  audit(type: AuditType, detail: string): void;
  /**
   * Count a refusal of input that did not authenticate (or was refused before changing
   * anything). Counted in RAM; written as one coalesced `refused` event at a bounded rate.
   */
  refused(detail: string): void;
  auditLog(from: number, max: number): AuditEvent[];
  auditCount(): number;
  /** Remember an accepted batch's full 16-byte id under the pool's u32 id (service key ids name it). */
  rememberBatch(poolId: number, batchId: Uint8Array): void;
  batchIdFor(poolId: number): Uint8Array | undefined;
  /** Which pool batch ids are live: only their full ids survive a compaction. */
  setLiveBatches(live: () => Iterable<number>): void;
  health(): SecureHealth;
  /** Back to blank: identity, counters, batches and log gone. */
  factoryReset(): void;
}
