// Resolves the home folder of a command: --home DIR, else QKT_HOME (DESIGN.md "CLI contract").
import { CliError, Exit, str } from './command.js';
import type { Values } from './command.js';
import { KmdError, KmdHome } from '../kmd/home.js';

export function homeDir(v: Values): string {
  const h = str(v, 'home') ?? process.env['QKT_HOME'];
  if (!h) throw new CliError('no home folder: give --home DIR or set QKT_HOME', Exit.USAGE);
  return h;
}

export function openKmd(v: Values): KmdHome {
  try {
    return KmdHome.open(homeDir(v));
  } catch (e) {
    if (e instanceof KmdError) throw new CliError(e.message, Exit.STATE);
    throw e;
  }
}

/** Map KMD errors onto CLI exit codes. */
export function kmdCli<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof KmdError) throw new CliError(e.message, e.code === 'BAD_ID' ? Exit.USAGE : e.code === 'SUPPLY' ? Exit.FAILURE : Exit.STATE);
    throw e;
  }
}
