// The one error table of the qkt link protocol (docs/protocol.md, "Error table").
// Values are part of the wire contract: add new codes at the end, never renumber or reuse one.

export const Rc = {
  OK: 0,
  /** The handler failed in a way it did not describe; the device state is unchanged. */
  INTERNAL: 1,
  /** Unknown group or command. */
  NOT_SUPPORTED: 2,
  /** The payload is not what the command takes (wrong CBOR shape or value out of range). */
  BAD_REQUEST: 3,
  /** The frame's protocol version is not one the device speaks. */
  BAD_VERSION: 4,
  /** The frame or a field in it exceeds an advertised limit. */
  TOO_LARGE: 5,
  /** The receive window is full; retry after a response arrives. */
  BUSY: 6,
  /** The module is not enrolled: only identity and status are served. */
  NOT_ENROLLED: 7,
  /** The batch is addressed to another terminal. */
  WRONG_TERMINAL: 8,
  /** The batch sequence number is not newer than the last accepted one (anti-rollback). */
  STALE_BATCH: 9,
  /** Authentication failed: a tampered chunk, header or receipt. */
  AUTH_FAILED: 10,
  /** Not enough room in the key pool. */
  NO_SPACE: 11,
  /** A bulk chunk's offset is not the device's committed offset; details carry `committed`. */
  OUT_OF_ORDER: 12,
  /** No transfer (or session) with that id is open. */
  NO_TRANSFER: 13,
  /** Too many failed authorizations: the command is locked out. */
  LOCKED_OUT: 14,
  /** The authorization token is wrong or replayed. */
  BAD_TOKEN: 15,
  /** A power-on self-test failed: the module refuses service. */
  SELF_TEST_FAILED: 16,
  /** The flash failed (worn out, bad sector, corrupt image). */
  FLASH_ERROR: 17,
  /** Not enough key material of the requested purpose. */
  KEYS_EXHAUSTED: 18,
  /** The key id is unknown or already consumed: a key is never served twice. */
  KEY_NOT_AVAILABLE: 19,
  /** The command is not valid in the current state (e.g. commit before all chunks arrived). */
  BAD_STATE: 20,
  /** The request is well formed but refused by policy (e.g. an unauthenticated carrier). */
  DENIED: 21,
} as const;

export type RcName = keyof typeof Rc;
export type RcValue = (typeof Rc)[RcName];

const names = new Map<number, RcName>(Object.entries(Rc).map(([k, v]) => [v, k as RcName]));

export function rcName(rc: number): string {
  return names.get(rc) ?? `RC_${rc}`;
}

/** Longest reason string put on the wire; reasons are short and never carry secrets. */
export const MAX_REASON_LENGTH = 80;

/** Small, non-secret details an error may carry (e.g. `committed` for OUT_OF_ORDER). */
export type ErrorDetails = Record<string, number | string | boolean>;

/** A typed error a handler throws; only the dispatcher turns it into an error frame. */
export class LinkError extends Error {
  readonly rc: number;
  readonly reason: string | undefined;
  readonly details: ErrorDetails | undefined;
  constructor(rc: number, reason?: string, details?: ErrorDetails) {
    super(reason ? `${rcName(rc)}: ${reason}` : rcName(rc));
    this.name = 'LinkError';
    this.rc = rc;
    this.reason = reason === undefined ? undefined : reason.slice(0, MAX_REASON_LENGTH);
    this.details = details;
  }
}
