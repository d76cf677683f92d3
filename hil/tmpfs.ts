// Test support: a small tmpfs "drive" a test mounts, fills and remounts read-only, to meet the
// carrier faults a field laptop meets (a stick mounted read-only, a full stick) with real EROFS
// and ENOSPC from the kernel. Linux and root only; commands run through execFileSync, never a shell.
// Another user for EACCES: `setpriv` (util-linux) runs a command as nobody.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const runs = (cmd: string, args: string[]): boolean => {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
};

let probed: string | false | undefined;

/**
 * false where this process can mount a tmpfs (root with CAP_SYS_ADMIN, as on the CI machine), else
 * why not. Tried for real once: a reason is only given where the mount itself failed, so under
 * CI=true nothing skips that the machine can do.
 */
export function tmpfsSkipReason(): string | false {
  if (probed !== undefined) return probed;
  if (process.platform !== 'linux') return (probed = 'tmpfs mounts need Linux');
  if (process.getuid?.() !== 0) return (probed = 'not root: cannot mount a tmpfs to make a read-only or full drive');
  const dir = mkdtempSync(join(tmpdir(), 'qkt-tmpfs-probe-'));
  try {
    if (!runs('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir])) return (probed = 'mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)');
    runs('umount', [dir]);
    return (probed = false);
  } finally {
    rmdirSync(dir);
  }
}

/** false where `setpriv` can run a command as nobody (root, util-linux), else why not. */
export function otherUserSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'not root: cannot run a command as another user';
  if (!runs('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'true'])) return 'setpriv (util-linux) cannot run a command as nobody';
  return false;
}

/** `cmd args` as nobody (uid and gid 65534, no supplementary groups). */
export function asNobody(cmd: string, args: string[]): [string, string[]] {
  return ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', cmd, ...args]];
}

export interface Tmpfs {
  readonly path: string;
  readOnly(ro: boolean): void;
  /** Unmount (lazily if busy); idempotent. */
  unmount(): void;
}

/** Mount a tmpfs of `sizeKiB` at `path` (made if missing, mode 0755). */
export function mountTmpfs(path: string, sizeKiB: number): Tmpfs {
  mkdirSync(path, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0755`, 'tmpfs', path], { stdio: 'pipe' });
  let mounted = true;
  return {
    path,
    readOnly: (ro) => void execFileSync('mount', ['-o', `remount,${ro ? 'ro' : 'rw'}`, path], { stdio: 'pipe' }),
    unmount: () => {
      if (!mounted) return;
      mounted = false;
      if (!runs('umount', [path])) runs('umount', ['-l', path]);
    },
  };
}
