// What the module keeps in its secure area (the flash sectors the key pool never touches):
// identity and device key, anti-replay and retry counters, accepted batches and the audit log.

export interface Identity {
  terminalId: string;
  /** 256-bit device key shared with the KMD. Never leaves the module. */
  deviceKey: Uint8Array;
}

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
] as const;
export type AuditType = (typeof AUDIT_TYPES)[number];

export interface AuditEvent {
  /** Running number of the event since enrolment. */
  n: number;
  /** Module clock, ms since the Unix epoch. */
  at: number;
  type: AuditType;
  /** Short, non-secret detail (batch id, refusal code). */
  detail: string;
}


export interface SecureArea {
  identity(): Identity | undefined;
  /** Last accepted admin token counter (0 = none yet). */
  adminCounter(): number;
  setAdminCounter(n: number): void;
  failedAuth(): { count: number; locked: boolean };
  setFailedAuth(count: number, locked: boolean): void;
  audit(type: AuditType, detail: string): void;
  auditLog(from: number, max: number): AuditEvent[];
  auditCount(): number;
  /** Remember an accepted batch's full 16-byte id under the pool's u32 id (service key ids name it). */
  rememberBatch(poolId: number, batchId: Uint8Array): void;
  batchIdFor(poolId: number): Uint8Array | undefined;
  /** Back to blank: identity, counters, batches and log gone. */
  factoryReset(): void;
}
