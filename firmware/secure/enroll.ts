// The factory step: a blank module flash gets its identity (terminal id and device key) in the
// secure area and a freshly formatted key pool after it. Done once; the KMD keeps its copy.
import { KeyPool } from '../keypool/key-pool.js';
import type { KeyPoolOptions } from '../keypool/key-pool.js';
import type { BlockDevice } from '../flash/block-device.js';
import { openSecureArea, SECURE_SECTORS } from './secure-area.js';
import type { Identity } from './types.js';

/** The pool layout every module uses: the secure area first, then the pool's journal and data. */
export const POOL_OPTIONS: KeyPoolOptions = { secureSectors: SECURE_SECTORS, crumbBytes: 32 };

/**
 * `pool.maxKeyBits`: the pool's capacity (default 8 Mbit, which needs the 2 MiB image); a compact
 * image (a fleet's emulated modules) is formatted for what it can hold. Mounts read it back.
 */
export function enrollFlash(flash: BlockDevice, id: Identity, clock: () => number = Date.now, pool: { maxKeyBits?: number } = {}): void {
  const secure = openSecureArea(flash, clock);
  secure.enroll(id); // refuses an enrolled module: enrolment happens once
  KeyPool.format(flash, { ...POOL_OPTIONS, ...(pool.maxKeyBits !== undefined ? { maxKeyBits: pool.maxKeyBits } : {}) });
  flash.sync();
}
