// Factory enrolment at the KMD: a new terminal gets a random 256-bit device key, written into a
// fresh module flash image (secure area + formatted pool) and kept in the KMD home. Holds the
// home's lock and the new image's lock (a `terminal run` cannot start on it half-written).
// Re-enrolment (`kmd enroll --again`) gives a factory-reset module of an enrolled terminal a new
// device key, after voiding every batch sealed under the old one.
import { statSync, unlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import type { BlockDevice, Geometry } from '../../firmware/flash/block-device.js';
import { UNIT } from '../../firmware/flash/record-log.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { openSecureArea, SECURE_SECTORS } from '../../firmware/secure/secure-area.js';
import { ctEqual } from '../../firmware/crypto/_util.js';
import { checkId, KmdError } from './home.js';
import { withLockSync } from '../lock.js';
import { lstatRegular, UnsafeFileError } from '../carrier/safe-file.js';
import { flashLockOptions } from '../flash-lock.js';
import { voidBatches } from './void.js';
import type { VoidResult } from './void.js';
import type { KmdHome, TerminalRecord } from './home.js';
import type { StationKeyStore } from '../station/store.js';

/**
 * How a new image is made: its geometry (default the module's 2 MiB chip) and the pool's capacity
 * (default 8 Mbit). A fleet's emulated modules use a compact image sized for their batch
 * (host-tools/fleet/image.ts).
 */
export interface ImageOptions {
  geometry?: Partial<Geometry>;
  maxKeyBits?: number;
}

export function enrollTerminal(home: KmdHome, terminalId: string, flashPath: string, o: ImageOptions = {}): TerminalRecord {
  checkId('terminal', terminalId);
  checkImageFolder(flashPath);
  return home.lockedSync(() => withLockSync(flashPath, flashLockOptions(flashPath), () => enrollLocked(home, terminalId, flashPath, o)));
}

/**
 * Enrol a terminal whose module flash this process holds (an in-memory image of an emulated
 * module in a fleet): the same record and factory step as enrollTerminal, with no image file.
 * `where` is what the record names as the module's image (e.g. `memory:T00001`). The flash must be
 * blank; the caller owns it.
 */
export function enrollTerminalFlash(home: KmdHome, terminalId: string, flash: BlockDevice, o: { where: string; maxKeyBits?: number }): TerminalRecord {
  checkId('terminal', terminalId);
  return home.lockedSync(() => {
    refuseEnrolled(home, terminalId);
    const deviceKey = new Uint8Array(randomBytes(32));
    try {
      const record = newRecord(home, terminalId, deviceKey, o.where);
      enrollFlash(flash, { terminalId, deviceKey }, undefined, o.maxKeyBits !== undefined ? { maxKeyBits: o.maxKeyBits } : {});
      home.saveTerminal(record);
      return record;
    } finally {
      deviceKey.fill(0);
    }
  });
}

function newRecord(home: KmdHome, terminalId: string, deviceKey: Uint8Array, flash: string): TerminalRecord {
  return {
    terminalId,
    deviceKey: Buffer.from(deviceKey).toString('hex'),
    enrolledAt: home.nowIso(),
    generation: 1,
    flash,
    nextSeq: 1,
    nextAdminCounter: 1,
    batches: [],
  };
}

function refuseEnrolled(home: KmdHome, terminalId: string): void {
  if (home.hasTerminal(terminalId)) {
    throw new KmdError(
      `terminal ${terminalId} is already enrolled at this KMD; to enrol its module again after a factory reset: qkt kmd enroll --home ${home.dir} --terminal ${terminalId} --flash FILE --again`,
      'ALREADY_ENROLLED',
    );
  }
}

function enrollLocked(home: KmdHome, terminalId: string, flashPath: string, o: ImageOptions): TerminalRecord {
  refuseEnrolled(home, terminalId);
  const path = resolve(flashPath);
  if (imageKind(path) === 'regular') throw new KmdError(`${path} exists; enrolment writes a new flash image (remove it first)`, 'EXISTS');
  const deviceKey = new Uint8Array(randomBytes(32));
  const record = newRecord(home, terminalId, deviceKey, path);
  let flash: NorFlash | undefined;
  try {
    flash = createImage(path, o.geometry);
    enrollFlash(flash, { terminalId, deviceKey }, undefined, o.maxKeyBits !== undefined ? { maxKeyBits: o.maxKeyBits } : {});
    flash.close();
    home.saveTerminal(record);
  } catch (e) {
    flash?.close();
    if (flash && !home.hasTerminal(terminalId)) removeImage(path); // no half-enrolled module
    throw e;
  } finally {
    deviceKey.fill(0);
  }
  return record;
}

/**
 * The folder the image goes in must exist: enrolment makes an image, never folders (a mistyped
 * path must not become a new tree), and the image's lock file goes beside it.
 */
function checkImageFolder(flashPath: string): void {
  const dir = dirname(resolve(flashPath));
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    // missing, or not reachable: said below
  }
  if (!isDir) throw new KmdError(`--flash ${flashPath}: the folder ${dir} does not exist; create it or give another path (nothing was changed)`, 'NO_FOLDER');
}

