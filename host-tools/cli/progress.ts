// Progress of a long command on stderr, in one of three modes: on a TTY one line redrawn in place
// (`label [bar] pct rate ETA`) that fits the terminal's width; without a TTY (a pipe, a CI log)
// plain lines now and then; under --json nothing. Rate and ETA appear only once measured (a
// second of progress) and come from a sliding window, so the ETA does not jump. Hand-written: the
// bar libraries pull in terminal handling we don't need and can't make quiet per line.
import type { ProgressSink } from './command.js';

export type ProgressMode = 'tty' | 'lines' | 'off';

/** Rate and ETA show once this much time has passed with progress made. */
export const MEASURE_MS = 1000;
/** The rate is measured over the last this-many milliseconds. */
export const WINDOW_MS = 5000;
/** Without a TTY: a line at most every this-many ms and every PLAIN_STEP of the total. */
export const PLAIN_MS = 5000;
export const PLAIN_STEP = 0.1;
/** On a TTY: at most ~10 redraws a second. */
const REDRAW_MS = 100;
/** Widest bar (inside the brackets) and narrowest before the label is cut. */
const BAR_MAX = 30;
const BAR_MIN = 5;

interface Sample {
  t: number;
  done: number;
}

/** One operation's state: a new label or total, or `done` going back, starts another. */
interface Op {
  label: string;
  total: number;
  unit: string | undefined;
  start: number;
  startDone: number;
  samples: Sample[];
  done: number;
  t: number;
}

/**
 * The CLI's progress sink. `mode` 'tty' redraws one line (stream.columns wide at most, less one,
 * so it never wraps); 'lines' prints a plain line at most every PLAIN_MS and PLAIN_STEP of the
 * way, and a last one when it printed any (a command quicker than PLAIN_MS prints none); 'off'
 * prints nothing. `now` is the clock (tests pass a fake one).
 */
export function ttyProgress(stream: NodeJS.WriteStream, mode: ProgressMode, now: () => number = Date.now): ProgressSink {
  let op: Op | undefined;
  let drawn = false; // a TTY line is on screen
  let lastDraw = -Infinity;
  let plainAt: { t: number; frac: number } | undefined; // the last plain line printed
  let plainCount = 0;
  const onResize = () => {
    if (op && drawn) draw();
  };

  function draw(): void {
    const columns = stream.columns > 0 ? stream.columns : 80;
    stream.write(`\r${fitLine(view(op!, now()), columns - 1)}\x1b[K`);
    if (!drawn) stream.on('resize', onResize);
    drawn = true;
    lastDraw = now();
  }

  return {
    update(done, total, label, unit) {
      if (mode === 'off') return;
      const t = now();
      if (!op || op.label !== label || op.total !== total || done < op.done) {
        op = { label, total, unit, start: t, startDone: done, samples: [{ t, done }], done, t };
        plainAt = undefined;
      }
      op.done = done;
      op.t = t;
      const s = op.samples;
      if (t - s[s.length - 1]!.t >= REDRAW_MS || done >= total) s.push({ t, done });
      while (s.length > 2 && t - s[1]!.t >= WINDOW_MS) s.shift();
      if (mode === 'tty') {
        if (t - lastDraw >= REDRAW_MS || done >= total) draw();
        return;
      }
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const since = plainAt ?? { t: op.start, frac: op.startDone / (total || 1) };
      if (t - since.t >= PLAIN_MS && frac - since.frac >= PLAIN_STEP - 1e-9 && done < total) {
        stream.write(plainLine(view(op, t)) + '\n');
        plainAt = { t, frac };
        plainCount++;
      }
    },
    done() {
      if (mode === 'tty' && drawn) {
        stream.write('\n');
        stream.off('resize', onResize);
      }
      if (mode === 'lines' && plainCount > 0 && op) stream.write(plainLine(view(op, op.t)) + '\n');
      drawn = false;
      lastDraw = -Infinity;
      op = undefined;
      plainAt = undefined;
      plainCount = 0;
    },
  };
}

/** What a line shows, measured: rate and ETA undefined until known. */
export interface ProgressView {
  label: string;
  done: number;
  total: number;
  /** Count noun for things that are not bits ("terminal"); no rate then. */
  unit: string | undefined;
  frac: number;
  /** bit/s over the window; undefined until MEASURE_MS of progress. */
  rate: number | undefined;
  /** Seconds left; undefined until the rate is known, or when finished. */
  eta: number | undefined;
  /** Seconds since the operation began. */
  elapsed: number;
}

