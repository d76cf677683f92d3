// What command handlers get from the module: its identity, key pool, secure area and clock,
// each throwing the right LinkError when the module is not in a state to provide it.
import type { KeyPool } from '../keypool/key-pool.js';
import type { Identity, SecureArea } from '../secure/types.js';

export interface ModuleContext {
  /** The enrolled identity; throws NOT_ENROLLED otherwise. */
  identity(): Identity;
  /** The mounted key pool; throws NOT_ENROLLED or FLASH_ERROR otherwise. */
  pool(): KeyPool;
  secure(): SecureArea;
  clock(): number;
  rng(n: number): Uint8Array;
}

/** Run `fn` with the module identity; the copy of the device key it got is wiped afterwards. */
export function withIdentity<T>(ctx: ModuleContext, fn: (id: Identity) => T): T {
  const id = ctx.identity();
  try {
    return fn(id);
  } finally {
    id.deviceKey.fill(0);
  }
}