/**
 * What `path` names, seen with lstat (never following a link): nothing yet, or a regular file.
 * Anything else is refused before anything is changed: a symbolic link (a dangling one would
 * look like "no image" to a stat that follows it, and the create then fails), a directory, a
 * FIFO (an open of it blocks for ever, holding the home's lock), a device or a socket.
 */
function imageKind(path: string): 'absent' | 'regular' {
  try {
    return lstatRegular(path) === undefined ? 'absent' : 'regular';
  } catch (e) {
    if (e instanceof UnsafeFileError) throw new KmdError(`${path}: ${e.reason}; a module flash image is a regular file: give a new file name or the image itself, not a link to it`, 'BAD_INPUT');
    throw e;
  }
}

/**
 * Create a blank image at `path`, which lstat found absent: NorFlash.open creates it with O_EXCL
 * (so a name that appeared since, a link included, fails with EEXIST and is left alone).
 */
function createImage(path: string, geometry?: Partial<Geometry>): NorFlash {
  try {
    return NorFlash.open(path, geometry);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new KmdError(`${path} appeared while the image was being created; nothing was changed`, 'EXISTS');
    removeImage(path); // a part-written blank image (ENOSPC, EIO): it was ours, made under the image's lock
    throw e;
  }
}

/** Remove an image this enrolment created (and its wear sidecar): only regular files, never a link. */
function removeImage(path: string): void {
  for (const f of [path, `${path}.wear`]) {
    try {
      if (lstatRegular(f) !== undefined) unlinkSync(f);
    } catch {
      // not ours to remove (not a regular file), or gone
    }
  }
}

export interface ReenrollResult {
  record: TerminalRecord;
  /** What the old device key's batches became (all void now). */
  voided: VoidResult;
  /** The image was new (a replacement module), not a factory-reset one. */
  newImage: boolean;
}

/** After each step (tests make a hook throw, as a crash or a full disk there would stop it). */
export type ReenrollStep = 'image' | 'voided' | 'record';

/**
 * Enrol an enrolled terminal's factory-reset (or blank, new) module again: a new device key,
 * generation + 1. Holds the home's lock and the image's (a running module holds that: refused).
 * Steps, in an order in which a failure changes nothing until the ledger is written, and a cut
 * after that is completed by the next run:
 *
 * 1. image: `--flash` must name a regular file (lstat: no link, directory or FIFO) or nothing;
 *    a new image is created blank (O_EXCL), an existing one opened and checked: blank, or
 *    factory-reset (its secure area holds no identity); a live module is refused, whatever its
 *    key. A failure here (not an image, live, ENOSPC, EIO) changes nothing: a new image this
 *    step made is removed, the ledger is untouched. The point of no return is the next step;
 * 2. voided: every batch of the terminal is voided (void.ts, in use or not: they are sealed under
 *    the old key, and the module's pool is gone), station keys wiped;
 * 3. record: the record gets the new key and generation (the old key is gone from the home);
 *    sequence numbers and admin counters go on from where they were, never back;
 * 4. the image (open since step 1) is enrolled with the new key and a freshly formatted pool.
 *
 * A cut after 2 or 3 leaves a blank (or reset) image and a re-run does it again (a generation is
 * skipped); after 4 the image holds the KMD's key, and a re-run says the module is live.
 */
