// NorFlash: the emulated NOR flash of the terminal module, in memory or backed by an image file,
// asserting the NOR contract of block-device.ts, with wear, bad sectors and fault injection.

import { closeSync, existsSync, fchmodSync, fsyncSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { checkGeometry, type BlockDevice, type Geometry } from './block-device.js';
import { FlashError, PowerCutError } from './errors.js';
import { FaultPlan, tearErase, tearProgram } from './faults.js';

export interface NorFlashOptions {
  /** Refuse programs that would need to set a bit (default true). Off: the cell just gets `old & new`, as silicon does. */
  strict?: boolean;
  /** Erase cycles a sector survives; the next erase fails with WORN_OUT and the sector is bad from then on. Default 100,000 (typical NOR datasheet figure). */
  endurance?: number;
  /** Memory images only: starting erase counters (one per sector), e.g. carried over from a snapshot. */
  eraseCounts?: Uint32Array;
}

/** Operation counters, for benchmarks (write amplification) and tests. */
export interface FlashStats {
  reads: number;
  readBytes: number;
  programs: number;
  programBytes: number;
  erases: number;
  syncs: number;
}

const WEAR_MAGIC = 0x5257_4b51; // 'QKWR' little-endian
/** File mode of a new image file: owner only, it holds secrets. */
const IMAGE_MODE = 0o600;

/**
 * Set the mode of an open file exactly (the umask only ever narrows the mode given to open, and
 * an existing file keeps its old one). A file system without POSIX modes (a FAT carrier drive)
 * refuses with EPERM or ENOTSUP: its mount options decide, nothing to do here. The host's
 * atomic writes use it too (host-tools/fs-atomic.ts).
 */
export function fchmodExact(fd: number, mode: number): void {
  if (process.platform === 'win32') return;
  try {
    fchmodSync(fd, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
  }
}

/**
 * The emulator. Erase counters and bad-sector marks of a file image live in a sidecar file
 * `<image>.wear` (little-endian: magic u32, sector count u32, then per sector a u32 erase count
 * whose top bit marks the sector bad), rewritten by sync() when they changed and by close();
 * for memory images they live only in memory (pass `eraseCounts` to carry them over).
 * The sidecar is emulator bookkeeping, not device state: a simulated power cut does not touch it.
 */
export class NorFlash implements BlockDevice {
  readonly geometry: Geometry;
  readonly stats: FlashStats = { reads: 0, readBytes: 0, programs: 0, programBytes: 0, erases: 0, syncs: 0 };
  /** Power-cut countdown, read bit flips. */
  readonly faults = new FaultPlan();
  readonly strict: boolean;
  readonly endurance: number;
  private readonly image: Uint8Array;
  private readonly counts: Uint32Array;
  private readonly bad: Uint8Array; // 0 good, 1 bad (injected), 2 worn out
  private fd: number | undefined;
  private wearDirty = false;

  private constructor(
    geometry: Geometry,
    image: Uint8Array,
    opts: NorFlashOptions,
    readonly path?: string,
    fd?: number,
  ) {
    this.geometry = geometry;
    this.image = image;
    this.strict = opts.strict ?? true;
    this.endurance = opts.endurance ?? 100_000;
    if (!Number.isSafeInteger(this.endurance) || this.endurance < 1) throw new RangeError('endurance must be a positive integer');
    const sectors = geometry.size / geometry.sectorSize;
    this.counts = new Uint32Array(sectors);
    this.bad = new Uint8Array(sectors);
    this.fd = fd;
    if (opts.eraseCounts) {
      if (opts.eraseCounts.length !== sectors) throw new FlashError('GEOMETRY', 'eraseCounts must have one entry per sector');
      this.counts.set(opts.eraseCounts);
    }
  }

  /** A blank (all 0xFF) memory image. */
  static memory(geometry?: Partial<Geometry>, opts: NorFlashOptions = {}): NorFlash {
    const g = checkGeometry(geometry);
    return new NorFlash(g, new Uint8Array(g.size).fill(0xff), opts);
  }

  /** A memory device holding a copy of `image` (e.g. a snapshot()). */
  static fromImage(image: Uint8Array, geometry?: Partial<Geometry>, opts: NorFlashOptions = {}): NorFlash {
    const g = checkGeometry({ ...geometry, size: geometry?.size ?? image.length });
    if (image.length !== g.size) throw new FlashError('GEOMETRY', `image is ${image.length} bytes, geometry says ${g.size}`);
    return new NorFlash(g, Uint8Array.from(image), opts);
  }

  /**
   * A device backed by the image file `path`: created blank (all 0xFF) and fsynced if missing,
   * mode 0600 whatever the umask (an image holds the device key and the key pool in the clear);
   * otherwise its size must match the geometry. Writes go through to the file at once;
   * sync() fsyncs it. Call close() when done.
   */
  static open(path: string, geometry?: Partial<Geometry>, opts: NorFlashOptions = {}): NorFlash {
    const g = checkGeometry(geometry);
    let image: Uint8Array;
    if (!existsSync(path)) {
      image = new Uint8Array(g.size).fill(0xff);
      const fd0 = openSync(path, 'wx', IMAGE_MODE);
      try {
        fchmodExact(fd0, IMAGE_MODE);
        let off = 0;
        while (off < image.length) off += writeSync(fd0, image, off, image.length - off, off);
        fsyncSync(fd0);
      } finally {
        closeSync(fd0);
      }
    } else {
      image = new Uint8Array(readFileSync(path));
      if (image.length !== g.size) throw new FlashError('GEOMETRY', `image file is ${image.length} bytes, geometry says ${g.size}`);
    }
    const fd = openSync(path, 'r+');
    const flash = new NorFlash(g, image, opts, path, fd);
    flash.loadWear();
    return flash;
  }

  get sectorCount(): number {
    return this.counts.length;
  }

  /** True once a power cut happened and until reboot(). */
  get powerLost(): boolean {
    return this.faults.powerLost;
  }

  /**
   * Power comes back: operations work again on the image as the cut left it. The software
   * above must be rebuilt (remounted) too; that is the harness' job.
   */
  reboot(): void {
    this.faults.powerLost = false;
    this.faults.cancelCut();
  }

  read(addr: number, len: number): Uint8Array {
    this.alive();
    this.checkRange(addr, len);
    this.stats.reads++;
    this.stats.readBytes += len;
    const out = this.image.slice(addr, addr + len);
    this.faults.applyReadFlips(addr, out);
    return out;
  }

  program(addr: number, bytes: Uint8Array): void {
    this.alive();
    const len = bytes.length;
    this.checkRange(addr, len);
    const { pageSize, sectorSize } = this.geometry;
    if (len === 0 || Math.floor(addr / pageSize) !== Math.floor((addr + len - 1) / pageSize)) {
      throw new FlashError('ALIGNMENT', `program of ${len} bytes at 0x${addr.toString(16)} must be non-empty and inside one ${pageSize}-byte page`);
    }
    const sector = Math.floor(addr / sectorSize);
    this.checkUsable(sector);
    const old = this.image.subarray(addr, addr + len);
    if (this.strict) {
      for (let i = 0; i < len; i++) {
        if ((bytes[i]! & ~old[i]!) !== 0) {
          throw new FlashError('NOT_ERASED', `program at 0x${(addr + i).toString(16)} would need to set a bit; erase the sector first`, sector);
        }
      }
    }
    const target = new Uint8Array(len);
    for (let i = 0; i < len; i++) target[i] = old[i]! & bytes[i]!;
    const step = this.faults.nextMutation();
    this.stats.programs++;
    this.stats.programBytes += len;
    if (step.cut) {
      if (step.mode === 'after') this.store(addr, target);
      else if (step.mode === 'torn') this.store(addr, tearProgram(old, target, step.rand));
      throw new PowerCutError(`power lost during program at 0x${addr.toString(16)}`);
    }
    this.store(addr, target);
  }

  erase(sector: number): void {
    this.alive();
    if (!Number.isSafeInteger(sector) || sector < 0 || sector >= this.counts.length) {
      throw new FlashError('OUT_OF_RANGE', `sector ${sector} outside 0..${this.counts.length - 1}`, sector);
    }
    this.checkUsable(sector);
    if (this.counts[sector]! >= this.endurance) {
      // The cycle that would exceed the rated endurance fails and kills the sector.
      this.bad[sector] = 2;
      this.wearDirty = true;
      throw new FlashError('WORN_OUT', `sector ${sector} worn out after ${this.counts[sector]} erases`, sector);
    }
    const { sectorSize } = this.geometry;
    const addr = sector * sectorSize;
    const step = this.faults.nextMutation();
    this.stats.erases++;
    this.counts[sector]!++;
    this.wearDirty = true;
    if (step.cut) {
      if (step.mode === 'after') this.store(addr, new Uint8Array(sectorSize).fill(0xff));
      else if (step.mode === 'torn') this.store(addr, tearErase(this.image.subarray(addr, addr + sectorSize), step.rand));
      throw new PowerCutError(`power lost during erase of sector ${sector}`);
    }
    this.store(addr, new Uint8Array(sectorSize).fill(0xff));
  }

  sync(): void {
    this.alive();
    this.stats.syncs++;
    if (this.fd === undefined) return;
    fsyncSync(this.fd);
    if (this.wearDirty) this.saveWear();
  }

  /** Flush the wear sidecar and close the backing file (file images); no-op for memory images. */
  close(): void {
    if (this.fd === undefined) return;
    if (this.wearDirty) this.saveWear();
    closeSync(this.fd);
    this.fd = undefined;
  }

  /** A copy of the whole image, bypassing fault injection and counters (tests, snapshots). */
  snapshot(): Uint8Array {
    return Uint8Array.from(this.image);
  }

  /** Raw view of bytes for test assertions: no counters, no flips, works after a power cut. */
  peek(addr: number, len: number): Uint8Array {
    this.checkRange(addr, len);
    return this.image.slice(addr, addr + len);
  }

  eraseCount(sector: number): number {
    return this.counts[sector] ?? 0;
  }

  /** A copy of the per-sector erase counters. */
  eraseCounts(): Uint32Array {
    return Uint32Array.from(this.counts);
  }

  /** 'good', 'bad' (injected) or 'worn' (endurance exceeded). */
  sectorHealth(sector: number): 'good' | 'bad' | 'worn' {
    const b = this.bad[sector];
    return b === 1 ? 'bad' : b === 2 ? 'worn' : 'good';
  }

  /** Fault: sector `sector` goes bad; erase and program of it fail with BAD_SECTOR from now on. */
  markBad(sector: number): void {
    if (sector < 0 || sector >= this.bad.length) throw new FlashError('OUT_OF_RANGE', `sector ${sector} outside the device`, sector);
    this.bad[sector] = 1;
    this.wearDirty = true;
  }

  /** Fault: flip bit `bit` (0..7) of the stored byte at `addr` (retention error, cosmic ray). */
  flipStoredBit(addr: number, bit: number): void {
    this.checkRange(addr, 1);
    const b = Uint8Array.of(this.image[addr]! ^ (1 << (bit & 7)));
    this.store(addr, b);
  }

  resetStats(): void {
    Object.assign(this.stats, { reads: 0, readBytes: 0, programs: 0, programBytes: 0, erases: 0, syncs: 0 });
  }

  private store(addr: number, bytes: Uint8Array): void {
    this.image.set(bytes, addr);
    if (this.fd !== undefined) writeSync(this.fd, bytes, 0, bytes.length, addr);
  }

  private alive(): void {
    if (this.faults.powerLost) throw new PowerCutError();
  }

  private checkRange(addr: number, len: number): void {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0 || addr + len > this.geometry.size) {
      throw new FlashError('OUT_OF_RANGE', `range 0x${Number(addr).toString(16)}+${len} outside the ${this.geometry.size}-byte device`);
    }
  }

  private checkUsable(sector: number): void {
    const b = this.bad[sector];
    if (b === 1) throw new FlashError('BAD_SECTOR', `sector ${sector} is bad`, sector);
    if (b === 2) throw new FlashError('WORN_OUT', `sector ${sector} is worn out`, sector);
  }

  private wearPath(): string {
    return `${this.path}.wear`;
  }

  private loadWear(): void {
    if (!this.path || !existsSync(this.wearPath())) return;
    const buf = readFileSync(this.wearPath());
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (buf.length !== 8 + 4 * this.counts.length || dv.getUint32(0, true) !== WEAR_MAGIC || dv.getUint32(4, true) !== this.counts.length) {
      throw new FlashError('GEOMETRY', `wear file ${this.wearPath()} does not match the geometry`);
    }
    for (let s = 0; s < this.counts.length; s++) {
      const v = dv.getUint32(8 + 4 * s, true);
      this.counts[s] = v & 0x7fff_ffff;
      this.bad[s] = v >>> 31 ? (this.counts[s]! >= this.endurance ? 2 : 1) : 0;
    }
  }

  private saveWear(): void {
    const buf = new Uint8Array(8 + 4 * this.counts.length);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, WEAR_MAGIC, true);
    dv.setUint32(4, this.counts.length, true);
    for (let s = 0; s < this.counts.length; s++) dv.setUint32(8 + 4 * s, (this.counts[s]! & 0x7fff_ffff) | (this.bad[s] ? 0x8000_0000 : 0), true);
    writeFileSync(this.wearPath(), buf, { mode: IMAGE_MODE });
    this.wearDirty = false;
  }
}
