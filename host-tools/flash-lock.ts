// The lock on a terminal module's flash image file: `<image>.lock`. `qkt terminal run` (any host of
// the module, terminal-host.ts) holds it for its whole life and `kmd enroll` while it writes the
// image, so one image never backs two live modules with the same keys.
import type { LockOptions } from './lock.js';

/** `waitMs` 0 by default: a module already running on the image will not stop by itself. */
export function flashLockOptions(path: string, waitMs = 0): LockOptions {
  return { what: `flash image ${path}`, waitMs };
}
