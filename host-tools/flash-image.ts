// A module's flash image is made on purpose only: `kmd enroll` writes one, and a host starts a
// blank module on a missing image only when told (`qkt terminal run --create-image`). A mistyped
// `--flash` path is refused instead of silently becoming a new, empty, unenrolled module.
import { lstatSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** The image a module was to start on does not exist, and making one was not asked for. */
export class MissingImageError extends Error {
  override readonly name = 'MissingImageError';
  constructor(
    readonly path: string,
    /** With --create-image: the folder the new image was to go in, which does not exist. */
    readonly folder?: string,
  ) {
    super(
      folder !== undefined
        ? `--flash ${path}: the folder ${folder} does not exist; create it or give another path (nothing was created)`
        : `flash image ${path} does not exist; check the path, or make one: qkt kmd enroll --home H --terminal ID --flash ${path} (an enrolled module), or add --create-image (a blank, unenrolled module)`,
    );
  }
}

/** Refuse a missing image unless `create`; anything at the path (even a link) is left to the opener to judge. */
export function requireImage(path: string, create: boolean): void {
  if (create) {
    // The image is made in an existing folder only (as kmd enroll): not "x.img.lock: no such file".
    const folder = dirname(resolve(path));
    let isDir = false;
    try {
      isDir = statSync(folder).isDirectory();
    } catch {
      // missing, or not reachable: refused below
    }
    if (!isDir) throw new MissingImageError(path, folder);
    return;
  }
  try {
    lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new MissingImageError(path);
    throw e;
  }
}
