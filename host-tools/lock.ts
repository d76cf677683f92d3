// One writer per state (STYLE.md rule 18, issue 9): an exclusive lock file beside (or inside) what
// it guards, holding who holds it: `{pid, host, command, since, nonce, boot, start}`.
//
// Hand-written rather than proper-lockfile: that library decides staleness by the lock's mtime,
// so a holder must keep touching it (a heartbeat timer in every process, and a slow or paused
// process loses its lock). What takes these locks is the CLI processes and services of one
// machine; the pid in the lock says for certain whether its holder still lives, with no timer.
//
// - Taking: open(O_CREAT|O_EXCL) of `<path>.lock` (or the lock file given), then the holder
//   document is written into it. Only one process can create it.
// - Stale: a lock of this host whose holder is gone (the process crashed or was killed) is taken
//   over. On Linux the lock also records the boot id (/proc/sys/kernel/random/boot_id) and the
//   holder's start time (field 22 of /proc/<pid>/stat), because a pid is reused: after a reboot
//   (a power cut) the pid of a lock may well be alive again as some other process. Such a lock
//   is stale when the boot id differs, the pid is dead, or the pid's start time is not the
//   recorded one. Without /proc, or for a lock written before boot/start were recorded, it is
//   stale when its pid is dead. It is taken over without a window where two processes think they hold it: the taker first wins a
//   takeover lock named after that exact stale lock (its nonce), itself an O_EXCL lock file;
//   only the winner checks the lock is still the stale one, unlinks it and creates its own with
//   O_EXCL again. A racing taker either loses the takeover lock or, winning it later, finds a
//   different lock there and leaves it. A lock file left empty or unreadable (a crash between
//   create and write) counts as stale once it is a few seconds old, or when its mtime is more
//   than a few seconds in the future (a clock set back, e.g. after a power cut).
// - A lock held by another host (a home on a shared disk) is never taken over.
// - Waiting is bounded (QKT_LOCK_WAIT seconds, default 10), polling; then LockBusyError, whose
//   message is the one line the CLI prints: "KMD home H is in use by pid N (qkt carrier load,
//   since 2025-01-01T10:00:00.000Z)".
// - Released by release(), and on every way out of the process (signal-exit): normal exit,
//   process.exit(), an uncaught error, SIGINT/SIGTERM/SIGHUP when nothing else handles them (the
//   CLI handles them itself and unwinds through its finally blocks). A process that is SIGKILLed
//   leaves a stale lock, which the next taker takes over.
// - Re-entrant within a process: a process taking a lock it already holds just counts. Holders
//   that await while holding (CLI commands) must be the only user of that lock in their process;
//   services take locks around synchronous critical sections only.
import { closeSync, fstatSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { onExit } from 'signal-exit';

export interface LockHolder {
  pid: number;
  host: string;
  /** What holds it, e.g. "qkt carrier load". */
  command: string;
  /** ISO time it was taken. */
  since: string;
  /** Random, names this one holding (a pid can come back). */
  nonce: string;
  /** Linux boot id of the holder's boot; absent where /proc is missing (and in older locks). */
  boot?: string;
  /** The holder's start time, clock ticks since boot (/proc/<pid>/stat field 22); with `boot`. */
  start?: number;
}

export interface LockOptions {
  /** What the lock guards, for the error message: "KMD home /srv/kmd", "flash image t1.img". */
  what: string;
  /** The lock file; default `<target>.lock`. */
  file?: string;
  /** How long to wait for the holder, in ms; 0 fails at once. Default: lockWaitMs(). */
  waitMs?: number;
}

/** Held by another process, still, after the wait. The message is one line for the CLI. */
export class LockBusyError extends Error {
  constructor(
    readonly what: string,
    readonly lockFile: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(
      holder
        ? `${what} is in use by pid ${holder.pid}${holder.host !== hostname() ? ` on host ${holder.host}` : ''} (${holder.command}, since ${holder.since})`
        : `${what} is in use (lock file ${lockFile} is being written)`,
    );
    this.name = 'LockBusyError';
  }
}

/** A lock this process holds. release() is idempotent. */
export interface Lock {
  readonly file: string;
  release(): void;
}

const DEFAULT_WAIT_MS = 10_000;
const POLL_MS = 25;
/** An empty or unreadable lock file younger than this is being written by its creator. */
const UNREADABLE_GRACE_MS = 3_000;
/** An empty or unreadable lock file whose mtime is further in the future than this is stale. */
const FUTURE_SKEW_MS = 5_000;
const HOST = hostname();

/** This boot's id, or undefined without /proc (not Linux). */
function readBootId(): string | undefined {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return id === '' ? undefined : id;
  } catch {
    return undefined;
  }
}

/** Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined. */
export function procStartTime(pid: number): number | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields go on after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = Number(rest[22 - 3]);
    return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  } catch {
    return undefined;
  }
}

const BOOT = readBootId();
const START = BOOT === undefined ? undefined : procStartTime(process.pid);

let commandName: string | undefined;

/** Name this process' locks after the command it runs ("qkt carrier load"). */
export function setLockCommand(name: string): void {
  commandName = name;
}

function currentCommand(): string {
  return commandName ?? `node ${basename(process.argv[1] ?? 'node')}`;
}

/** The wait bound: QKT_LOCK_WAIT (seconds, may be fractional) or 10 s. */
export function lockWaitMs(): number {
  const env = process.env['QKT_LOCK_WAIT'];
  if (env !== undefined && env.trim() !== '') {
    const s = Number(env);
    if (Number.isFinite(s) && s >= 0) return Math.round(s * 1000);
  }
  return DEFAULT_WAIT_MS;
}

// ---------------------------------------------------------------- holdings of this process

interface Held {
  holder: LockHolder;
  count: number;
}
const held = new Map<string, Held>();
let hooked = false;

function releaseAll(): void {
  for (const file of [...held.keys()]) unlinkIfOurs(file, held.get(file)!.holder.nonce);
  held.clear();
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  // signal-exit runs this on process exit, process.exit(), an uncaught error, and on a signal
  // that would end the process (no other handler for it: the CLI handles SIGINT/SIGTERM itself
  // and unwinds through its finally blocks, releasing as it goes).
  onExit(() => releaseAll());
}

// ---------------------------------------------------------------- the lock file

type Observed = { holder: LockHolder | undefined; id: string; ageMs: number };

function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const h = JSON.parse(text) as Partial<LockHolder> | null;
    if (h && typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.command === 'string' && typeof h.since === 'string' && typeof h.nonce === 'string') {
      const out: LockHolder = { pid: h.pid, host: h.host, command: h.command, since: h.since, nonce: h.nonce };
      if (typeof h.boot === 'string') out.boot = h.boot;
      if (typeof h.start === 'number') out.start = h.start;
      return out;
    }
  } catch {
    // a lock file being written, or damaged
  }
  return undefined;
}

/** The lock file as it is now, or undefined when there is none. */
function observe(file: string): Observed | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const st = fstatSync(fd);
    const holder = parseHolder(readFileSync(fd, 'utf8'));
    // Identity: the holder's nonce, or for an unreadable file its inode and mtime.
    return { holder, id: holder ? holder.nonce : `ino${st.ino}-${Math.round(st.mtimeMs)}`, ageMs: Date.now() - st.mtimeMs };
  } finally {
    closeSync(fd);
  }
}

function isStale(file: string, o: Observed): boolean {
  if (!o.holder) return o.ageMs > UNREADABLE_GRACE_MS || o.ageMs < -FUTURE_SKEW_MS;
  const h = o.holder;
  if (h.host !== HOST) return false; // another machine's process: no way to tell
  if (h.boot !== undefined && BOOT !== undefined && h.boot !== BOOT) return true; // taken before this boot
  if (h.pid === process.pid) return held.get(file)?.holder.nonce !== h.nonce; // a former process with our pid
  if (!pidAlive(h.pid)) return true;
  if (h.boot === undefined || BOOT === undefined || h.start === undefined) return false; // an older lock, or no /proc: the pid says it all
  const now = procStartTime(h.pid);
  return now !== undefined && now !== h.start; // the pid is another process now
}

function create(file: string, holder: LockHolder): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600); // O_CREAT | O_EXCL
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    const buf = Buffer.from(JSON.stringify(holder) + '\n');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
  } catch (e) {
    closeSync(fd);
    unlinkSync(file);
    throw e;
  }
  closeSync(fd);
  return true;
}

