// Where `qkt monitor` writes its frame lines: stdout, which may be read slower than a cable fills
// it (a pager, a paused terminal, a slow pipe, a peer flooding a TCP end with tiny frames: a line
// of ~130 characters for every 2 bytes). Lines are queued only up to a bound; past it they are
// counted and not shown, and one line says how many were left out where the gap is. The relay and
// the capture are not held up either way: the pcap still holds every frame.
import type { Writable } from 'node:stream';

/** Bytes of lines waiting for the reader beyond which lines are left out. */
export const MAX_BACKLOG = 4 * 1024 * 1024;

export class FrameOutput {
  /** Frames left out since the last line shown. */
  #pending = 0;
  /** Frames left out in all. */
  skipped = 0;

  constructor(
    readonly out: Pick<Writable, 'write' | 'writableLength'>,
    /** The line that reports `n` frames left out (without its newline). */
    readonly skippedLine: (n: number) => string,
    readonly maxBacklog = MAX_BACKLOG,
  ) {}

  /** Show one line (without its newline), or count it as left out while the reader is behind. */
  line(text: string): void {
    if (this.out.writableLength > this.maxBacklog) {
      this.#pending++;
      this.skipped++;
      return;
    }
    if (this.#pending > 0) {
      this.out.write(this.skippedLine(this.#pending) + '\n');
      this.#pending = 0;
    }
    this.out.write(text + '\n');
  }

  /** At the end: report frames left out since the last line shown (the reader may have caught up). */
  flush(): void {
    if (this.#pending === 0) return;
    this.out.write(this.skippedLine(this.#pending) + '\n');
    this.#pending = 0;
  }
}
