// Resolves the home folder of a command: --home DIR, else QKT_HOME (DESIGN.md "CLI contract").
import { CliError, Exit, str } from './command.js';
import type { Values } from './command.js';
import { KmdError, KmdHome } from '../kmd/home.js';
import { warnSharedSecrets } from '../secret-file.js';

export function homeDir(v: Values): string {
  const h = str(v, 'home') ?? process.env['QKT_HOME'];
  if (!h) throw new CliError('no home folder: give --home DIR or set QKT_HOME', Exit.USAGE);
  return h;
}

/**
 * Open the command's KMD home. Secret files in it that group or others can read get a one-line
 * warning on stderr (key hygiene; the command goes on).
 */
export function openKmd(v: Values): KmdHome {
  let home: KmdHome;
  try {
    home = KmdHome.open(homeDir(v));
  } catch (e) {
    if (e instanceof KmdError) throw new CliError(e.message, Exit.STATE);
    throw e;
  }
  warnSharedSecrets(home.secretFiles(), home.dir);
  return home;
}

/**
 * Open the command's KMD home and hold its lock while `fn` changes it (waiting a bounded time for
 * another command to finish; then "KMD home H is in use by pid N ...", exit 7).
 */
export async function changeKmd<T>(v: Values, fn: (home: KmdHome) => T | Promise<T>): Promise<T> {
  const home = openKmd(v);
  return home.locked(() => fn(home));
}

/** KMD errors as CLI exit codes (docs/cli.md "Exit codes"). */
export const KMD_EXIT: Record<KmdError['code'], number> = {
  BAD_ID: Exit.USAGE,
  BAD_INPUT: Exit.USAGE,
  NO_BATCH: Exit.USAGE,
  SUPPLY: Exit.FAILURE,
  NO_ROOM: Exit.FAILURE,
  IN_USE: Exit.FAILURE,
  NO_HOME: Exit.STATE,
  NO_FOLDER: Exit.STATE,
  EXISTS: Exit.STATE,
  NOT_ENROLLED: Exit.STATE,
  ALREADY_ENROLLED: Exit.STATE,
  LIVE_MODULE: Exit.STATE,
  CORRUPT: Exit.STATE,
};

/** Map KMD errors onto CLI exit codes. */
export function kmdCli<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof KmdError) throw new CliError(e.message, KMD_EXIT[e.code]);
    throw e;
  }
}
