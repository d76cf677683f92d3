// Preflight of a carrier before a command sends anything to a terminal (docs/carrier.md "Before an
// inject"): the path exists and is a carrier, this user can write it, its drive has room for the
// receipt, and the terminal's batch on it is whole. Each refusal is a typed CarrierError that names
// the carrier and the fix, so `qkt inject` never sends a batch whose receipt it cannot keep.
import { accessSync, closeSync, constants, lstatSync, openSync, statSync, statfsSync, unlinkSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { BATCH_DIR, BATCH_EXT, JOURNAL_FILE, MANIFEST_FILE, RECEIPT_DIR, formatBytes } from './carrier.js';
import type { BatchEntry, Carrier } from './carrier.js';
import { CarrierError } from './errors.js';
import { batchLayout, DEFAULT_CHUNK_SIZE, HEADER_FIXED_BYTES } from '../../firmware/crypto/batch.js';

/**
 * Free space a receipt needs, with its margin: the receipt (at most 639 bytes), two journal lines
 * (about 1.5 KiB) and the temporary file of each atomic write, each taking whole blocks.
 */
export const RECEIPT_ROOM_BYTES = 64 * 1024;
/** Bytes a sealed batch of `bits` takes on a carrier (the longest header; the KMD's chunk size), 0 if out of range. */
export function sealedBytesFor(bits: number): number {
  try {
    return batchLayout(HEADER_FIXED_BYTES + 32, bits, DEFAULT_CHUNK_SIZE).totalLength;
  } catch {
    return 0;
  }
}

/** Blocks asked for besides, on a drive with big blocks (each file and journal append may take one). */
const RECEIPT_ROOM_BLOCKS = 8;
/** Free inodes asked for (receipt, its temporary, the probe), where the filesystem counts them. */
const RECEIPT_ROOM_INODES = 4;

export interface FreeSpace {
  /** Free blocks for an unprivileged writer. */
  bavail: number;
  bsize: number;
  /** Inodes in all and free; 0 and 0 where the filesystem does not count them (FAT). */
  files: number;
  ffree: number;
}

export interface PreflightOptions {
  /** Bytes the command will write to the carrier (default RECEIPT_ROOM_BYTES); 0: no room check. */
  needBytes?: number;
  /** For tests: statfs of the carrier folder. */
  statfs?: (dir: string) => FreeSpace;
  /** For tests: create and remove a file in `folder`, throwing the errno error a write would. */
  probe?: (folder: string) => void;
  /**
   * What a refusal means, after "so": default "the terminal's receipt could not be stored; nothing
   * was sent" (inject); a load says "no batch could be stored on it; nothing was exported".
   */
  consequence?: string;
}

const RECEIPT_CONSEQUENCE = "the terminal's receipt could not be stored; nothing was sent";

const errno = (e: unknown): string => (e as NodeJS.ErrnoException | null)?.code ?? '';

/** Create a temporary file in `folder` and remove it: what a receipt's atomic write does first. */
function probeWrite(folder: string): void {
  // fs-atomic's temporary name shape: a run killed between the two calls leaves a file that the
  // next open of the carrier removes (carrier.ts removeStaleTemporaries).
  const file = join(folder, `.qkt-preflight.tmp-${process.pid}`);
  try {
    unlinkSync(file);
  } catch {
    // not there: the usual case
  }
  closeSync(openSync(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600));
  unlinkSync(file);
}

function defaultStatfs(dir: string): FreeSpace {
  const s = statfsSync(dir);
  return { bavail: Number(s.bavail), bsize: Number(s.bsize), files: Number(s.files), ffree: Number(s.ffree) };
}

/** The refusal for a write the carrier's drive or permissions do not allow, or undefined. */
export function carrierWriteRefusal(dir: string, e: unknown, consequence = RECEIPT_CONSEQUENCE): CarrierError | undefined {
  const code = errno(e);
  if (code === 'EROFS') {
    return new CarrierError('READ_ONLY', `carrier ${dir} is on a drive mounted read-only, so ${consequence}: remount it read-write (mount -o remount,rw on its mount point) and run the command again`);
  }
  if (code === 'EACCES' || code === 'EPERM') {
    const who = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : '';
    return new CarrierError('NOT_WRITABLE', `carrier ${dir} is not writable by this user${who}, so ${consequence}: run qkt as the user who owns the carrier, or give this user write access to it (chown, or mount a FAT drive with uid=/gid= options)`);
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new CarrierError('NO_ROOM', `carrier ${dir} has no room left on its drive, so ${consequence}: free some space on it and run the command again`);
  }
  return undefined;
}

/**
 * Refuse, before a terminal is contacted, a carrier that the command could not finish on: missing
 * (a drive not mounted), not a carrier, read-only, not writable by this user, or too full for the
 * receipt. Reads and creates nothing but one temporary file, removed at once.
 */
export function preflightCarrier(dirIn: string, o: PreflightOptions = {}): void {
  const dir = resolve(dirIn);
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new CarrierError('NOT_FOUND', `carrier ${dir} does not exist: is the drive mounted? (qkt ports lists the drives; check the path)`);
    }
    throw carrierWriteRefusal(dir, e) ?? e;
  }
  if (!st.isDirectory()) throw new CarrierError('NOT_A_CARRIER', `${dir} is not a folder, so not a carrier: is the drive mounted? (qkt ports lists the drives)`);
  let manifest = false;
  try {
    manifest = lstatSync(join(dir, MANIFEST_FILE)).isFile();
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw carrierWriteRefusal(dir, e) ?? e;
  }
  if (!manifest) throw new CarrierError('NOT_A_CARRIER', `${dir} is not a carrier (no ${MANIFEST_FILE}): is the drive mounted? (qkt ports lists the drives)`);
  checkCarrierWritable(dir, o);
}

