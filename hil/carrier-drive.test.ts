// The carrier on a real loop-mounted ext4 drive, loaded by a child process that is SIGKILLed at
// 24 points, the drive pulled after each (alternately a clean re-plug and a power-loss yank):
// only whole, byte-identical batches may be on it, every acknowledged one must be, and a re-run
// of the load completes it with each batch exactly once.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sealBatch } from '../firmware/crypto/batch.js';
import { Carrier, BATCH_DIR } from '../host-tools/carrier/carrier.js';
import type { AddOutcome } from '../host-tools/carrier/carrier.js';
import { createLoopDrive, loopDriveSkipReason } from './loop-drive.js';
import { assertFreshBuild } from './build-check.js';

const DIST = fileURLToPath(new URL('../dist/host-tools/carrier/', import.meta.url));
const WRITER = fileURLToPath(new URL('./fixtures-js/carrier-writer.mjs', import.meta.url));

// The child runs the compiled carrier (no TS loader: it must start in ~0.1 s, 50 times), so a
// missing or stale build fails here, never skips.
assertFreshBuild();
const skip = loopDriveSkipReason();

/** mulberry32: a seeded PRNG so a failing kill schedule can be replayed (QKT_SEED=...). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

interface KillPoint {
  /** SIGKILL as soon as a stdout line starting with this arrives. */
  afterLine?: string;
  /** SIGKILL this many ms after "ready". */
  afterMs?: number;
}

interface WriterRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Batches the child reported durable ("wrote k") before it died. */
  acked: number;
  /** ms from "ready" to "done" (a full run only). */
  loadMs?: number;
  stderr: string;
}

/**
 * One loader child. It boots (node, the compiled carrier, the input files) as soon as it is made,
 * then waits for its carrier folder on stdin: run() sends it and arms the kill.
 */
class Writer {
  private readonly child: ChildProcess;
  private kill: KillPoint = {};
  private out = '';
  private stderr = '';
  private acked = 0;
  private readyAt = 0;
  private loadMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly closed: Promise<WriterRun>;

  constructor(inputDir: string) {
    // Without tap's loaders and coverage hooks: a plain node, as fast to start as possible.
    const env = { ...process.env };
    delete env['NODE_OPTIONS'];
    this.child = spawn(process.execPath, [WRITER, pathToFileURL(join(DIST, 'carrier.js')).href, inputDir], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => this.onData(d));
    this.closed = new Promise((resolve, reject) => {
      this.child.on('error', reject);
      this.child.on('close', (code, signal) => {
        if (this.timer) clearTimeout(this.timer);
        const { acked, stderr, loadMs } = this;
        resolve({ code, signal, acked, stderr, ...(loadMs === undefined ? {} : { loadMs }) });
      });
    });
  }

  private killNow = (): void => {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  };

  private onData(d: string): void {
    this.out += d;
    let nl: number;
    while ((nl = this.out.indexOf('\n')) >= 0) {
      const line = this.out.slice(0, nl);
      this.out = this.out.slice(nl + 1);
      if (line === 'ready') {
        this.readyAt = performance.now();
        if (this.kill.afterMs !== undefined) this.timer = setTimeout(this.killNow, this.kill.afterMs);
      }
      const m = /^wrote (\d+) /.exec(line);
      if (m) this.acked = Number(m[1]) + 1;
      if (line === 'done') this.loadMs = performance.now() - this.readyAt;
      if (this.kill.afterLine !== undefined && line.startsWith(this.kill.afterLine)) this.killNow();
    }
  }

  /** Load onto `carrierDir`, SIGKILLed at `kill` (or never); resolves when the child is gone. */
  run(carrierDir: string, kill: KillPoint = {}): Promise<WriterRun> {
    this.kill = kill;
    this.child.stdin!.end(`${carrierDir}\n`);
    const guard = setTimeout(this.killNow, 20_000);
    return this.closed.finally(() => clearTimeout(guard));
  }

  /** Kill a writer that was never run (or still runs): for teardown. */
  dispose(): Promise<WriterRun> {
    this.killNow();
    return this.closed;
  }
}

function runWriter(carrierDir: string, inputDir: string, kill: KillPoint = {}): Promise<WriterRun> {
  return new Writer(inputDir).run(carrierDir, kill);
}

interface Input {
  id: string;
  sealed: Uint8Array;
}

