// Authorization tokens for a terminal's sensitive commands (zeroize, factory reset), issued by
// the KMD with a fresh counter and carried to the terminal on the carrier, like a batch. The
// module accepts a token once (its counter must be above the last one it accepted).
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { makeAdminToken } from '../../firmware/crypto/token.js';
import type { AdminCommand } from '../../firmware/crypto/token.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { mkdirSecret } from '../secret-file.js';
import type { KmdHome } from './home.js';

export const TOKEN_DIR = 'tokens';

function tokenPath(carrierDir: string, terminalId: string, command: AdminCommand): string {
  return join(carrierDir, TOKEN_DIR, `${terminalId}-${command}.qkt`);
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

export function readToken(carrierDir: string, terminalId: string, command: AdminCommand): Uint8Array | undefined {
  const f = tokenPath(carrierDir, terminalId, command);
  return existsSync(f) ? new Uint8Array(readFileSync(f)) : undefined;
}

export function removeToken(carrierDir: string, terminalId: string, command: AdminCommand): void {
  const f = tokenPath(carrierDir, terminalId, command);
  if (existsSync(f)) unlinkSync(f);
}
