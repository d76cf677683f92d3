// Virtual serial cable: a socat-made pair of raw ptys, bytes written to one come out of the other,
// as with two USB-serial adapters wired back to back. Used by `qkt demo` and the benchmarks
// (bench/link-rig.ts) and by the HIL rig (hil/pty.ts re-exports it).
import { spawn, spawnSync } from 'node:child_process';

export interface PtyPair {
  /** The two pty paths, e.g. /dev/pts/3 and /dev/pts/4. */
  a: string;
  b: string;
  /** socat's pid; close() kills exactly this process. */
  pid: number;
  /** Kill socat and wait for it to exit; idempotent. Open ports on a and b then see EIO. */
  close(): Promise<void>;
}

/** True when a `socat` that runs is on PATH. */
export function socatAvailable(): boolean {
  const r = spawnSync('socat', ['-V'], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0;
}

/**
 * For tap's `skip` option: a visible reason to skip a socat test, or false to run it. In CI
 * (CI=true) a missing socat is a failure, not a skip, so it never passes by skipping.
 */
export function socatSkipReason(): string | false {
  if (process.env['CI'] === 'true' || socatAvailable()) return false;
  return 'socat not installed (apt-get install -y socat); pty tests skipped';
}

/** socat processes of pairs not closed yet: ended when this process exits (see createPtyPair). */
const live = new Set<number>();
let exitHook = false;
function killLiveOnExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const pid of live) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  });
}

/**
 * Spawn `socat -d -d pty,raw,echo=0 pty,raw,echo=0` and resolve once both ptys exist and socat
 * is relaying. raw,echo=0: no line discipline, so binary frames (0x00, 0x03, 0x0a...) pass as is.
 *
 * socat runs in a process group of its own: Ctrl-C at a terminal signals the whole foreground
 * group, and a socat that died with it at once pulled the ptys from under the command that was
 * stopping (`qkt monitor pty pty` ended "bad file descriptor" instead of "stopped"). The pair's
 * owner ends it: close(), or this process's exit (a second Ctrl-C, process.exit) kills it.
 */
export function createPtyPair(options: { timeoutMs?: number } = {}): Promise<PtyPair> {
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const child = spawn('socat', ['-d', '-d', 'pty,raw,echo=0', 'pty,raw,echo=0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    if (child.pid !== undefined) {
      live.add(child.pid);
      killLiveOnExit();
      const pid = child.pid;
      child.once('exit', () => live.delete(pid));
    }
    const paths: string[] = [];
    let stderr = '';
    let settled = false;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));

    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error(`socat gave no pty pair in ${timeoutMs} ms: ${stderr.trim()}`)), timeoutMs);

    child.once('error', (err) => fail(new Error(`cannot run socat: ${err.message}`)));
    child.once('exit', (code, signal) => fail(new Error(`socat exited (${code ?? signal}) before the pair was ready: ${stderr.trim()}`)));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      if (settled) return; // keep draining so socat never blocks on a full pipe
      stderr += text;
      // socat -d -d logs "... N PTY is /dev/pts/3" for each address, then
      // "... N starting data transfer loop with FDs [..]" once it relays.
      for (const m of stderr.matchAll(/PTY is (\S+)/g)) if (m[1] && !paths.includes(m[1])) paths.push(m[1]);
      const [a, b] = paths;
      if (a && b && /starting data transfer loop/.test(stderr) && child.pid !== undefined) {
        settled = true;
        clearTimeout(timer);
        const pid = child.pid;
        let closing: Promise<void> | undefined;
        resolve({
          a,
          b,
          pid,
          close: () => {
            closing ??= (async () => {
              if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGTERM');
              await exited;
            })();
            return closing;
          },
        });
      }
    });
  });
}
