// Factory enrolment at the KMD: a new terminal gets a random 256-bit device key, written into a
// fresh module flash image (secure area + formatted pool) and kept in the KMD home. Holds the
// home's lock and the new image's lock (a `terminal run` cannot start on it half-written).
import { existsSync, unlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { checkId, KmdError } from './home.js';
import { withLockSync } from '../lock.js';
import { flashLockOptions } from '../flash-lock.js';
import type { KmdHome, TerminalRecord } from './home.js';

export function enrollTerminal(home: KmdHome, terminalId: string, flashPath: string): TerminalRecord {
  checkId('terminal', terminalId);
  return home.lockedSync(() => withLockSync(flashPath, flashLockOptions(flashPath), () => enrollLocked(home, terminalId, flashPath)));
}

function enrollLocked(home: KmdHome, terminalId: string, flashPath: string): TerminalRecord {
  if (home.hasTerminal(terminalId)) throw new KmdError(`terminal ${terminalId} is already enrolled at this KMD`, 'ALREADY_ENROLLED');
  const path = resolve(flashPath);
  if (existsSync(path)) throw new KmdError(`${path} exists; enrolment writes a new flash image (remove it first)`, 'EXISTS');
  const deviceKey = new Uint8Array(randomBytes(32));
  const record: TerminalRecord = {
    terminalId,
    deviceKey: Buffer.from(deviceKey).toString('hex'),
    enrolledAt: home.nowIso(),
    flash: path,
    nextSeq: 1,
    nextAdminCounter: 1,
    batches: [],
  };
  try {
    const flash = NorFlash.open(path);
    try {
      enrollFlash(flash, { terminalId, deviceKey });
    } finally {
      flash.close();
    }
    home.saveTerminal(record);
  } catch (e) {
    if (existsSync(path) && !home.hasTerminal(terminalId)) unlinkSync(path); // no half-enrolled module
    throw e;
  } finally {
    deviceKey.fill(0);
  }
  return record;
}
