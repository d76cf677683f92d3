// The carrier's append-only event log (journal.jsonl): one JSON object per line, each line fsynced
// before the call returns, so a pulled drive loses at most the line being written.
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsyncDir } from '../fs-atomic.js';

/** What the carrier records. Ids are `<terminalId>-<batchIdHex>`, the batch and receipt file stem. */
export type JournalEvent =
  | { event: 'created'; carrierId: string; kmdId: string }
  | { event: 'loaded'; id: string; terminalId: string; batchId: string; seq: number; bits: number; bytes: number }
  /** The terminal accepted the batch; `receipt` is the stored receipt, hex (non-secret: a MAC and a digest). */
  | { event: 'injected'; id: string; terminalId: string; batchId: string; seq: number; bits: number; receipt: string }
  | { event: 'delivered'; id: string }
  /** The batch's ciphertext was overwritten and unlinked; `recovered` when open()/scan() finished it after a crash. */
  | { event: 'wiped'; id: string; recovered?: boolean }
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

export class Journal {
  constructor(readonly path: string) {}

  /** Parse the log. Unparseable lines are counted and skipped; a torn last line is ignored. */
  read(): JournalContents {
    if (!existsSync(this.path)) return { records: [], skipped: 0, torn: false };
    const text = readFileSync(this.path, 'utf8');
    const lines = text.split('\n');
    // split() leaves the text after the last newline as the final element: '' for a whole log,
    // the fragment of an interrupted append otherwise.
    const tail = lines.pop() ?? '';
    const records: JournalRecord[] = [];
    let skipped = 0;
    for (const line of lines) {
      if (line === '') continue;
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
    if (!existsSync(this.path)) return false;
    const bytes = readFileSync(this.path);
    if (bytes.length === 0 || bytes[bytes.length - 1] === NL) return false;
    const keep = bytes.lastIndexOf(NL) + 1;
    const fd = openSync(this.path, 'r+');
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
    const created = !existsSync(this.path);
    const fd = openSync(this.path, 'a', 0o600);
    try {
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
