// Crash-safe file writes for KMD homes and carriers: write a temporary file, fsync it, rename it
// over the target, fsync the folder. A power loss or a pulled drive leaves the old file or the
// new one, never a torn one (POSIX rename atomicity; ext4/vfat both honour it per directory).
import { closeSync, constants, fsyncSync, openSync, renameSync, writeSync, unlinkSync, existsSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { fchmodExact } from '../firmware/flash/nor-flash.js';

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** One mode-setting rule for flash images and host files (firmware/flash/nor-flash.ts). */
export { fchmodExact };

/**
 * Atomically replace `path` with `data`. The file gets exactly `mode` (0600 by default: these
 * files may hold secrets), set on the temporary file before the rename, whatever the umask.
 */
export function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o600): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  // O_NOFOLLOW | O_NONBLOCK: a symlink or FIFO planted under the temporary name (a carrier is a
  // stranger's drive) fails the open instead of having its target truncated or blocking.
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
  try {
    fchmodExact(fd, mode);
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}
