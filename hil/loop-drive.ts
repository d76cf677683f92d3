// Test support: a real ext4 "USB drive" on a loop device (image file -> losetup -> mount), which a
// test can pull and re-plug (unmount/mount) or yank (keep only what reached the medium).
// Linux and root only; every command runs through execFileSync, argument lists, never a shell.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface LoopDriveOptions {
  /** Size of the image (and the filesystem); at least 8 MiB. Default 32. */
  sizeMiB?: number;
  /**
   * Extra `mount -o` options. `commit=600` stops ext4's 5 s background commit, so between fsyncs
   * nothing reaches the medium on its own: a yank() then loses exactly what was never fsynced.
   */
  mountOptions?: string[];
}

export interface LoopDrive {
  /** The backing image file. */
  readonly image: string;
  /** The loop device while attached, e.g. /dev/loop3 ('' while pulled; may differ after a re-plug). */
  readonly device: string;
  /** Where the filesystem is mounted while plugged in (the folder stays while pulled, empty). */
  readonly mountpoint: string;
  readonly mounted: boolean;
  /** Pull the drive: unmount (which flushes) and detach the loop device. Idempotent. */
  unmount(): void;
  /** Plug it back in: attach the image to a free loop device and mount it (ext4 replays its journal). */
  mount(): void;
  /**
   * Pull the drive as a power loss would: the medium keeps only what the kernel had written to it
   * at this instant (fsynced data, committed journal), not the page cache. Done by snapshotting
   * the image, unmounting, restoring the snapshot. Call it when no process writes to the drive
   * (after a killed writer has been reaped: its last fsync completed before it died). Leaves the
   * drive pulled; mount() plugs it back in.
   */
  yank(): void;
  /** Unmount, detach, delete the image and folders. Idempotent; safe after a failed step. */
  destroy(): void;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

function runs(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
}

/**
 * `losetup --find --show` picks a free device and attaches in two steps; a parallel test can take
 * the same device in between (EBUSY). Try again a few times before failing.
 */
function attach(image: string): string {
  let last: unknown;
  for (let i = 0; i < 5; i++) {
    try {
      return run('losetup', ['--find', '--show', image]).trim();
    } catch (e) {
      last = e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50 * (i + 1));
    }
  }
  throw last;
}

function mountArgs(device: string, mountpoint: string, options: string[]): string[] {
  return ['-t', 'ext4', ...(options.length ? ['-o', options.join(',')] : []), device, mountpoint];
}

/** Two equal reads in a row: no write landed during the first one, so it is one instant's state. */
function quietSnapshot(image: string): Buffer {
  let prev = readFileSync(image);
  for (let i = 0; i < 20; i++) {
    const next = readFileSync(image);
    if (next.equals(prev)) return next;
    prev = next;
  }
  throw new Error(`the drive image ${image} kept changing; is something still writing to the drive?`);
}

/** Put `medium` back into the image, writing only the blocks that changed since (fast: a few KiB). */
function restore(path: string, medium: Buffer): void {
  const now = readFileSync(path);
  const fd = openSync(path, 'r+');
  try {
    const BLOCK = 1 << 16;
    for (let off = 0; off < medium.length; off += BLOCK) {
      const end = Math.min(off + BLOCK, medium.length);
      if (medium.compare(now, off, end, off, end) === 0) continue;
      let done = off;
      while (done < end) done += writeSync(fd, medium, done, end - done, done);
    }
    // The loop device reads the image through the page cache: no fsync needed for the test to
    // see these bytes, and the image is thrown away with the drive.
  } finally {
    closeSync(fd);
  }
}

/** Make, attach and mount a fresh ext4 image. Throws (after cleaning up) if any step fails. */
export function createLoopDrive(options: LoopDriveOptions = {}): LoopDrive {
  const sizeMiB = options.sizeMiB ?? 32;
  if (!Number.isInteger(sizeMiB) || sizeMiB < 8) throw new RangeError('sizeMiB must be an integer >= 8');
  const mountOptions = [...(options.mountOptions ?? [])];
  // The image in RAM where there is a tmpfs: the loop device's flushes then cost nothing, and the
  // medium's contents (what yank() keeps) are the same either way.
  const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'qkt-loop-'));
  const image = join(root, 'drive.img');
  const mountpoint = join(root, 'mnt');
  mkdirSync(mountpoint);
  let device = '';
  let mounted = false;
  let destroyed = false;

  const unmount = (): void => {
    if (mounted) {
      run('umount', [mountpoint]);
      mounted = false;
    }
    if (device) {
      run('losetup', ['-d', device]);
      device = '';
    }
  };
  const mount = (): void => {
    if (destroyed) throw new Error('the loop drive was destroyed');
    if (mounted) return;
    if (!device) device = attach(image);
    run('mount', mountArgs(device, mountpoint, mountOptions));
    mounted = true;
  };
  const destroy = (): void => {
    if (destroyed) return;
    destroyed = true;
    process.removeListener('exit', destroy);
    // Best effort, each step on its own: a failed test may have left any of them half done.
    if (mounted && !runs('umount', [mountpoint])) runs('umount', ['-l', mountpoint]);
    mounted = false;
    if (device) runs('losetup', ['-d', device]);
    device = '';
    rmSync(root, { recursive: true, force: true });
  };
  // A test process that dies without its teardown still frees the loop device.
  process.once('exit', destroy);

  try {
    run('truncate', ['-s', `${sizeMiB}M`, image]);
    // Inode tables and journal initialised now, not by a background kernel thread that would
    // keep writing to the drive while a test snapshots it.
    run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
    mount();
  } catch (e) {
    destroy();
    throw e;
  }

  return {
    image,
    mountpoint,
    get device() {
      return device;
    },
    get mounted() {
      return mounted;
    },
    unmount,
    mount,
    yank() {
      if (!mounted) throw new Error('yank: the drive is not plugged in');
      const medium = quietSnapshot(image);
      // The clean unmount writes the page cache out; the snapshot taken before it is what a
      // power loss would have left, so it replaces the image.
      unmount();
      restore(image, medium);
    },
    destroy,
  };
}

let probed: string | false | undefined;

/**
 * For tap's `skip` option: a visible reason why a loop-mounted drive cannot be made here, or false
 * when it can. Probes once per process with a real mkfs/losetup/mount. In CI (CI=true) with loop
 * devices present it returns false without probing, so a broken rig fails instead of skipping.
 */
export function loopDriveSkipReason(): string | false {
  if (process.platform !== 'linux') return `loop drives need Linux (this is ${process.platform})`;
  if (process.env['CI'] === 'true' && existsSync('/dev/loop-control')) return false;
  if (probed !== undefined) return probed;
  probed = probe();
  return probed;
}

function probe(): string | false {
  if (process.getuid?.() !== 0) return 'loop drives need root (losetup, mount); run the suite as root';
  if (!existsSync('/dev/loop-control')) return 'no /dev/loop-control (container without loop devices?)';
  if (!runs('losetup', ['--version'])) return 'losetup not installed (apt-get install -y util-linux)';
  if (!runs('mkfs.ext4', ['-V'])) return 'mkfs.ext4 not installed (apt-get install -y e2fsprogs)';
  try {
    createLoopDrive({ sizeMiB: 8 }).destroy();
  } catch (e) {
    return `cannot make a loop drive: ${(e as Error).message}`;
  }
  return false;
}