function view(op: Op, t: number): ProgressView {
  const frac = op.total > 0 ? Math.min(1, op.done / op.total) : 0;
  const finished = op.done >= op.total;
  let rate: number | undefined;
  if (op.unit === undefined && t - op.start >= MEASURE_MS && op.done > op.startDone) {
    // Finished: the average over the whole run; before that, the sliding window.
    const from = finished ? { t: op.start, done: op.startDone } : op.samples[0]!;
    const dt = (t - from.t) / 1000;
    if (dt > 0 && op.done > from.done) rate = (op.done - from.done) / dt;
  }
  const eta = rate && !finished ? (op.total - op.done) / rate : undefined;
  return { label: op.label, done: op.done, total: op.total, unit: op.unit, frac, rate, eta, elapsed: (t - op.start) / 1000 };
}

/**
 * The TTY line in at most `max` characters. Full: `label [####......] 45%  1.23 Mbit/s  ETA 7s`;
 * when it is too wide, it drops the ETA, then the rate, then shrinks the bar, then cuts the label.
 */
export function fitLine(v: ProgressView, max: number): string {
  const pct = `${Math.floor(v.frac * 100)}%`.padStart(4);
  const bar = (w: number) => `[${'#'.repeat(Math.round(v.frac * w)).padEnd(w, '.')}]`;
  const rate = v.rate !== undefined ? `  ${formatRate(v.rate)}` : v.unit !== undefined ? `  ${v.done}/${v.total}` : '';
  const eta = v.eta !== undefined ? `  ETA ${formatSeconds(v.eta)}` : '';
  for (const tail of [rate + eta, rate, '']) {
    const line = `${v.label} ${bar(BAR_MAX)} ${pct}${tail}`;
    if (line.length <= max) return line;
  }
  // Shrink the bar, then cut the label (never below one character and an ellipsis).
  const room = max - v.label.length - 1 - 2 - 1 - pct.length;
  if (room >= BAR_MIN) return `${v.label} ${bar(Math.min(room, BAR_MAX))} ${pct}`;
  const labelRoom = max - 1 - (BAR_MIN + 2) - 1 - pct.length;
  if (labelRoom >= 2) return `${v.label.slice(0, labelRoom - 1)}… ${bar(BAR_MIN)} ${pct}`;
  return `${v.label} ${pct.trim()}`.slice(0, Math.max(0, max)); // absurdly narrow: what fits
}

/** The plain line for logs: `inject T1: 45% (460.8 kbit of 1 Mbit), 1.23 Mbit/s, ETA 7s`. */
export function plainLine(v: ProgressView): string {
  const pct = `${Math.floor(v.frac * 100)}%`;
  const amounts = v.unit !== undefined ? `${v.done} of ${v.total} ${v.unit}${v.total === 1 ? '' : 's'}` : `${formatAmount(v.done)} of ${formatAmount(v.total)}`;
  const parts = [`${v.label}: ${pct} (${amounts})`];
  if (v.rate !== undefined) parts.push(formatRate(v.rate));
  if (v.eta !== undefined) parts.push(`ETA ${formatSeconds(v.eta)}`);
  else if (v.done >= v.total) parts.push(`in ${formatSeconds(v.elapsed)}`);
  return parts.join(', ');
}

/** Rates are decimal (DESIGN.md "Units"): 1.23 Mbit/s, 98.3 kbit/s, 640 bit/s. */
export function formatRate(bitsPerSecond: number): string {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
  if (bitsPerSecond >= 1e3) return `${(bitsPerSecond / 1e3).toFixed(1)} kbit/s`;
  return `${bitsPerSecond.toFixed(0)} bit/s`;
}

/** Key amounts are binary (DESIGN.md "Units"), one decimal at most: 460.8 kbit, 1 Mbit. */
export function formatAmount(bits: number): string {
  const one = (n: number) => n.toFixed(1).replace(/\.0$/, '');
  if (bits >= 2 ** 20) return `${one(bits / 2 ** 20)} Mbit`;
  if (bits >= 2 ** 10) return `${one(bits / 2 ** 10)} kbit`;
  return `${bits} bit`;
}

/** 7s, 1m05s, 2h03m. */
export function formatSeconds(s: number): string {
  const n = Math.max(0, Math.ceil(s));
  if (n < 60) return `${n}s`;
  if (n < 3600) return `${Math.floor(n / 60)}m${String(n % 60).padStart(2, '0')}s`;
  return `${Math.floor(n / 3600)}h${String(Math.floor((n % 3600) / 60)).padStart(2, '0')}m`;
}
