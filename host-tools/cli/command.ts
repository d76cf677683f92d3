// The CLI's command shape: a light spec (path, summary, usage, options, examples: registry.ts)
// and, loaded only when the command runs, a run() that calls the library and returns a typed
// result. `--json` prints that result and nothing else; otherwise render() turns it into lines.
import { parseBits, parseRate } from '../units.js';

/** One option of a command, as `--help` describes it and the parser reads it. */
export interface OptionInfo {
  type: 'string' | 'boolean';
  short?: string;
  /** Given once per value (`--terminal T1 --terminal T2`). */
  multiple?: boolean;
  /** The parser's default (booleans: false). */
  default?: string | boolean;
  /** What it means, with its unit. */
  description: string;
  /** The value's placeholder in help (`DIR`, `N`); default `VALUE`. */
  value?: string;
  /** The default the command applies when the option is absent, in words (`115200`, `QKT_HOME`). */
  defaultText?: string;
}

export type OptionSpec = Record<string, OptionInfo>;
export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** Exit codes of `qkt` (docs/cli.md): stable, scripts depend on them. */
export const Exit = {
  OK: 0,
  /** Something failed that has no more specific code. */
  FAILURE: 1,
  /** The command line is wrong (unknown command or option, bad value). */
  USAGE: 2,
  /** No terminal (or KMD) answered on the port, or the port cannot be opened. */
  NO_DEVICE: 3,
  /** The device answered with a refusal; the reason is the module's. */
  REFUSED: 4,
  /** The carrier is not usable here: wrong carrier, nothing for this terminal, already delivered. */
  CARRIER: 5,
  /** State on disk (home, flash image, carrier) is missing or corrupt. */
  STATE: 6,
  /** Another process holds the home, flash image or station store ("in use by pid N"); retry later. */
  BUSY: 7,
  /** Stopped by SIGINT (Ctrl-C), 128 + 2; the one-line reason says what state things are in. */
  INTERRUPTED: 130,
  /** Stopped by SIGTERM, 128 + 15; as INTERRUPTED. */
  TERMINATED: 143,
} as const;

/** An error the CLI reports as one line on stderr with a specific exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = Exit.FAILURE,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface Io {
  /** True when --json was given: human output and progress are silent. */
  json: boolean;
  /** Progress and notices for a person (stderr); a no-op under --json. */
  note(line: string): void;
  /**
   * A long-running service's log line (`station run`, `kmd serve`): stderr always, under --json
   * too, where stdout holds only JSON documents and stderr is the service's log.
   */
  log(line: string): void;
  /** Progress on stderr: a line redrawn in place on a TTY, plain lines now and then otherwise, none under --json. */
  progress: ProgressSink;
  /** Resolves when the user asks the command to stop (SIGINT/SIGTERM). */
  stopped: Promise<void>;
  /**
   * Aborts on the same first SIGINT/SIGTERM, its reason a StoppedError naming the signal: pass it
   * to library calls (LinkClient requests, sendBulk, injectBatch) so they stop at a safe point.
   * A command that has not finished about 2 s after the signal is ended by main (exit 130/143).
   */
  signal: AbortSignal;
  /** For long-running commands: print their "ready" document/line now, then keep running. */
  ready(result: unknown, human: string): void;
}

export interface ProgressSink {
  /** `done` of `total` bits (or, with `unit`, of things such as 'terminal': shown as counts, no rate). */
  update(done: number, total: number, label: string, unit?: string): void;
  done(): void;
}

/** What `qkt --help` and `qkt CMD --help` show and the parser needs: nothing heavy is loaded for it. */
export interface CommandSpec {
  /** Words that name the command, e.g. ['terminal', 'run']. */
  path: readonly string[];
  summary: string;
  usage: string;
  examples: readonly string[];
  options: OptionSpec;
  /** Options that must be present. */
  required?: readonly string[];
  /** The positional arguments it takes, if any (anything else on the line is refused). */
  positionals?: { name: string; description: string };
  /** Imports the implementation: only when the command runs. */
  load(): Promise<Command<any>>;
}

/** A command's implementation (commands/*.ts), loaded lazily by the spec. */
export interface Command<R = unknown> {
  run(values: Values, positionals: string[], io: Io): Promise<R>;
  /** Human rendering of the result; default is none (long-running commands print as they go). */
  render?(result: R): string;
  /**
   * For a command that finished but with part of its work refused (kmd collect with a rejected
   * receipt): the exit code and the one-line reason for stderr. The result is still printed.
   */
  outcome?(result: R): { exitCode: number; reason: string } | undefined;
}

export function defineCommand<R>(c: Command<R>): Command<R> {
  return c;
}

export function str(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === 'string' ? x : undefined;
}

export function strs(v: Values, name: string): string[] {
  const x = v[name];
  return Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : typeof x === 'string' ? [x] : [];
}

/** A key amount option (`3Mbit`, `384KiB`, bits), refused as a usage error naming the option. */
export function bitsOption(v: Values, name: string): number | undefined {
  const x = str(v, name);
  if (x === undefined) return undefined;
  try {
    return parseBits(x);
  } catch (e) {
    throw new CliError(`--${name}: ${(e as Error).message}`, Exit.USAGE);
  }
}

/** A rate option (`11kbit/s`, bit/s), refused as a usage error naming the option. */
export function rateOption(v: Values, name: string): number | undefined {
  const x = str(v, name);
  if (x === undefined) return undefined;
  try {
    return parseRate(x);
  } catch (e) {
    throw new CliError(`--${name}: ${(e as Error).message}`, Exit.USAGE);
  }
}

export function int(v: Values, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const x = str(v, name);
  if (x === undefined) return undefined;
  const n = Number(x);
  if (!Number.isInteger(n) || n < min || n > max) throw new CliError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(x)}`, Exit.USAGE);
  return n;
}

/** A duration option in seconds: a number of seconds, or with a unit (500ms, 2s, 1min), from `lo` to `hi`; `dflt` when absent. */
export function durationOption(v: Values, name: string, dflt: number, lo: number, hi: number): number {
  const text = str(v, name);
  if (text === undefined) return dflt;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|min)?$/.exec(text.trim());
  const x = m ? Number(m[1]) * (m[2] === 'ms' ? 0.001 : m[2] === 'min' ? 60 : 1) : NaN;
  if (!(x >= lo && x <= hi)) throw new CliError(`--${name} must be a duration from ${lo} s to ${hi} s (500ms, 2s, 1min), got ${JSON.stringify(text)}`, Exit.USAGE);
  return x;
}