/** N sealed batches of mixed sizes for three terminals, as input files for the child. */
function makeInputs(dir: string): Input[] {
  const sizes = [2 ** 20, 2 ** 12, 2 ** 19, 512, 2 ** 18, 2 ** 16, 2 ** 20, 2 ** 17];
  return sizes.map((bits, k) => {
    const terminalId = `T-${k % 3}`;
    const batchId = new Uint8Array(randomBytes(16));
    const sealed = sealBatch({
      deviceKey: new Uint8Array(randomBytes(32)),
      header: { batchId, terminalId, seq: 100 + k, purpose: 'enc', bits, chunkSize: 4096, createdAt: Date.now() },
      keys: new Uint8Array(randomBytes(bits / 8)),
    });
    writeFileSync(join(dir, `${String(k).padStart(2, '0')}.qkb`), sealed);
    return { id: `${terminalId}-${Buffer.from(batchId).toString('hex')}`, sealed };
  });
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/**
 * After the pull: open the carrier (which finishes interrupted work), then require that it offers
 * only whole batches, byte-identical to what was sealed, and every batch the child acknowledged.
 * Returns a list of problems (empty when all is well) so 24 points do not drown the TAP output.
 */
function problemsAfterPull(dir: string, inputs: Input[], acked: number): string[] {
  const problems: string[] = [];
  const want = new Map(inputs.map((i) => [i.id, i.sealed]));
  const c = Carrier.open(dir);
  const s = c.scan();
  if (s.damaged.length) problems.push(`damaged files: ${s.damaged.map((d) => `${d.file}: ${d.reason}`).join('; ')}`);
  for (const p of s.pending) {
    const sealed = want.get(p.id);
    if (!sealed) problems.push(`unexpected batch ${p.id}`);
    else if (!sameBytes(c.readBatch(p), sealed)) problems.push(`${p.id} differs from what was sealed`);
  }
  const present = new Set(s.pending.map((p) => p.id));
  for (const i of inputs.slice(0, acked)) if (!present.has(i.id)) problems.push(`acknowledged batch ${i.id} lost`);
  const names = readdirSync(join(dir, BATCH_DIR)).sort();
  const expected = s.pending.map((p) => `${p.id}.qkb`).sort();
  if (names.join() !== expected.join()) problems.push(`stray files in batches/: ${names.filter((n) => !expected.includes(n)).join(', ')}`);
  return problems;
}

/** After a completed re-run: all N, each exactly once, each with one `loaded` journal line. */
function problemsWhenComplete(dir: string, inputs: Input[]): string[] {
  const problems = problemsAfterPull(dir, inputs, inputs.length);
  const c = Carrier.open(dir);
  const ids = c.pending().map((p) => p.id).sort();
  if (ids.join() !== inputs.map((i) => i.id).sort().join()) problems.push(`holds ${ids.length} of ${inputs.length} batches`);
  const loaded = new Map<string, number>();
  for (const r of c.history()) if (r.event === 'loaded') loaded.set(r.id, (loaded.get(r.id) ?? 0) + 1);
  for (const i of inputs) if (loaded.get(i.id) !== 1) problems.push(`${i.id} has ${loaded.get(i.id) ?? 0} loaded lines`);
  return problems;
}

/** Re-run a load: open (finishing interrupted work), add every batch, report each outcome. */
function reload(dir: string, inputs: Input[]): AddOutcome[] {
  const c = Carrier.open(dir);
  return inputs.map((i) => c.addBatch(i.sealed).outcome);
}

function tmpFilesIn(dir: string): number {
  return readdirSync(join(dir, BATCH_DIR)).filter((n) => n.startsWith('.')).length;
}

/** Input files for the child, outside the repo: tap runs elsewhere may clean .tap/fixtures. */
function inputFolder(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-carrier-inputs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function setupDrive(t: Test) {
  // commit=600: ext4 commits only when the carrier fsyncs, so a yank loses all that was not synced.
  const drive = createLoopDrive({ sizeMiB: 16, mountOptions: ['commit=600'] });
  t.teardown(() => drive.destroy());
  return drive;
}

t.test('loads killed at 24 points, drive pulled after each: whole batches only, re-run completes', { skip }, async (t) => {
  const seed = Number(process.env['QKT_SEED'] ?? Date.now() % 2 ** 31);
  t.comment(`kill schedule seed ${seed} (QKT_SEED=${seed} replays it)`);
  const rand = prng(seed);
  const drive = setupDrive(t);
  const inputDir = inputFolder(t);
  const inputs = makeInputs(inputDir);

  // Calibrate: how long does a whole load take on this machine? Timed kills spread over it.
  const calib = join(drive.mountpoint, 'calib');
  Carrier.init(calib, { carrierId: 'calib', kmdId: 'kmd-1' });
  const full = await runWriter(calib, inputDir);
  t.equal(full.code, 0, `uninterrupted load ran (${full.stderr.trim()})`);
  t.same(problemsWhenComplete(calib, inputs), [], 'uninterrupted load complete');
  let loadMs = full.loadMs ?? 50;
  t.comment(`a whole load of ${inputs.length} batches takes ${loadMs.toFixed(1)} ms`);
  rmSync(calib, { recursive: true });

  // First a kill right at the start and one after each acknowledged batch, then kills at random
  // times inside the load, until 24 loads were really killed. A kill that arrives after the child
  // finished (a busy machine) does not count; its timing re-calibrates the next ones.
  const fixed: KillPoint[] = [{ afterLine: 'ready' }];
  for (let k = 0; k < inputs.length - 1; k++) fixed.push({ afterLine: `wrote ${k} ` });
  const KILLS = 24;
  let killed = 0;
  let tried = 0;
  let midWrite = 0;
  let unacked = 0;
  const modes = { replug: 0, yank: 0 };
  // The next writer boots while this one's drive is pulled and checked.
  let next = new Writer(inputDir);
  t.teardown(() => next.dispose());
  for (let i = 0; killed < KILLS && i < 3 * KILLS; i++) {
    tried++;
    const point = fixed[i] ?? { afterMs: rand() * loadMs * 0.9 };
    const mode = i % 2 === 0 ? 'yank' : 'replug';
    const label = `point ${i} (${point.afterLine !== undefined ? `after "${point.afterLine.trim()}"` : `${point.afterMs!.toFixed(1)} ms`}, ${mode})`;
    const dir = join(drive.mountpoint, `c${i}`);
    Carrier.init(dir, { carrierId: `C${i}`, kmdId: 'kmd-1' });
    const run = await next.run(dir, point);
    next = new Writer(inputDir);
    if (run.signal === 'SIGKILL') killed++;
    else t.equal(run.code, 0, `${label}: finished before the kill (${run.stderr.trim()})`);
    if (run.loadMs !== undefined) loadMs = run.loadMs;

    if (mode === 'yank') drive.yank();
    else drive.unmount();
    drive.mount();
    modes[mode]++;

    if (tmpFilesIn(dir) > 0) midWrite++;
    const present = readdirSync(join(dir, BATCH_DIR)).filter((n) => n.endsWith('.qkb')).length;
    if (present > run.acked) unacked++;
    t.same(problemsAfterPull(dir, inputs, run.acked), [], `${label}: ${run.acked} acknowledged, ${present} on the drive, all whole`);

    // The re-run, in this process (same code as the child's; saves a node start per point).
    const outcomes = reload(dir, inputs);
    t.same(outcomes.slice(0, run.acked), Array(run.acked).fill('present'), `${label}: re-run finds the acknowledged batches whole`);
    t.notOk(outcomes.includes('replaced-damaged'), `${label}: no torn batch file was ever under its final name`);
    t.same(problemsWhenComplete(dir, inputs), [], `${label}: re-run completed the load, each batch once`);
    rmSync(dir, { recursive: true });
  }
  t.comment(`${killed} of ${tried} loads killed; ${midWrite} left an unfinished temporary; ${unacked} had a batch durable but unacknowledged; ${modes.yank} yanks, ${modes.replug} clean pulls`);
  t.ok(killed >= KILLS, `${KILLS} loads were killed mid-way (${killed} of ${tried})`);
});

t.test('one carrier, its load killed and the drive yanked again and again until a run gets through', { skip }, async (t) => {
  const seed = Number(process.env['QKT_SEED'] ?? Date.now() % 2 ** 31) ^ 0x5bd1e995;
  const rand = prng(seed);
  const drive = setupDrive(t);
  const inputDir = inputFolder(t);
  const inputs = makeInputs(inputDir);
  // The drive's root, as in the field: a fresh ext4 has lost+found, which init accepts.
  const dir = drive.mountpoint;
  Carrier.init(dir, { carrierId: 'C-1', kmdId: 'kmd-1' });
  let acked = 0;
  let kills = 0;
  let next = new Writer(inputDir);
  t.teardown(() => next.dispose());
  for (let round = 0; round < 8; round++) {
    const run = await next.run(dir, { afterMs: rand() * 8 });
    next = new Writer(inputDir);
    if (run.signal !== 'SIGKILL') break;
    kills++;
    // Acknowledged in any earlier round stays acknowledged: durability does not expire.
    acked = Math.max(acked, run.acked);
    drive.yank();
    drive.mount();
    t.same(problemsAfterPull(dir, inputs, acked), [], `round ${round}: whole batches only, ${acked} acknowledged kept`);
  }
  const last = await next.run(dir);
  t.equal(last.code, 0);
  drive.yank();
  drive.mount();
  t.same(problemsWhenComplete(dir, inputs), [], `complete after ${kills} killed runs and yanks`);
  t.comment(`${kills} kills on one carrier`);
});
