// HIL: `qkt inject` as a field engineer meets interruptions, on real CLI processes: the first
// SIGINT or SIGTERM stops it at a chunk boundary (exit 130/143, saying what the terminal holds
// and the command that resumes) and that command then delivers the batch exactly once; a
// module that restarts mid-transfer (power cut, started again on the same image and pty) is
// resumed by the SAME inject run; a link that never comes back gives up within QKT_RESUME_WAIT
// with exit 3 and the re-run message, never 4; a silent module is declared dead in seconds.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { connectTcp, parseTcpAddress } from '../host-tools/transports/tcp.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Group, SystemCmd } from '../firmware/link/groups.js';
import { QKT_BIN } from './cli.js';
import { assertFreshBuild } from './build-check.js';
import { background, ptyPair, ptySkipReason, qktJson } from './e2e-rig.js';

const Exit = { OK: 0, NO_DEVICE: 3, REFUSED: 4, INTERRUPTED: 130, TERMINATED: 143 } as const;

t.setTimeout(240_000);

interface Run {
  pid: number;
  /** stderr lines so far. */
  lines: string[];
  /** Resolves when a stderr line matches. */
  line(re: RegExp): Promise<string>;
  done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

/** `qkt ...args` as a child we can signal (by its pid), its stderr watched line by line. */
function run(t: Test, args: string[], env: NodeJS.ProcessEnv = {}): Run {
  assertFreshBuild();
  const child = spawn(process.execPath, [QKT_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    const all = stderr.split('\n');
    for (const l of all.slice(lines.length, -1)) {
      lines.push(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.re.test(l)) waiters.splice(i, 1)[0]!.resolve(l);
      }
    }
  });
  const done = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return {
    pid: child.pid!,
    lines,
    line: (re) =>
      new Promise((resolve, reject) => {
        const seen = lines.find((l) => re.test(l));
        if (seen !== undefined) return resolve(seen);
        waiters.push({ re, resolve });
        void done.then(() => reject(new Error(`qkt ${args.slice(0, 2).join(' ')} ended without a line matching ${re}; stderr: ${stderr}`)));
      }),
    done,
  };
}