function unlinkIfOurs(file: string, nonce: string): void {
  try {
    if (observe(file)?.holder?.nonce === nonce) unlinkSync(file);
  } catch {
    // already gone, or the folder with it
  }
}

function newHolder(command: string): LockHolder {
  const h: LockHolder = { pid: process.pid, host: HOST, command, since: new Date().toISOString(), nonce: randomBytes(8).toString('hex') };
  if (BOOT !== undefined && START !== undefined) {
    h.boot = BOOT;
    h.start = START;
  }
  return h;
}

/**
 * One attempt, no waiting: take `file`, taking over a stale lock on the way. Returns the holder
 * written, or the lock that is in the way.
 */
function attempt(file: string, command: string, depth = 0): { holder: LockHolder } | { busy: Observed | undefined } {
  for (let tries = 0; tries < 4; tries++) {
    const mine = newHolder(command);
    if (create(file, mine)) return { holder: mine };
    const seen = observe(file);
    if (!seen) continue; // released in between: try again at once
    if (!isStale(file, seen) || depth >= 3) return { busy: seen };
    // Take over: first win the takeover lock of exactly this stale lock, then check and unlink.
    const breaker = `${file}.takeover-${seen.id.replace(/[^A-Za-z0-9.-]/g, '_')}`;
    const b = attempt(breaker, `${command} (taking over a stale lock)`, depth + 1);
    if (!('holder' in b)) return { busy: seen };
    try {
      if (observe(file)?.id === seen.id) {
        try {
          unlinkSync(file);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        }
      }
    } finally {
      unlinkIfOurs(breaker, b.holder.nonce);
    }
  }
  return { busy: observe(file) };
}

function lockFileOf(target: string, o: Pick<LockOptions, 'file'>): string {
  return resolve(o.file ?? `${target}.lock`);
}

function reenter(file: string): Lock | undefined {
  const h = held.get(file);
  if (!h) return undefined;
  h.count++;
  return handle(file, h.holder.nonce);
}

function handle(file: string, nonce: string): Lock {
  let done = false;
  return {
    file,
    release: () => {
      if (done) return;
      done = true;
      const h = held.get(file);
      if (!h || h.holder.nonce !== nonce) return;
      if (--h.count > 0) return;
      held.delete(file);
      unlinkIfOurs(file, nonce);
    },
  };
}

function took(file: string, holder: LockHolder): Lock {
  hook();
  held.set(file, { holder, count: 1 });
  return handle(file, holder.nonce);
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Take the lock on `target`, waiting (blocking this thread) up to the bound. */
export function lockSync(target: string, o: LockOptions): Lock {
  const file = lockFileOf(target, o);
  const again = reenter(file);
  if (again) return again;
  const deadline = Date.now() + (o.waitMs ?? lockWaitMs());
  for (;;) {
    const r = attempt(file, currentCommand());
    if ('holder' in r) return took(file, r.holder);
    if (Date.now() >= deadline) throw new LockBusyError(o.what, file, r.busy?.holder);
    Atomics.wait(sleeper, 0, 0, POLL_MS + Math.random() * POLL_MS);
  }
}

/** Take the lock on `target`, waiting (without blocking the event loop) up to the bound. */
export async function lock(target: string, o: LockOptions): Promise<Lock> {
  const file = lockFileOf(target, o);
  const deadline = Date.now() + (o.waitMs ?? lockWaitMs());
  for (;;) {
    const again = reenter(file);
    if (again) return again;
    const r = attempt(file, currentCommand());
    if ('holder' in r) return took(file, r.holder);
    if (Date.now() >= deadline) throw new LockBusyError(o.what, file, r.busy?.holder);
    await new Promise((res) => setTimeout(res, POLL_MS + Math.random() * POLL_MS));
  }
}

export function withLockSync<T>(target: string, o: LockOptions, fn: () => T): T {
  const l = lockSync(target, o);
  try {
    return fn();
  } finally {
    l.release();
  }
}

export async function withLock<T>(target: string, o: LockOptions, fn: () => T | Promise<T>): Promise<T> {
  const l = await lock(target, o);
  try {
    return await fn();
  } finally {
    l.release();
  }
}

/** Who holds the lock on `target` now (another process, or this one), if anyone. */
export function lockHolder(target: string, o: Pick<LockOptions, 'file'> = {}): LockHolder | undefined {
  return observe(lockFileOf(target, o))?.holder;
}
