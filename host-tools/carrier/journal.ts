// The carrier's append-only event log (journal.jsonl): one JSON object per line, each line fsynced
// before the call returns, so a pulled drive loses at most the line being written.
//
// The carrier may be a stranger's drive: journal.jsonl must be a regular file, not a symlink (it is
// lstat'ed and opened with O_NOFOLLOW, so lines never land in a link's target) and at most
// JOURNAL_MAX_BYTES; anything else is CarrierError UNSAFE_FILE and the carrier is not opened.
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsyncDir } from '../fs-atomic.js';
import { CarrierError } from './errors.js';
import { lexists, openRegular, RDWR_FLAGS, readCapped, UnsafeFileError } from './safe-file.js';

/**
 * The biggest journal a carrier may hold: 64 MiB, some 40,000 deliveries (an `injected` line with
 * its receipt is under 1.6 KiB). A bigger one is refused, never read whole.
 */
export const JOURNAL_MAX_BYTES = 64 * 1024 * 1024;
/** The longest line parsed, in characters; longer complete lines count as skipped. */
export const JOURNAL_MAX_LINE_BYTES = 4096;

/** What the carrier records. Ids are `<terminalId>-<batchIdHex>`, the batch and receipt file stem. */
export type JournalEvent =
  | { event: 'created'; carrierId: string; kmdId: string }
  | { event: 'loaded'; id: string; terminalId: string; batchId: string; seq: number; bits: number; bytes: number }
  /** The terminal accepted the batch; `receipt` is the stored receipt, hex (non-secret: a MAC and a digest). */
  | { event: 'injected'; id: string; terminalId: string; batchId: string; seq: number; bits: number; receipt: string }
  /** A receipt is stored: the batch is never offered again, its ciphertext is kept until the KMD verifies the receipt. */
  | { event: 'delivered'; id: string }
  /**
   * The KMD found the stored receipt (hex) false: it is moved to `file` under quarantine/ and the
   * batch is pending again. Written before the move; open()/scan() finish a move it interrupted.
   */
  | { event: 'rejected'; id: string; receipt: string; reason: string; file: string }
  /** The batch's ciphertext was overwritten and unlinked after collect; `recovered` when open()/scan() finished it after a crash. */
  | { event: 'wiped'; id: string; recovered?: boolean }
  /** The KMD verified these receipts (`qkt kmd collect`); their ciphertext is wiped next. */
  | { event: 'collected'; ids: string[] };

export type JournalRecord = JournalEvent & { time: string };

export interface JournalContents {
  records: JournalRecord[];
  /** Complete lines that did not parse (a medium that returned garbage); never fatal. */
  skipped: number;
  /** A last line without its newline: a write the pull interrupted. Ignored. */
  torn: boolean;
}

const NL = 0x0a;

/** fstat the open journal: a FIFO or device swapped in is refused before anything is written. */
function openRegularCheck(fd: number, path: string): void {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new UnsafeFileError(path, 'not a regular file', 0);
}

export class Journal {
  constructor(readonly path: string) {}

  /** Parse the log. Unparseable lines are counted and skipped; a torn last line is ignored. */
  /** The whole file, checked (undefined if there is none). */
  private bytes(): Uint8Array | undefined {
    try {
      return readCapped(this.path, JOURNAL_MAX_BYTES);
    } catch (e) {
      throw this.unsafe(e);
    }
  }

  private unsafe(e: unknown): unknown {
    if (e instanceof UnsafeFileError) return new CarrierError('UNSAFE_FILE', `${this.path}: ${e.reason}; refusing to use this carrier`);
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') return new CarrierError('UNSAFE_FILE', `${this.path}: a symbolic link; refusing to use this carrier`);
    return e;
  }

  read(): JournalContents {
    const bytes = this.bytes();
    if (bytes === undefined) return { records: [], skipped: 0, torn: false };
    const text = Buffer.from(bytes).toString('utf8');
    const lines = text.split('\n');
    // split() leaves the text after the last newline as the final element: '' for a whole log,
    // the fragment of an interrupted append otherwise.
    const tail = lines.pop() ?? '';
    const records: JournalRecord[] = [];
    let skipped = 0;
    for (const line of lines) {
      if (line === '') continue;
      if (line.length > JOURNAL_MAX_LINE_BYTES) {
        skipped++;
        continue;
      }
      try {
        const r = JSON.parse(line) as unknown;
        if (r !== null && typeof r === 'object' && typeof (r as { event?: unknown }).event === 'string') {
          records.push(r as JournalRecord);
        } else skipped++;
      } catch {
        skipped++;
      }
    }
    return { records, skipped, torn: tail !== '' };
  }

  /**
   * Cut a torn last line off, so the next append starts on a fresh line instead of gluing itself
   * to the fragment (which would make both unreadable). Returns true if it cut something.
   */
  repair(): boolean {
    const bytes = this.bytes();
    if (bytes === undefined) return false;
    if (bytes.length === 0 || bytes[bytes.length - 1] === NL) return false;
    const keep = bytes.lastIndexOf(NL) + 1;
    let fd: number;
    try {
      ({ fd } = openRegular(this.path, RDWR_FLAGS, JOURNAL_MAX_BYTES));
    } catch (e) {
      throw this.unsafe(e);
    }
    try {
      ftruncateSync(fd, keep);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return true;
  }

  /** Append one event and fsync it (and the folder, the first time the file appears). */
  append(event: JournalEvent): JournalRecord {
    const record = { time: new Date().toISOString(), ...event } as JournalRecord;
    const line = Buffer.from(`${JSON.stringify(record)}\n`, 'utf8');
    const created = !lexists(this.path);
    let fd: number;
    try {
      // O_NOFOLLOW: a journal.jsonl symlinked to another file never gets lines appended to it.
      fd = openSync(this.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
    } catch (e) {
      throw this.unsafe(e);
    }
    try {
      try {
        openRegularCheck(fd, this.path);
      } catch (e) {
        throw this.unsafe(e);
      }
      let off = 0;
      while (off < line.length) off += writeSync(fd, line, off, line.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // A new file's directory entry is only durable once the folder is synced.
    if (created) fsyncDir(dirname(this.path));
    return record;
  }
}
