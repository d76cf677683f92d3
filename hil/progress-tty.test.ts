// The progress line as a field engineer sees it: the real `qkt inject` (paced at 115200 baud so
// it lasts about three seconds) run inside a tmux terminal of 80 and of 40 columns, against
// `qkt terminal run` on a socat pty pair. Checks the bytes it wrote (every redraw within the
// width less one, \r and erase-line, no newline until the end, no rate before it is measured)
// and the screen tmux shows (one progress line, not wrapped junk), and prints the screens.
// Every tmux server runs on a private socket (-L) and is killed when the test ends.
import t from 'tap';
import type { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { QKT_BIN } from './cli.js';
import { background, ptyPair, ptySkipReason, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(120_000);

/** A visible reason to skip without tmux; in CI (CI=true) a missing tmux fails instead. */
function tmuxSkipReason(): string | false {
  if (process.env['CI'] === 'true') return false;
  const r = spawnSync('tmux', ['-V'], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0 ? false : 'tmux not installed (apt-get install -y tmux); progress capture skipped';
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function tmux(socket: string, args: string[]): string {
  const r = spawnSync('tmux', ['-L', socket, '-f', '/dev/null', ...args], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`tmux ${args[0]} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** `waitFor` resolves when the session signals `channel` (tmux wait-for), an event not a sleep. */
function waitFor(socket: string, channel: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('tmux', ['-L', socket, 'wait-for', channel], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tmux wait-for ${channel} exited ${code}`))));
  });
}

interface Capture {
  /** Every screen seen while it ran, until its result line (capture-pane -J: wrapped lines joined), distinct. */
  screens: string[][];
  /** The screen after it exited. */
  last: string[];
  /** The bytes qkt wrote to the terminal. */
  raw: string;
}

/** Run `qkt ...args` in a detached tmux session `columns` wide; kill-server when the test ends. */
async function runInTmux(t: Test, columns: number, args: string[], dir: string): Promise<Capture> {
  const socket = `qkt-progress-${process.pid}-${columns}`;
  const rawFile = join(dir, `raw-${columns}`);
  const cmd = [
    `tmux -L ${socket} wait-for go`,
    `${q(process.execPath)} ${q(QKT_BIN)} ${args.map(q).join(' ')}`,
    'echo "exit $?"',
    `tmux -L ${socket} wait-for -S finished`,
    'exec sleep 600',
  ].join('; ');
  tmux(socket, ['new-session', '-d', '-x', String(columns), '-y', '12', cmd]);
  const socketPath = tmux(socket, ['display-message', '-p', '#{socket_path}']).trim();
  t.teardown(() => {
    spawnSync('tmux', ['-L', socket, 'kill-server'], { stdio: 'ignore', timeout: 10_000 });
    if (socketPath.includes(socket)) rmSync(socketPath, { force: true }); // a killed server may leave it
  });
  tmux(socket, ['pipe-pane', '-o', `cat > ${q(rawFile)}`]);
  const finished = waitFor(socket, 'finished');
  let over = false;
  void finished.then(() => (over = true), () => (over = true));
  tmux(socket, ['wait-for', '-S', 'go']);
  const screen = () => tmux(socket, ['capture-pane', '-p', '-J']).split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
  const screens: string[][] = [];
  // Look at the screen while it runs (sampling what a person would see; the end is the event).
  while (!over) {
    const s = screen();
    // Until the result line: what the progress line alone looks like.
    if (s.length && !s.some((l) => /^T1: /.test(l)) && JSON.stringify(s) !== JSON.stringify(screens.at(-1))) screens.push(s);
    await Promise.race([finished, new Promise((r) => setTimeout(r, 50))]);
  }
  await finished;
  const last = screen();
  tmux(socket, ['pipe-pane']); // close the pipe so the file is complete
  return { screens, last, raw: readFileSync(rawFile, 'utf8') };
}

function boxed(lines: string[], columns: number): string {
  const rule = `+${'-'.repeat(columns)}+`;
  return [rule, ...lines.map((l) => `|${l.padEnd(columns)}|`), rule].join('\n');
}

