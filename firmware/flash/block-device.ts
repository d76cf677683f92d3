// The block-device contract the key pool and the record store talk to: four calls, like littlefs'
// read/prog/erase/sync, with NOR semantics. Synchronous on purpose: it models an MCU's flash.

/** Flash geometry in bytes. `size` is a multiple of `sectorSize`, which is a multiple of `pageSize`. */
export interface Geometry {
  readonly size: number;
  /** Erase unit. */
  readonly sectorSize: number;
  /** Program unit: one program() never crosses a page boundary. */
  readonly pageSize: number;
}

/** 2 MiB, 4 KiB sectors, 256 B pages: a common SPI NOR part (DESIGN.md "Flash and key pool"). */
export const DEFAULT_GEOMETRY: Geometry = Object.freeze({
  size: 2 * 1024 * 1024,
  sectorSize: 4096,
  pageSize: 256,
});

/**
 * A NOR flash device.
 *
 * Contract (every implementation keeps it, and the emulator asserts it):
 * - `read(addr, len)` returns a fresh copy of `len` bytes at `addr`; `addr + len <= size`.
 *   Reading never changes the device.
 * - `program(addr, bytes)` can only clear bits: the cell becomes `old & bytes`. The range
 *   must be non-empty and lie inside ONE page (it may start anywhere in the page, it may
 *   not cross into the next one). A strict device refuses (`NOT_ERASED`) a program that
 *   would need to set any bit, i.e. when `bytes & ~old != 0`; so programming the very same
 *   bytes again, or 0x00 over anything, is always allowed.
 * - `erase(sector)` sets every byte of sector `sector` (an index, not an address) to 0xFF.
 *   It is the only way to set bits. It wears the sector; past its endurance it fails.
 * - Once `program` or `erase` returns, the data is in the flash. `sync()` makes it durable
 *   on the host too (the emulator fsyncs its backing file); callers sync once per
 *   user-visible state change, before reporting it.
 * - A refused call (typed `FlashError`) changes nothing. A power cut (`PowerCutError`) may
 *   leave the interrupted program or erase torn: any subset of its bit changes applied.
 */
export interface BlockDevice {
  readonly geometry: Geometry;
  read(addr: number, len: number): Uint8Array;
  program(addr: number, bytes: Uint8Array): void;
  erase(sector: number): void;
  sync(): void;
}

/** Fill in defaults and check a geometry; throws RangeError naming the bad field. */
export function checkGeometry(g: Partial<Geometry> = {}): Geometry {
  const size = g.size ?? DEFAULT_GEOMETRY.size;
  const sectorSize = g.sectorSize ?? DEFAULT_GEOMETRY.sectorSize;
  const pageSize = g.pageSize ?? DEFAULT_GEOMETRY.pageSize;
  for (const [name, v] of [['size', size], ['sectorSize', sectorSize], ['pageSize', pageSize]] as const) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`geometry.${name} must be a positive integer`);
  }
  if (sectorSize % pageSize !== 0) throw new RangeError('geometry.sectorSize must be a multiple of pageSize');
  if (size % sectorSize !== 0) throw new RangeError('geometry.size must be a multiple of sectorSize');
  return Object.freeze({ size, sectorSize, pageSize });
}