/**
 * The folder `dir` (a carrier, or the empty folder a load makes one in) can be written by this user
 * and its drive has room for `needBytes` (with a margin): READ_ONLY, NOT_WRITABLE or NO_ROOM if not.
 */
export function checkCarrierWritable(dirIn: string, o: PreflightOptions = {}): void {
  const dir = resolve(dirIn);
  const consequence = o.consequence ?? RECEIPT_CONSEQUENCE;
  const refusal = (e: unknown) => carrierWriteRefusal(dir, e, consequence) ?? e;
  // Writable: where the receipt goes (receipts/, made by open if missing: then the folder itself)
  // and the journal it appends to. As root, permissions pass but a read-only mount still fails.
  const probe = o.probe ?? probeWrite;
  const receipts = join(dir, RECEIPT_DIR);
  let hasReceipts = false;
  try {
    hasReceipts = lstatSync(receipts).isDirectory();
  } catch {
    // missing (open makes it) or unreadable (open refuses it)
  }
  for (const folder of hasReceipts ? [dir, receipts] : [dir]) {
    try {
      probe(folder);
    } catch (e) {
      throw refusal(e);
    }
  }
  try {
    accessSync(join(dir, JOURNAL_FILE), constants.W_OK);
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw refusal(e);
  }

  const need = o.needBytes ?? RECEIPT_ROOM_BYTES;
  if (need <= 0) return;
  let fs: FreeSpace;
  try {
    fs = (o.statfs ?? defaultStatfs)(dir);
  } catch {
    return; // statfs is a nicety (a network share may refuse it); the write itself still checks
  }
  const want = Math.max(need, RECEIPT_ROOM_BYTES, RECEIPT_ROOM_BLOCKS * fs.bsize);
  const free = fs.bavail * fs.bsize;
  if (free < want) {
    throw new CarrierError('NO_ROOM', `carrier ${dir} has ${formatBytes(free)} free and needs at least ${formatBytes(want)}, so ${consequence}: free space on the drive (qkt kmd collect wipes delivered batches) and run the command again`);
  }
  if (fs.files > 0 && fs.ffree < RECEIPT_ROOM_INODES) {
    throw new CarrierError('NO_ROOM', `carrier ${dir} has no free file slots (inodes) left on its drive, so ${consequence}: remove files from the drive and run the command again`);
  }
}

/** The batch file names of a terminal: `<terminalId>-<32 hex>.qkb`. */
const batchFileOf = (terminalId: string, file: string): string | undefined => {
  const name = basename(file);
  const m = /^(.+)-([0-9a-f]{32})\.qkb$/.exec(name);
  return m && m[1] === terminalId && basename(resolve(file, '..')) === BATCH_DIR && name.endsWith(BATCH_EXT) ? m[2] : undefined;
};

/** How to recover from a damaged batch: void it at the KMD, load a new one. */
function damagedBatch(carrierId: string, terminalId: string, batchIdHex: string, file: string, reason: string): CarrierError {
  const b = batchIdHex.slice(0, 8);
  return new CarrierError(
    'DAMAGED_BATCH',
    `carrier ${carrierId}: terminal ${terminalId}'s batch ${b} is damaged (${basename(file)}: ${reason}); nothing was sent: back at the KMD, void it (qkt kmd void --home H --terminal ${terminalId} --batch ${b} --reason damaged) and load a new one (qkt carrier load --home H --carrier DIR --terminal ${terminalId} --bits N)`,
  );
}

/**
 * The batch to send to `terminalId` and its bytes, checked whole (header, length, name), or
 * undefined if the carrier has none for it. A batch file of this terminal that is on the carrier
 * but damaged (cut short, changed, unreadable) is DAMAGED_BATCH, never "no batch".
 */
export function batchToSend(carrier: Carrier, terminalId: string): (BatchEntry & { sealed: Uint8Array }) | undefined {
  const entry = carrier.batchFor(terminalId);
  if (entry) {
    try {
      return { ...entry, sealed: carrier.readBatch(entry) };
    } catch (e) {
      // Changed since the scan (a failing stick): the same message as a damaged file found by it.
      if (e instanceof CarrierError && e.code === 'DAMAGED_BATCH') throw damagedBatch(carrier.carrierId, terminalId, entry.batchId, entry.file, e.message.replace(/^.*? is damaged: /, ''));
      throw e;
    }
  }
  for (const d of carrier.status().damaged) {
    const b = batchFileOf(terminalId, d.file);
    if (b !== undefined) throw damagedBatch(carrier.carrierId, terminalId, b, d.file, d.reason);
  }
  return undefined;
}