t.test('qkt inject in an 80- and a 40-column terminal: one line, within the width, redrawn in place', { skip: ptySkipReason() || tmuxSkipReason() }, async (t) => {
  const dir = t.testdir({ c80: {}, c40: {} });
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 't1.img')]);
  for (const c of ['c80', 'c40']) await qktJson(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, c), '--terminal', 'T1', '--bits', '256kbit']);
  const cable = await ptyPair(t);
  await background(t, ['terminal', 'run', '--flash', join(dir, 't1.img'), '--port', cable.b]);
  mkdirSync(join(dir, 'raw'), { recursive: true });

  for (const columns of [80, 40]) {
    await t.test(`${columns} columns`, async (t) => {
      const cap = await runInTmux(t, columns, ['inject', '--carrier', join(dir, `c${columns}`), '--port', cable.a, '--baud', '115200'], join(dir, 'raw'));
      t.ok(cap.last.includes('exit 0'), `qkt inject exits 0: ${cap.last.join(' / ')}`);

      // The bytes: redraws are "\r line ESC[K", all before the first newline, each within the width less one.
      const nl = cap.raw.indexOf('\n');
      const drawing = cap.raw.slice(0, nl);
      const redraws = drawing.split('\r').filter((s) => s !== '').map((s) => s.replace(/\x1b\[K$/, ''));
      t.ok(redraws.length >= 3, `redrawn in place (${redraws.length} redraws before the first newline)`);
      t.notOk(cap.raw.slice(nl + 1).includes('inject T1 ['), 'no progress line after the first newline');
      for (const r of redraws) {
        t.match(r, /^inject T1 \[[#.]+\] +\d+%/, 'a progress line');
        t.ok(r.length <= columns - 1, `${r.length} <= ${columns - 1} characters: ${r}`);
        t.notMatch(r, /\x1b/, 'no other control sequence in the line');
      }
      t.notMatch(redraws[0]!, /bit\/s|ETA/, 'the first draw has no rate or ETA (nothing measured yet)');
      t.match(redraws.at(-1), /100%/, 'the last draw is 100 %');
      if (columns === 80) t.ok(redraws.some((r) => /kbit\/s  ETA \d+s$/.test(r)), 'at 80 columns the rate and ETA show once measured');
      else t.notOk(redraws.some((r) => /ETA/.test(r)), 'at 40 columns the ETA is dropped');

      // The screen: one progress line (no wrapped junk), within the width, then the result line.
      t.ok(cap.screens.length >= 2, `screens seen while it ran: ${cap.screens.length}`);
      for (const s of cap.screens) {
        t.equal(s.length, 1, `one line on screen while it runs: ${JSON.stringify(s)}`);
        t.ok(s[0]!.length <= columns - 1, `within ${columns - 1}: ${s[0]}`);
      }
      const bars = cap.last.filter((l) => l.startsWith('inject T1 ['));
      t.equal(bars.length, 1, 'one progress line left on screen');
      t.match(cap.last[1], /^T1: 256 kbit injected \(batch [0-9a-f]{8}, seq \d\) in \d+\.\d\d s; receipt stored on the carrier$/);

      const mid = cap.screens.find((s) => /ETA/.test(s[0]!)) ?? cap.screens[Math.floor(cap.screens.length / 2)]!;
      t.comment(`qkt inject in a ${columns}-column terminal, while it runs:\n${boxed(mid, columns)}`);
      const shown = tmux(`qkt-progress-${process.pid}-${columns}`, ['capture-pane', '-p']).split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
      t.comment(`and when it has finished (tmux wraps the result line):\n${boxed(shown, columns)}`);
    });
  }
});

t.test('qkt inject with stderr on a pipe (a CI log): plain lines every 5 s and 10 %, then the last one', { skip: ptySkipReason() }, async (t) => {
  const dir = t.testdir({ c: {} });
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 't1.img')]);
  // 640 kbit at 115200 baud: about 7 s, long enough for one periodic line.
  await qktJson(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'c'), '--terminal', 'T1', '--bits', '640kbit']);
  const cable = await ptyPair(t);
  await background(t, ['terminal', 'run', '--flash', join(dir, 't1.img'), '--port', cable.b]);
  const r = await runQkt(['inject', '--carrier', join(dir, 'c'), '--port', cable.a, '--baud', '115200']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^T1: 640 kbit injected .* receipt stored on the carrier\n$/);
  t.notMatch(r.stderr, /\r|\x1b/, 'no bar, no control characters');
  const lines = r.stderr.trimEnd().split('\n');
  t.ok(lines.length >= 2, `a periodic line and the last one: ${JSON.stringify(lines)}`);
  for (const l of lines.slice(0, -1)) t.match(l, /^inject T1: \d+% \([\d.]+ kbit of 640 kbit\), [\d.]+ kbit\/s, ETA \d+s$/);
  t.match(lines.at(-1), /^inject T1: 100% \(640 kbit of 640 kbit\), [\d.]+ kbit\/s, in \d+s$/);
  t.comment(`stderr on a pipe:\n${r.stderr.trimEnd()}`);
});
