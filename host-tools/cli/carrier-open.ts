// Opens the carrier a command was pointed at, with the CLI's exit code for a bad one, and holds the
// carrier's lock while a command writes it: one writer per carrier (load, inject, collect, token,
// zeroize), so two engineers (or two shells) on one drive never interleave their writes.
import { lstatSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Carrier, CarrierError, LOCK_FILE } from '../carrier/carrier.js';
import { LockBusyError, lock, lockSync } from '../lock.js';
import type { Lock, LockOptions } from '../lock.js';
import { CliError, Exit } from './command.js';

export function openCarrier(dir: string): Carrier {
  try {
    return Carrier.open(dir);
  } catch (e) {
    if (e instanceof CarrierError) throw new CliError(`${dir}: ${e.message}`, Exit.CARRIER);
    throw e;
  }
}

// The lock file lives on the carrier itself (a drive's mount point's parent is seldom writable, and
// the lock must travel with the drive). A drive pulled from a laptop that crashed mid-inject comes
// with that laptop's lock: lock.ts never takes over another host's lock (it cannot see whether
// that process lives), so the refusal says how to clear it.
const lockOptions = (dir: string, waitMs?: number): LockOptions => ({ what: `carrier ${dir}`, file: join(dir, LOCK_FILE), ...(waitMs === undefined ? {} : { waitMs }) });

/** A drive mounted read-only, or a folder this user cannot write: no writer can come, none to lock out. */
const unlockable = (e: unknown): boolean => ['EROFS', 'EACCES', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '');

function busy(dir: string, e: unknown): undefined {
  if (unlockable(e)) return undefined;
  if (e instanceof LockBusyError && e.holder && e.holder.host !== hostname()) {
    throw new CliError(`${e.message}; if no qkt runs there on it any more, remove ${join(dir, LOCK_FILE)}`, Exit.BUSY);
  }
  throw e;
}

// Only a real folder gets a lock file; anything else is left for Carrier.open to refuse.
const isFolder = (dir: string): boolean => {
  try {
    return lstatSync(dir).isDirectory();
  } catch {
    return false;
  }
};

/** Run `fn` on the carrier at `dir`, holding its lock; a folder that does not exist yet is not locked. */
export async function withCarrier<T>(dir: string, fn: () => T | Promise<T>): Promise<T> {
  let l: Lock | undefined;
  if (isFolder(dir)) l = await lock(dir, lockOptions(dir)).catch((e: unknown) => busy(dir, e));
  try {
    return await fn();
  } finally {
    l?.release();
  }
}

/** withCarrier for synchronous work done under the KMD home's lock (home first, then carrier). */
export function withCarrierSync<T>(dir: string, fn: () => T, o: { waitMs?: number } = {}): T {
  let l: Lock | undefined;
  try {
    if (isFolder(dir)) l = lockSync(dir, lockOptions(dir, o.waitMs));
  } catch (e) {
    l = busy(dir, e);
  }
  try {
    return fn();
  } finally {
    l?.release();
  }
}
