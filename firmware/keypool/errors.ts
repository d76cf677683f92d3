// Typed errors of the key pool. Codes are stable (the command layer maps them to wire codes);
// messages never carry key bytes.

export type PoolErrorCode =
  /** mount: no pool on this flash (blank, or no valid journal where the options say it is). Never formats. */
  | 'NOT_FORMATTED'
  /** mount: the journal or a data sector is inconsistent in a way recovery must not guess at. */
  | 'CORRUPT'
  /** mount/format: the flash geometry or layout options differ from the pool's, or do not fit. */
  | 'GEOMETRY_MISMATCH'
  /** stage/commit: seq is not above the last committed seq (anti-rollback). */
  | 'ROLLBACK'
  /** stage: the batch does not fit (stored + staging > maxKeyBits, or not enough sectors). */
  | 'NO_SPACE'
  /** stage: another batch is being staged; resume or abort it first. */
  | 'STAGING_BUSY'
  /** stage: a live batch already has this batch id. */
  | 'DUPLICATE_BATCH'
  /** stage: the pool holds its maximum number of batches. */
  | 'TOO_MANY_BATCHES'
  /** write: not at the durable offset (writes are sequential), or past the batch end. */
  | 'STAGE_OFFSET'
  /** write: bytes differ from bytes already (partly) programmed at that offset before a power cut. */
  | 'STAGE_CONFLICT'
  /** commit: not every byte has been written durably yet. */
  | 'STAGE_INCOMPLETE'
  /** the staging handle is no longer valid (committed, aborted, zeroized, or the pool was remounted). */
  | 'STALE_HANDLE'
  /** consume: no batch for this purpose holds a key that long. */
  | 'EXHAUSTED'
  /** consumeById: the key id names no key held by the pool (unknown batch, out of range, misaligned). */
  | 'NOT_PRESENT'
  /** consumeById: that key (or part of it) was already consumed or burned. Never served twice. */
  | 'ALREADY_CONSUMED'
  /** sectors wore out: no usable sector left for the journal or a batch. */
  | 'WORN_OUT'
  /** a flash operation failed mid-way; the pool object is dead and must be remounted. */
  | 'IO'
  /** the pool object is dead (power cut or I/O failure); mount again. */
  | 'UNMOUNTED';

export class PoolError extends Error {
  override readonly name = 'PoolError';
  constructor(
    readonly code: PoolErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
