// Opens the carrier a command was pointed at, with the CLI's exit code for a bad one, and holds the
// carrier's lock while a command writes it: one writer per carrier (load, inject, collect, token,
// zeroize), so two engineers (or two shells) on one drive never interleave their writes.
import { lstatSync, realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Carrier, CarrierError, LOCK_FILE } from '../carrier/carrier.js';
import type { BatchEntry } from '../carrier/carrier.js';
import { batchToSend, preflightCarrier } from '../carrier/preflight.js';
import type { PreflightOptions } from '../carrier/preflight.js';
import { LockBusyError, lock, lockSync } from '../lock.js';
import type { Lock, LockOptions } from '../lock.js';
import { CliError, Exit } from './command.js';

export function openCarrier(dir: string): Carrier {
  try {
    return Carrier.open(dir);
  } catch (e) {
    if (e instanceof CarrierError) throw new CliError(`${dir}: ${e.message}`, Exit.CARRIER);
    // Opening finishes interrupted work (a torn journal line, a cut wipe): a drive mounted
    // read-only that needs it says so instead of failing with a bare EROFS.
    if ((e as NodeJS.ErrnoException).code === 'EROFS') {
      throw new CliError(`${dir}: the carrier has interrupted work to finish but its drive is mounted read-only; mount it read-write and try again`, Exit.CARRIER);
    }
    throw e;
  }
}

/** A carrier refusal the library names in full (it names the carrier and the fix): exit 5. */
function asCli<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CarrierError) throw new CliError(e.message, Exit.CARRIER);
    throw e;
  }
}

/**
 * Before anything goes to a terminal (inject, zeroize): the carrier exists, is one, is writable by
 * this user and has room for what the command writes back (carrier/preflight.ts). Exit 5 if not.
 */
export const checkCarrierBeforeSend = (dir: string, o?: PreflightOptions): void => asCli(() => preflightCarrier(dir, o));

/** The terminal's batch and its bytes, checked whole; a damaged one is named as damaged (exit 5). */
export const batchForTerminal = (carrier: Carrier, terminalId: string): (BatchEntry & { sealed: Uint8Array }) | undefined => asCli(() => batchToSend(carrier, terminalId));

// The lock file lives on the carrier itself (a drive's mount point's parent is seldom writable, and
// the lock must travel with the drive). A drive pulled from a laptop that crashed mid-inject comes
// with that laptop's lock: lock.ts never takes over another host's lock (it cannot see whether
// that process lives), so the refusal says how to clear it.
const lockOptions = (dir: string, waitMs?: number): LockOptions => ({ what: `carrier ${dir}`, file: join(dir, LOCK_FILE), ...(waitMs === undefined ? {} : { waitMs }) });

/**
 * A drive mounted read-only, or a folder this user cannot write (no lock file there): no writer can
 * come, none to lock out. A lock file this user cannot read is another user's lock: busy.
 */
function busy(dir: string, e: unknown): undefined {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code === 'EROFS') return undefined;
  if (code === 'EACCES' || code === 'EPERM') {
    if (!lexists(join(dir, LOCK_FILE))) return undefined;
    throw new CliError(`carrier ${dir} is in use by another user (its lock ${join(dir, LOCK_FILE)} is not readable by this user)`, Exit.BUSY);
  }
  if (e instanceof LockBusyError && e.holder && e.holder.host !== hostname()) {
    throw new CliError(`${e.message}; if no qkt runs there on it any more, remove ${join(dir, LOCK_FILE)}`, Exit.BUSY);
  }
  throw e;
}

// The folder the lock goes in: the real one, so `C` and a symlink to it (or `C/../C`) share one
// lock. Anything that is not a folder is left for Carrier.open to refuse.
const realFolder = (dir: string): string | undefined => {
  try {
    const real = realpathSync(dir);
    return statSync(real).isDirectory() ? real : undefined;
  } catch {
    return undefined;
  }
};

const lexists = (path: string): boolean => {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
};

/** Run `fn` on the carrier at `dir`, holding its lock; a folder that does not exist yet is not locked. */
export async function withCarrier<T>(dir: string, fn: () => T | Promise<T>): Promise<T> {
  let l: Lock | undefined;
  const real = realFolder(dir);
  if (real) l = await lock(real, lockOptions(real)).catch((e: unknown) => busy(real, e));
  try {
    return await fn();
  } finally {
    l?.release();
  }
}

/** withCarrier for synchronous work done under the KMD home's lock (home first, then carrier). */
export function withCarrierSync<T>(dir: string, fn: () => T, o: { waitMs?: number } = {}): T {
  let l: Lock | undefined;
  const real = realFolder(dir);
  try {
    if (real) l = lockSync(real, lockOptions(real, o.waitMs));
  } catch (e) {
    l = busy(real!, e);
  }
  try {
    return fn();
  } finally {
    l?.release();
  }
}
