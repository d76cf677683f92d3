// A one-line progress bar on stderr (bits, rate, ETA), redrawn in place on a TTY and silent
// elsewhere. Hand-written: it is 40 lines, and the bar libraries pull in terminal handling we
// don't need and can't make quiet per line.
import type { ProgressSink } from './command.js';

export function ttyProgress(stream: NodeJS.WriteStream, enabled: boolean, now: () => number = Date.now): ProgressSink {
  let start = 0;
  let last = 0;
  let drawn = false;
  return {
    update(done, total, label) {
      if (!enabled) return;
      const t = now();
      if (!start) start = t;
      if (t - last < 100 && done < total) return; // ~10 redraws a second is plenty
      last = t;
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const width = 28;
      const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
      const secs = (t - start) / 1000;
      const rate = secs > 0 ? done / secs : 0;
      const eta = rate > 0 ? (total - done) / rate : 0;
      const line = `${label} [${bar}] ${(frac * 100).toFixed(1).padStart(5)}%  ${fmtRate(rate)}  ETA ${eta.toFixed(0)}s`;
      stream.write(`\r${line}\x1b[K`);
      drawn = true;
    },
    done() {
      if (drawn) stream.write('\n');
      drawn = false;
      start = 0;
    },
  };
}

function fmtRate(bitsPerSecond: number): string {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
  if (bitsPerSecond >= 1e3) return `${(bitsPerSecond / 1e3).toFixed(1)} kbit/s`;
  return `${bitsPerSecond.toFixed(0)} bit/s`;
}
