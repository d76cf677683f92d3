// The modules a fuzz run can target: an enrolled module in this process on an in-memory NOR flash
// fed through an in-process cable, and `qkt terminal run` spawned on an enrolled image file,
// reached over TCP (127.0.0.1) or over a socat pty pair. Each ends exactly what it started, by pid.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { createTerminal, DEFAULT_LIMITS } from '../../firmware/terminal.js';
import { createInProcessPair } from '../transports/inproc.js';
import { connectTcp, parseTcpAddress } from '../transports/tcp.js';
import { openSerial } from '../transports/serial.js';
import { createPtyPair } from '../transports/pty-pair.js';
import type { PtyPair } from '../transports/pty-pair.js';
import { qktBin } from '../bench/start.js';
import type { CommandGroup } from '../../firmware/link/dispatch.js';
import type { FuzzTarget } from './driver.js';

export const FUZZ_TERMINAL_ID = 'FUZZ-1';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * An enrolled module (empty pool) in this process. Its clock stands still: the one flash write
 * routine refusals cause, one coalesced `refused` event at most every 10 minutes (docs/protocol.md
 * 3.6.3), then never falls inside a run, so "flash unchanged" holds to the byte.
 */
export function inProcessTarget(o: { maxBody?: number; watchdogMs?: number; extraGroup?: (flash: NorFlash) => CommandGroup } = {}): FuzzTarget {
  const flash = NorFlash.memory();
  enrollFlash(flash, { terminalId: FUZZ_TERMINAL_ID, deviceKey: new Uint8Array(randomBytes(32)) });
  const terminal = createTerminal({ flash, clock: () => 1_800_000_000_000, ...(o.maxBody ? { limits: { maxBody: o.maxBody } } : {}), ...(o.watchdogMs !== undefined ? { watchdogMs: o.watchdogMs } : {}) });
  // A group the module does not have (the fuzzer's own tests plant faults there to see them caught).
  if (o.extraGroup) terminal.dispatcher.register(o.extraGroup(flash));
  const internal: string[] = [];
  const previous = terminal.dispatcher.onInternalError;
  terminal.dispatcher.onInternalError = (e, c) => {
    internal.push(`group ${c.group} command ${c.command} seq ${c.seq}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    previous?.(e, c);
  };
  let crash: string | undefined;
  // An error escaping the module (out of a transport callback or a promise nobody awaits) would end
  // a real firmware: here it is caught, named and reported as a crash.
  const onError = (e: unknown) => {
    crash ??= `error escaped the module: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
  };
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  const [host, device] = createInProcessPair({ names: ['fuzzer', 'module'] });
  terminal.attach(device);
  return {
    name: 'in-process',
    transport: host,
    terminalId: FUZZ_TERMINAL_ID,
    maxBody: o.maxBody ?? DEFAULT_LIMITS.maxBody,
    flashDigest: async () => sha256(flash.peek(0, flash.geometry.size)),
    crashed: () => crash,
    crashedWithin: async () => crash,
    internalErrors: () => internal.splice(0),
    close: async () => {
      await host.close().catch(() => undefined);
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    },
  };
}

interface Spawned {
  child: ChildProcess;
  ready: Record<string, unknown>;
  stderr: () => string;
  exited: () => string | undefined;
  exitedWithin: (ms: number) => Promise<string | undefined>;
  stop: () => Promise<void>;
}

/** `qkt terminal run --flash IMG ... --json`, resolved on its ready line. */
async function spawnTerminal(image: string, where: string[]): Promise<Spawned> {
  const child = spawn(process.execPath, [qktBin(), 'terminal', 'run', '--flash', image, ...where, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    err = (err + s).slice(-4000);
  });
  let exit: string | undefined;
  const gone = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = `qkt terminal run exited (${code ?? signal}): ${err.trim().split('\n').slice(-3).join(' | ')}`;
      resolve();
    }),
  );
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>));
    void gone.then(() => reject(new Error(exit)));
  });
  return {
    child,
    ready,
    stderr: () => err,
    exited: () => exit,
    exitedWithin: async (ms) => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([gone, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
      return exit;
    },
    stop: async () => {
      if (exit === undefined && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      await gone;
    },
  };
}

/** A scratch folder with an enrolled image (0600, empty pool); the caller removes the folder. */
function enrolledImage(): { dir: string; image: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-fuzz-'));
  const image = join(dir, 'module.img');
  const flash = NorFlash.open(image);
  try {
    enrollFlash(flash, { terminalId: FUZZ_TERMINAL_ID, deviceKey: new Uint8Array(randomBytes(32)) });
  } finally {
    flash.close();
  }
  return { dir, image };
}

/**
 * `qkt terminal run` on an enrolled image, over TCP (`--listen tcp:127.0.0.1:0`) or a socat pty
 * pair (`--port` one end, the fuzzer on the other). Its flash is the image file, hashed whole.
 * The module's real clock runs: keep a live run under 10 minutes (its `refused` event, above).
 */
export async function liveTarget(kind: 'tcp' | 'pty', o: { args?: string[] } = {}): Promise<FuzzTarget> {
  const { dir, image } = enrolledImage();
  let pair: PtyPair | undefined;
  let term: Spawned | undefined;
  const cleanup = async () => {
    await term?.stop();
    await pair?.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    let transport;
    if (kind === 'tcp') {
      term = await spawnTerminal(image, ['--listen', 'tcp:127.0.0.1:0', ...(o.args ?? [])]);
      const a = parseTcpAddress(String(term.ready['port']));
      transport = await connectTcp(a.host, a.port);
    } else {
      pair = await createPtyPair();
      term = await spawnTerminal(image, ['--port', pair.b, ...(o.args ?? [])]);
      transport = await openSerial(pair.a);
    }
    const t = term;
    return {
      name: kind,
      transport,
      terminalId: FUZZ_TERMINAL_ID,
      maxBody: DEFAULT_LIMITS.maxBody,
      flashDigest: async () => sha256(readFileSync(image)),
      crashed: () => t.exited(),
      crashedWithin: (ms) => t.exitedWithin(ms),
      internalErrors: () => [],
      close: async () => {
        await transport.close().catch(() => undefined);
        await cleanup();
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
