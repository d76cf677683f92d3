// Authorization tokens for a terminal's sensitive commands (zeroize, factory reset), issued by
// the KMD with a fresh counter and carried to the terminal on the carrier, like a batch. The
// module accepts a token once (its counter must be above the last one it accepted).
import { lstatSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { makeAdminToken } from '../../firmware/crypto/token.js';
import type { AdminCommand } from '../../firmware/crypto/token.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { readCapped, UnsafeFileError } from '../carrier/safe-file.js';
import { mkdirSecret } from '../secret-file.js';
import type { KmdHome } from './home.js';
import { checkId } from './home.js';

export const TOKEN_DIR = 'tokens';

/** The id is checked here too: callers pass ids read from devices, and this names a file to delete. */
function tokenPath(carrierDir: string, terminalId: string, command: AdminCommand): string {
  return join(carrierDir, TOKEN_DIR, `${checkId('terminal', terminalId)}-${command}.qkt`);
}

/** Holds the home's lock: the terminal's admin counter is read, spent and saved as one change. */
export function issueToken(home: KmdHome, terminalId: string, command: AdminCommand, carrierDir: string): { terminalId: string; command: AdminCommand; counter: number; file: string } {
  return home.lockedSync(() => issueLocked(home, terminalId, command, carrierDir));
}

function issueLocked(home: KmdHome, terminalId: string, command: AdminCommand, carrierDir: string): { terminalId: string; command: AdminCommand; counter: number; file: string } {
  const t = home.terminal(terminalId);
  const counter = t.nextAdminCounter;
  t.nextAdminCounter++;
  home.saveTerminal(t); // the counter is spent first: a crash never issues two tokens with one counter
  const key = home.deviceKey(terminalId);
  try {
    const token = makeAdminToken(key, { terminalId, command, counter });
    mkdirSecret(join(carrierDir, TOKEN_DIR));
    const file = tokenPath(carrierDir, terminalId, command);
    writeFileAtomic(file, token, 0o600);
    return { terminalId, command, counter, file };
  } finally {
    key.fill(0);
  }
}

/** The largest token a module takes (docs/protocol.md 3.10, `token: bstr .size (0..256)`). */
const TOKEN_MAX_BYTES = 256;

/**
 * The token on a carrier (a stranger's drive, docs/carrier.md "A hostile drive"): a regular file,
 * not a link, at most TOKEN_MAX_BYTES; anything else is treated as no token.
 */
export function readToken(carrierDir: string, terminalId: string, command: AdminCommand): Uint8Array | undefined {
  try {
    return readCapped(tokenPath(carrierDir, terminalId, command), TOKEN_MAX_BYTES);
  } catch (e) {
    if (e instanceof UnsafeFileError) return undefined;
    throw e;
  }
}

/** Unlinks the name itself (a link, never its target). */
export function removeToken(carrierDir: string, terminalId: string, command: AdminCommand): void {
  const f = tokenPath(carrierDir, terminalId, command);
  try {
    lstatSync(f);
  } catch {
    return;
  }
  unlinkSync(f);
}
