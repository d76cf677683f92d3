// Reading a JSON state file (a KMD home's records, a station's state.json) as untrusted bytes: a
// regular file only (no symlink followed, no FIFO opened: carrier/safe-file.ts), at most a cap,
// and every error names the file and never quotes its contents (JSON.parse's own message does).
import { readCapped, UnsafeFileError } from './carrier/safe-file.js';

/** A state file that is not what it should be: `reason` says why, in words, never its bytes. */
export class DamagedFileError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'DamagedFileError';
  }
}

/** The parsed contents of `file`, undefined if it does not exist; DamagedFileError if it is not a regular file of valid JSON. */
export function readJsonFile(file: string, maxBytes: number): unknown {
  let bytes: Uint8Array | undefined;
  try {
    bytes = readCapped(file, maxBytes);
  } catch (e) {
    if (e instanceof UnsafeFileError) throw new DamagedFileError(file, e.reason);
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string') throw new DamagedFileError(file, `unreadable (${code})`);
    throw e;
  }
  if (bytes === undefined) return undefined;
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
  } catch {
    throw new DamagedFileError(file, `not valid JSON (${bytes.length} bytes)`);
  }
}
