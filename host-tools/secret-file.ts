// Key hygiene (issue 8): files that hold secrets (flash images with the device key, the KMD's
// terminal and carrier records, station key pools, private keys, ...) are created 0600 in 0700
// folders whatever the umask. A secret file that group or others can read is reported:
// `qkt terminal run` refuses such a flash image, other commands print a one-line warning.
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';

export const SECRET_FILE_MODE = 0o600;
export const SECRET_DIR_MODE = 0o700;

/**
 * Whether `path` is a file group or others may read (its mode has any of 0o044). False for a
 * missing path, and on Windows (no POSIX modes).
 */
export function readableByOthers(path: string): boolean {
  if (process.platform === 'win32') return false;
  try {
    return (statSync(path).mode & 0o044) !== 0;
  } catch {
    return false;
  }
}

/**
 * mkdir -p with mode 0700 whatever the umask: every folder this call creates ends up 0700;
 * folders that were there already are left as they are.
 */
export function mkdirSecret(dir: string): void {
  const created = mkdirSync(dir, { recursive: true, mode: SECRET_DIR_MODE });
  if (created === undefined || process.platform === 'win32') return;
  const first = resolve(created);
  for (let d = resolve(dir); ; d = dirname(d)) {
    try {
      chmodSync(d, SECRET_DIR_MODE);
    } catch (e) {
      // A file system without POSIX modes (a FAT carrier drive): its mount options decide.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
    }
    if (d === first || dirname(d) === d) break;
  }
}

function octal(path: string): string {
  try {
    return (statSync(path).mode & 0o777).toString(8).padStart(4, '0');
  } catch {
    return '?';
  }
}

/**
 * The one-line warning for those of `paths` (secret files) that group or others can read, or
 * undefined when there are none. Paths are named relative to `under` when given.
 */
export function sharedSecretsWarning(paths: readonly string[], under?: string): string | undefined {
  const shared = paths.filter(readableByOthers);
  if (shared.length === 0) return undefined;
  if (shared.length === 1) {
    const f = shared[0]!;
    return `warning: group or others can read ${f} (mode ${octal(f)}), which holds secrets; fix: chmod 600 ${f}`;
  }
  const names = shared.map((f) => (under ? relative(under, f) : f));
  const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? `, ... (${names.length - 3} more)` : '');
  return `warning: group or others can read ${shared.length} files holding secrets${under ? ` in ${under}` : ''} (${shown}); fix: chmod 600 each of them`;
}

/** Print sharedSecretsWarning on stderr (never stdout: a --json document stays alone there). */
export function warnSharedSecrets(paths: readonly string[], under?: string): void {
  const w = sharedSecretsWarning(paths, under);
  if (w) process.stderr.write(`qkt: ${w}\n`);
}