/** Resolves once process `pid` has `path` open (the CLI opens the port after its signal handlers). */
async function untilOpens(pid: number, path: string): Promise<void> {
  for (;;) {
    const fds = readdirSync(`/proc/${pid}/fd`);
    if (fds.some((fd) => { try { return readlinkSync(`/proc/${pid}/fd/${fd}`) === path; } catch { return false; } })) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves once no signal is pending for process `pid` (ShdPnd and SigPnd in /proc/PID/status). */
async function untilDelivered(pid: number): Promise<void> {
  for (;;) {
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    if ([...st.matchAll(/^(ShdPnd|SigPnd):\s*([0-9a-f]+)$/gm)].every((m) => BigInt(`0x${m[2]}`) === 0n)) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface PoolDoc {
  pool: { storedKeyBits: number; staging: { durableBits?: number } | null; batches: Array<{ batchId: string; bits: number }> };
}

/** Poll the module (a second TCP connection: docs/protocol.md 4.9) until it holds staged bits. */
async function untilStaged(address: string, atLeastBits: number): Promise<number> {
  const { host, port } = parseTcpAddress(address);
  const client = new LinkClient(await connectTcp(host, port));
  try {
    await client.negotiate();
    for (;;) {
      const st = (await client.request(Group.SYSTEM, SystemCmd.STATUS, {})) as unknown as PoolDoc;
      const held = st.pool.staging?.durableBits ?? 0;
      if (held >= atLeastBits) return held;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await client.close();
  }
}

t.test('qkt inject stops, resumes and survives restarts', { skip: ptySkipReason() }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const carrier = join(dir, 'carrier');
  const flash = (id: string) => join(dir, `${id}.img`);
  const ids = ['T1', 'T2', 'T3', 'T4', 'T5'];
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await Promise.all(ids.map((id) => qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', flash(id)])));
  const loaded = await qktJson<{ loaded: Array<{ terminalId: string; batchId: string; bits: number }> }>(t, [
    'carrier', 'load', '--home', home, '--carrier', carrier, ...ids.flatMap((id) => ['--terminal', id]), '--bits', '1Mbit', '--init',
  ]);
  const batchOf = (id: string) => loaded.loaded.find((b) => b.terminalId === id)!;
  const BITS = 1 << 20;

  /** After it all: the pool holds the batch exactly once, live, nothing staged. */
  const holdsOnce = async (t: Test, port: string, id: string) => {
    const st = await qktJson<PoolDoc>(t, ['status', '--port', port]);
    t.equal(st.pool.batches.length, 1, `${id}: the pool holds one batch`);
    t.match(st.pool.batches[0], { batchId: batchOf(id).batchId, bits: BITS }, `${id}: the carrier's batch, whole`);
    t.equal(st.pool.storedKeyBits, BITS, `${id}: its bits once`);
    t.equal(st.pool.staging, null, `${id}: nothing left staged`);
  };

  for (const [sig, id, code] of [
    ['SIGINT', 'T1', Exit.INTERRUPTED],
    ['SIGTERM', 'T2', Exit.TERMINATED],
  ] as const) {
    t.test(`${sig} mid-inject, then the re-run resumes`, async (t) => {
      const term = await background(t, ['terminal', 'run', '--flash', flash(id), '--listen', 'tcp:127.0.0.1:0']);
      const port = term.ready['port'] as string;
      // Paced at 115200 baud: 1 Mbit takes about 12 s, so the signal lands mid-transfer.
      const inject = run(t, ['inject', '--carrier', carrier, '--port', port, '--baud', '115200']);
      await untilStaged(port, 1);
      process.kill(inject.pid, sig);
      const r = await inject.done;
      t.equal(r.code, code, `${sig}: exit ${code}`);
      t.equal(r.stdout, '', 'nothing on stdout');
      const last = r.stderr.trimEnd().split('\n').at(-1)!;
      t.match(last, new RegExp(`^qkt: stopped: terminal ${id} holds at least [\\d.]+ of 1 Mbit of batch ${batchOf(id).batchId.slice(0, 8)}; resume with: qkt inject --carrier ${carrier} --port ${port} --baud 115200$`), 'says what the terminal holds and the command that resumes');
      const said = Number(/holds at least ([\d.]+) of/.exec(last)![1]) * 2 ** 20;
      t.ok(said < BITS, `part of the batch (${said} bits)`);

      // The command it named, without the pacing: resumes, and delivers once.
      const again = await qktJson<{ resumedFromBits: number; alreadyAccepted: boolean; bits: number }>(t, ['inject', '--carrier', carrier, '--port', port]);
      t.ok(again.resumedFromBits > 0, `the re-run resumed from ${again.resumedFromBits} bits`);
      // "at least": the message rounds down to 0.1 Mbit what the module acknowledged.
      t.ok(again.resumedFromBits >= said, 'the module held at least what the message said');
      t.equal(again.alreadyAccepted, false);
      await holdsOnce(t, port, id);
    });
  }

  t.test('the module restarts mid-inject: the same run resumes by itself', async (t) => {
    const id = 'T3';
    // Count, in process on a copy of the image, the flash operations of boot and of the injection.
    const sealed = Carrier.open(carrier).readBatch({ id: Carrier.open(carrier).batchFor(id)!.id });
    let bootOps: number;
    let injectOps: number;
    {
      const f = NorFlash.fromImage(NorFlash.open(flash(id)).snapshot());
      const [host, device] = createInProcessPair();
      createTerminal({ flash: f, transport: device });
      bootOps = f.faults.mutations;
      const client = new LinkClient(host);
      await injectBatch(client, await client.negotiate(), sealed);
      injectOps = f.faults.mutations - bootOps;
      await client.close();
    }
    const cable = await ptyPair(t);
    // Dies (exit 137, as after a power loss) half way through the injection.
    const cutAt = bootOps + Math.round(injectOps / 2);
    const first = await background(t, ['terminal', 'run', '--flash', flash(id), '--port', cable.b, '--power-cut-after', String(cutAt)]);
    const inject = run(t, ['inject', '--carrier', carrier, '--port', cable.a]);
    t.equal(await first.exited, 137, 'the module died mid-inject');
    // Power back: the same image on the same cable, while the same inject run waits.
    await background(t, ['terminal', 'run', '--flash', flash(id), '--port', cable.b]);
    const r = await inject.done;
    t.equal(r.code, Exit.OK, `the same run finished: ${r.stderr.trim()}`);
    t.match(r.stderr, /qkt: (link lost|the module lost the transfer)[^\n]*terminal T3 holds at least [\d.]+ of 1 Mbit/, 'it said it lost the link and how much the terminal held');
    t.match(r.stdout, /^T3: 1 Mbit injected .*lost and resumed by itself \d+ time\(s\); receipt stored on the carrier\n$/, 'and that it resumed');
    await holdsOnce(t, cable.a, id);
  });

  t.test('the link never comes back: gives up within the bound, exit 3, a re-run resumes', async (t) => {
    const id = 'T4';
    const term = await background(t, ['terminal', 'run', '--flash', flash(id), '--listen', 'tcp:127.0.0.1:0']);
    const port = term.ready['port'] as string;
    const inject = run(t, ['inject', '--carrier', carrier, '--port', port, '--baud', '460800'], { QKT_RESUME_WAIT: '2' });
    await untilStaged(port, 1);
    await term.stop(); // the module is gone for good (its TCP port closes: connections refused)
    const r = await inject.done;
    t.equal(r.code, Exit.NO_DEVICE, 'exit 3 (no device), not 4: the batch is fine');
    const last = r.stderr.trimEnd().split('\n').at(-1)!;
    t.match(last, /^qkt: link lost: the link closed and the port gave no terminal in 2 s \(\d+ tr(y|ies); last: .+\); terminal T4 holds at least [\d.]+ of 1 Mbit of batch [0-9a-f]{8}: a re-run resumes from there: qkt inject --carrier .+ --port tcp:127\.0\.0\.1:\d+ --baud 460800$/);
    t.match(r.stderr, /qkt: link lost: the link closed; terminal T4 holds .*reopening the port \(up to 2 s\)/, 'it tried to resume first');

    // Power back (on another TCP port: the address is the OS's pick): the re-run resumes.
    const back = await background(t, ['terminal', 'run', '--flash', flash(id), '--listen', 'tcp:127.0.0.1:0']);
    const again = await qktJson<{ resumedFromBits: number }>(t, ['inject', '--carrier', carrier, '--port', back.ready['port'] as string]);
    t.ok(again.resumedFromBits > 0, `the re-run resumed from ${again.resumedFromBits} bits`);
    await holdsOnce(t, back.ready['port'] as string, id);
  });

  t.test('a module that goes silent is declared dead in seconds', async (t) => {
    const id = 'T5';
    const term = await background(t, ['terminal', 'run', '--flash', flash(id), '--listen', 'tcp:127.0.0.1:0']);
    const port = term.ready['port'] as string;
    t.teardown(() => void process.kill(term.child.pid!, 'SIGCONT'));
    const inject = run(t, ['inject', '--carrier', carrier, '--port', port, '--baud', '460800'], { QKT_RESUME_WAIT: '0' });
    await untilStaged(port, 1);
    // Frozen, not gone: the TCP connection stays up and nothing answers (no FIN, no RST).
    process.kill(term.child.pid!, 'SIGSTOP');
    const frozenAt = performance.now();
    const note = await inject.line(/link lost/);
    const deadAfter = (performance.now() - frozenAt) / 1000;
    t.match(note, /^qkt: link lost: the link went silent; terminal T5 holds/);
    // The bound is the link's own timeouts (docs/cli.md "Resuming by itself"): one chunk's, 1.5 s
    // plus 2 line times of 8 KiB at 460800 baud (about 1.9 s), then at most a STATUS's 2 x 1.5 s.
    // Before: three attempts of each chunk, then three of the STATUS: about 10 s here, 62 s at 9600.
    t.ok(deadAfter < 8, `declared dead ${deadAfter.toFixed(1)} s after the module froze`);
    t.comment(`silent module declared dead after ${deadAfter.toFixed(2)} s`);
    const r = await inject.done;
    t.equal(r.code, Exit.NO_DEVICE, 'then gives up (QKT_RESUME_WAIT=0): exit 3');
    t.match(r.stderr.trimEnd().split('\n').at(-1), /a re-run resumes from there: qkt inject/);
    process.kill(term.child.pid!, 'SIGCONT');
  });

  t.test('a command that does not look at the signal is still bounded; a second signal is at once', async (t) => {
    const cable = await ptyPair(t); // nothing on the other end: PARAMS takes 3 x 1.5 s to fail
    const once = run(t, ['status', '--port', cable.a]);
    await untilOpens(once.pid, cable.a);
    process.kill(once.pid, 'SIGINT');
    const r = await once.done;
    t.equal(r.code, Exit.INTERRUPTED, 'exit 130');
    t.equal(r.stderr, 'qkt: stopped (SIGINT): qkt status ended before it finished\n');

    const twice = run(t, ['status', '--port', cable.a]);
    await untilOpens(twice.pid, cable.a);
    process.kill(twice.pid, 'SIGTERM');
    await untilDelivered(twice.pid); // two at once would merge into one pending signal
    process.kill(twice.pid, 'SIGTERM');
    const r2 = await twice.done;
    t.equal(r2.code, Exit.TERMINATED, 'exit 143');
    t.equal(r2.stderr, 'qkt: stopped at once (SIGTERM again): qkt status ended before it finished\n');
  });
});