export function reenrollTerminal(home: KmdHome, terminalId: string, flashPath: string, o: { station?: StationKeyStore; afterStep?: (s: ReenrollStep) => void } = {}): ReenrollResult {
  checkId('terminal', terminalId);
  checkImageFolder(flashPath);
  return home.lockedSync(() => withLockSync(flashPath, flashLockOptions(flashPath), () => reenrollLocked(home, terminalId, resolve(flashPath), o)));
}

function reenrollLocked(home: KmdHome, terminalId: string, path: string, o: { station?: StationKeyStore; afterStep?: (s: ReenrollStep) => void }): ReenrollResult {
  if (!home.hasTerminal(terminalId)) {
    throw new KmdError(`terminal ${terminalId} is not enrolled at this KMD; enrol it first: qkt kmd enroll --home ${home.dir} --terminal ${terminalId} --flash FILE (without --again)`, 'NOT_ENROLLED');
  }
  const old = home.terminal(terminalId);
  const newImage = imageKind(path) === 'absent';
  let flash: NorFlash | undefined;
  let ledgerChanged = false;
  const deviceKey = new Uint8Array(randomBytes(32));
  try {
    // 1. The image, before anything else.
    if (newImage) flash = createImage(path);
    else {
      try {
        flash = NorFlash.open(path);
      } catch (e) {
        throw new KmdError(`${path} is not a module flash image: ${(e as Error).message}`, 'CORRUPT');
      }
      checkResetImage(home, terminalId, path, flash);
    }
    o.afterStep?.('image');

    // 2. The point of no return: the old key's batches.
    ledgerChanged = true;
    const voided = voidBatches(home, terminalId, { reason: 'reenrolled', inUse: true, ...(o.station ? { station: o.station } : {}) });
    o.afterStep?.('voided');

    // 3. The record.
    const record: TerminalRecord = {
      ...home.terminal(terminalId),
      deviceKey: Buffer.from(deviceKey).toString('hex'),
      enrolledAt: home.nowIso(),
      generation: (old.generation ?? 1) + 1,
      flash: path,
    };
    home.saveTerminal(record); // replaces the record that held the old key
    o.afterStep?.('record');

    // 4. The image.
    enrollFlash(flash, { terminalId, deviceKey });
    return { record: { ...record, deviceKey: '' }, voided, newImage };
  } catch (e) {
    if (newImage && flash && !ledgerChanged) {
      flash.close();
      flash = undefined;
      removeImage(path);
    }
    throw e;
  } finally {
    flash?.close();
    deviceKey.fill(0);
  }
}

/** Refuse an image that is not blank or factory-reset: a live module keeps its key. */
function checkResetImage(home: KmdHome, terminalId: string, path: string, flash: NorFlash): void {
  const area = openSecureArea(flash);
  const id = area.identity();
  if (id) {
    const key = home.deviceKey(terminalId);
    const current = id.terminalId === terminalId && ctEqual(id.deviceKey, key);
    key.fill(0);
    id.deviceKey.fill(0);
    const reset = `factory-reset it first (qkt kmd token --home ${home.dir} --terminal ${id.terminalId} --carrier DIR --factory-reset, then qkt zeroize --carrier DIR --port PORT --factory-reset)`;
    throw new KmdError(
      current
        ? `${path} is a live module of ${terminalId} holding this KMD's current device key (generation ${home.terminal(terminalId).generation ?? 1}): nothing to do; to give it a new key, ${reset}`
        : `${path} is a live module enrolled as ${id.terminalId}; only a blank or factory-reset module is enrolled again; ${reset}`,
      'LIVE_MODULE',
    );
  }
  // No identity. Blank, or a factory reset cut after it killed the headers (all zero) and before
  // it erased everything. Anything else is an area this firmware cannot read (damaged, or an
  // older format's enrolled module): not provably reset.
  if (area.health().damaged) {
    const sz = flash.geometry.sectorSize;
    for (let i = 0; i < SECURE_SECTORS; i++) {
      const head = flash.read(i * sz, UNIT);
      if (!head.every((b) => b === 0xff) && !head.every((b) => b === 0)) {
        throw new KmdError(`${path}: its secure area is unreadable (${area.health().reason ?? 'damaged'}), so it is not provably blank or factory-reset; refusing to enrol it again`, 'LIVE_MODULE');
      }
    }
  }
}
