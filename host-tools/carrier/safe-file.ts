// File access inside a carrier folder, which may come from a stranger's USB drive: nothing on it is
// trusted to be what its name says. Every file the carrier reads, writes, wipes or unlinks must be a
// regular file that is not a symlink (lstat first), is opened with O_NOFOLLOW (a link swapped in
// between lstat and open fails with ELOOP instead of being followed) and O_NONBLOCK (a FIFO swapped in
// fails or returns at once instead of blocking), is checked again with fstat on the open descriptor,
// and is read only up to a documented cap (an oversize file is refused, never read whole).
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync } from 'node:fs';
import type { Stats } from 'node:fs';

const { O_RDONLY, O_RDWR, O_NOFOLLOW, O_NONBLOCK } = constants;

/** Flags for reading a carrier file. */
export const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;
/** Flags for overwriting a carrier file in place (wipe, journal repair). */
export const RDWR_FLAGS = O_RDWR | O_NOFOLLOW | O_NONBLOCK;

/** A carrier file that is not a regular file, or larger than its cap: report it as damaged. */
export class UnsafeFileError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
    /** The size lstat/fstat saw (0 when unknown or not a regular file). */
    readonly bytes: number,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'UnsafeFileError';
  }
}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * lstat `file`: undefined if it does not exist; its Stats if it is a regular file (not a symlink)
 * of at most `max` bytes; UnsafeFileError otherwise. Other errors (EIO, EACCES) are thrown as is.
 */
export function lstatRegular(file: string, max = Number.MAX_SAFE_INTEGER): Stats | undefined {
  let st: Stats;
  try {
    st = lstatSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  checkStats(file, st, max);
  return st;
}

function checkStats(file: string, st: Stats, max: number): void {
  // A directory keeps the wording an open() of it always gave (EISDIR).
  if (st.isDirectory()) throw new UnsafeFileError(file, 'unreadable (EISDIR): a directory, not a regular file', 0);
  if (!st.isFile()) throw new UnsafeFileError(file, `${kindOf(st)}, not a regular file`, 0);
  if (st.size > max) throw new UnsafeFileError(file, `${st.size} bytes, more than the ${max} such a file can hold`, st.size);
}

/** True if something (of any type, a dangling symlink included) has this name. */
export function lexists(file: string): boolean {
  try {
    lstatSync(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Open a carrier file that lstat found regular, without following a link, and check the open
 * descriptor again (the name may have been swapped in between). The caller closes the fd.
 */
export function openRegular(file: string, flags: number, max = Number.MAX_SAFE_INTEGER): { fd: number; size: number } {
  const fd = openSync(file, flags);
  try {
    const st = fstatSync(fd);
    checkStats(file, st, max);
    return { fd, size: st.size };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function openChecked(file: string, max: number): { fd: number; size: number } | undefined {
  if (lstatRegular(file, max) === undefined) return undefined;
  try {
    return openRegular(file, READ_FLAGS, max);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new UnsafeFileError(file, 'a symbolic link, not a regular file', 0);
    throw e;
  }
}

/**
 * Read a whole carrier file of at most `max` bytes; undefined if it does not exist. Never reads
 * more than `max` + 1 bytes, whatever the file grows to while it is read.
 */
export function readCapped(file: string, max: number): Uint8Array | undefined {
  const opened = openChecked(file, max);
  if (opened === undefined) return undefined;
  const { fd } = opened;
  try {
    const buf = new Uint8Array(Math.min(opened.size, max) + 1);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    if (off > max) throw new UnsafeFileError(file, `more than the ${max} bytes such a file can hold`, off);
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/** The first `headBytes` of a carrier file of at most `max` bytes, and its size. */
export function readHeadCapped(file: string, headBytes: number, max: number): { head: Uint8Array; size: number } | undefined {
  const opened = openChecked(file, max);
  if (opened === undefined) return undefined;
  const { fd, size } = opened;
  try {
    const head = new Uint8Array(Math.min(size, headBytes));
    let off = 0;
    while (off < head.length) {
      const n = readSync(fd, head, off, head.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return { head: head.subarray(0, off), size };
  } finally {
    closeSync(fd);
  }
}
