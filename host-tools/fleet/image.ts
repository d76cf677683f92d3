// The flash image of a fleet's emulated module: the smallest one that holds its batch. A module's
// real chip is 2 MiB (8 Mbit of pool); a thousand of those in one process would be 2 GiB of RAM
// holding mostly 0xFF, so each emulated module gets an image sized for the key it is given.
import type { Geometry } from '../../firmware/flash/block-device.js';
import { DEFAULT_GEOMETRY } from '../../firmware/flash/block-device.js';
import { SECURE_SECTORS } from '../../firmware/secure/secure-area.js';
import { DEFAULT_JOURNAL_SECTORS } from '../../firmware/keypool/key-pool.js';
import { payloadPerSector } from '../../firmware/keypool/layout.js';

/**
 * The smallest module geometry whose pool, formatted for exactly `bits` (maxKeyBits), takes one
 * batch of `bits`:
 *
 * - sectors stay 4 KiB (the real chip's erase unit, DEFAULT_GEOMETRY): the pool's journal keeps a
 *   checkpoint of up to 32 live batches (1 + 2 + 2 + 32 x 3 = 101 record units of 16 bytes) in
 *   half a journal sector, which needs sectors of at least 3,232 bytes; and the secure area's
 *   event log is laid out per sector (secure-area.ts secureBounds). Smaller sectors would need a
 *   module with another batch limit: not the firmware we ship;
 * - then the module's fixed layout: 4 secure-area sectors and the 8-sector journal ring (every
 *   module mounts with these; a pool formatted with fewer would not mount);
 * - then key sectors: a 4 KiB sector carries 3,264 key bytes (its header and the consumption
 *   marks take the rest, layout.ts payloadPerSector), and KeyPool.format asks for room for the
 *   whole pool plus 2 (a partly consumed sector at each batch boundary).
 *
 * For the default 128 kbit batch: 4 + 8 + ceil(16384 / 3264) + 2 = 4 + 8 + 6 + 2 = 20 sectors,
 * 80 KiB (the 2 MiB chip is 512 sectors). One sector fewer and KeyPool.format refuses
 * (GEOMETRY_MISMATCH; image.test.ts checks both).
 */
export function compactGeometry(bits: number): Geometry & { maxKeyBits: number } {
  if (!Number.isSafeInteger(bits) || bits <= 0 || bits % 8 !== 0) throw new RangeError(`bits must be a positive multiple of 8, got ${bits}`);
  const sectorSize = DEFAULT_GEOMETRY.sectorSize;
  const keySectors = Math.ceil(bits / 8 / payloadPerSector(sectorSize)) + 2;
  const sectors = SECURE_SECTORS + DEFAULT_JOURNAL_SECTORS + keySectors;
  return { size: sectors * sectorSize, sectorSize, pageSize: DEFAULT_GEOMETRY.pageSize, maxKeyBits: bits };
}
