// Maps the key pool's and the batch opener's typed errors onto the link's error table, so
// handlers throw what the services throw and the host sees a stable code with a short reason.
import { PoolError } from '../keypool/errors.js';
import { BatchAuthError, BatchError } from '../crypto/errors.js';
import { FlashError, PowerCutError } from '../flash/errors.js';
import { LinkError, Rc } from '../link/errors.js';

const POOL_RC: Record<string, number> = {
  ROLLBACK: Rc.STALE_BATCH,
  NO_SPACE: Rc.NO_SPACE,
  TOO_MANY_BATCHES: Rc.NO_SPACE,
  STAGING_BUSY: Rc.BAD_STATE,
  DUPLICATE_BATCH: Rc.STALE_BATCH,
  STAGE_OFFSET: Rc.OUT_OF_ORDER,
  STAGE_CONFLICT: Rc.BAD_STATE,
  STAGE_INCOMPLETE: Rc.BAD_STATE,
  STALE_HANDLE: Rc.BAD_STATE,
  EXHAUSTED: Rc.KEYS_EXHAUSTED,
  NOT_PRESENT: Rc.KEY_NOT_AVAILABLE,
  ALREADY_CONSUMED: Rc.KEY_NOT_AVAILABLE,
};

const BATCH_RC: Record<string, number> = {
  'wrong-terminal': Rc.WRONG_TERMINAL,
  'stale-seq': Rc.STALE_BATCH,
  'out-of-order': Rc.OUT_OF_ORDER,
  incomplete: Rc.BAD_STATE,
};

/** Run `fn`, translating service errors into LinkErrors. A power cut is passed through as is. */
export function mapServiceErrors<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toLinkError(e);
  }
}

export function toLinkError(e: unknown): unknown {
  if (e instanceof LinkError || e instanceof PowerCutError) return e;
  if (e instanceof PoolError) return new LinkError(POOL_RC[e.code] ?? Rc.FLASH_ERROR, e.message);
  if (e instanceof FlashError) return new LinkError(Rc.FLASH_ERROR, e.message);
  if (e instanceof BatchError) {
    const rc = BATCH_RC[e.code] ?? (e instanceof BatchAuthError ? Rc.AUTH_FAILED : Rc.BAD_REQUEST);
    return new LinkError(rc, e.message);
  }
  return e;
}
