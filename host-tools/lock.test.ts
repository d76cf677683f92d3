// The lock file (host-tools/lock.ts): exclusive between processes, a dead holder's lock taken over
// (also when many race for it), a live one waited for a bounded time and then named ("in use by
// pid N"), released on every way out of a process. Other processes run the built module
// (dist/, as the CLI tests run the built CLI), each ended by pid.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { assertFreshBuild } from '../hil/build-check.js';
import { LockBusyError, lock, lockHolder, lockSync, lockWaitMs, procStartTime, setLockCommand, withLock, withLockSync } from './lock.js';

const BUILT = fileURLToPath(new URL('../dist/host-tools/lock.js', import.meta.url));
// The child imports the built module: a missing or stale build fails here, never skips.
assertFreshBuild();

/** A node process running `body` with `lock` (the built module) and `target` in scope. */
function child(t: Test, dir: string, body: string, target: string): { proc: ChildProcess; out: () => string; exited: Promise<number | string> } {
  const script = join(dir, `child-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(
    script,
    `import * as L from ${JSON.stringify(pathToFileURL(BUILT).href)};\nconst target = ${JSON.stringify(target)};\nL.setLockCommand('test child');\n${body}\n`,
  );
  const proc = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | string>((r) => proc.on('exit', (code, sig) => r(code ?? sig ?? -1)));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGKILL');
    await exited;
  });
  return { proc, out: () => out, exited };
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A pid that was alive a moment ago and is not any more. */
async function deadPid(): Promise<number> {
  const p = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => p.on('exit', r));
  return p.pid!;
}

const opts = (what = 'thing T') => ({ what, waitMs: 0 });

t.test('take, hold (re-entrant), release', (t) => {
  const dir = t.testdir({});
  const target = join(dir, 'thing');
  setLockCommand('qkt test');
  const l = lockSync(target, opts());
  const h = lockHolder(target)!;
  t.match(h, { pid: process.pid, host: hostname(), command: 'qkt test', since: /^\d{4}-\d\d-\d\dT/, nonce: /^[0-9a-f]{16}$/ });
  const inner = lockSync(target, opts());
  inner.release();
  inner.release(); // idempotent
  t.ok(existsSync(`${target}.lock`), 'a nested hold does not release the outer one');
  l.release();
  t.notOk(existsSync(`${target}.lock`), 'released: the file is gone');
  t.equal(withLockSync(target, { what: 'x', file: join(dir, 'other.lock') }, () => existsSync(join(dir, 'other.lock'))), true, 'lock file given');
  t.notOk(existsSync(join(dir, 'other.lock')));
  t.throws(() => withLockSync(target, opts(), () => {
    throw new Error('boom');
  }), /boom/);
  t.notOk(existsSync(`${target}.lock`), 'released when the change throws');
  t.end();
});

t.test('the wait bound: QKT_LOCK_WAIT seconds, default 10 s', (t) => {
  const old = process.env['QKT_LOCK_WAIT'];
  t.teardown(() => (old === undefined ? delete process.env['QKT_LOCK_WAIT'] : (process.env['QKT_LOCK_WAIT'] = old)));
  delete process.env['QKT_LOCK_WAIT'];
  t.equal(lockWaitMs(), 10_000);
  process.env['QKT_LOCK_WAIT'] = '0.5';
  t.equal(lockWaitMs(), 500);
  process.env['QKT_LOCK_WAIT'] = 'soon';
  t.equal(lockWaitMs(), 10_000, 'a bad value is ignored');
  t.end();
});

t.test('a dead holder (crashed, killed) is taken over; an unreadable lock once it is old; never another host\'s', async (t) => {
  const dir = t.testdir({});
  const target = join(dir, 'thing');
  const pid = await deadPid();
  writeFileSync(`${target}.lock`, JSON.stringify({ pid, host: hostname(), command: 'qkt kmd export', since: new Date().toISOString(), nonce: 'aaaaaaaaaaaaaaaa' }));
  const l = lockSync(target, opts());
  t.equal(lockHolder(target)?.pid, process.pid, 'taken over from a dead pid');
  l.release();

  writeFileSync(`${target}.lock`, '');
  t.throws(() => lockSync(target, opts('thing T')), { name: 'LockBusyError', message: /^thing T is in use \(lock file .*thing\.lock is being written\)$/ }, 'a fresh empty lock is being written');
  const old = new Date(Date.now() - 60_000);
  utimesSync(`${target}.lock`, old, old);
  lockSync(target, opts()).release();
  t.notOk(existsSync(`${target}.lock`), 'an old empty lock was stale');

  writeFileSync(`${target}.lock`, '');
  const ahead = new Date(Date.now() + 60_000);
  utimesSync(`${target}.lock`, ahead, ahead);
  lockSync(target, opts()).release();
  t.notOk(existsSync(`${target}.lock`), 'an empty lock from the future (a clock set back) was stale');

  writeFileSync(`${target}.lock`, JSON.stringify({ pid, host: 'elsewhere', command: 'qkt kmd export', since: '2030-01-01T00:00:00.000Z', nonce: 'bbbbbbbbbbbbbbbb' }));
  t.throws(() => lockSync(target, opts()), { message: `thing T is in use by pid ${pid} on host elsewhere (qkt kmd export, since 2030-01-01T00:00:00.000Z)` });
});

const BOOT_ID = existsSync('/proc/sys/kernel/random/boot_id') ? readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() : undefined;
// Linux CI always has /proc (boot id, start times): there a missing one fails, never skips.
const noProc = (BOOT_ID && procStartTime(process.pid) !== undefined) || (process.platform === 'linux' && process.env['CI'] === 'true') ? false : 'no /proc (not Linux)';

t.test('a reused pid: a live pid that is another process now (another boot, another start time) is stale', { skip: noProc }, (t) => {
  const dir = t.testdir({});
  const target = join(dir, 'thing');
  const other = process.ppid; // alive, and not the holder the lock names
  const start = procStartTime(other)!;
  const write = (h: object) =>
    writeFileSync(`${target}.lock`, JSON.stringify({ host: hostname(), command: 'qkt kmd export', since: '2025-01-01T00:00:00.000Z', nonce: 'dddddddddddddddd', ...h }));

  const l = lockSync(target, opts());
  t.match(lockHolder(target), { pid: process.pid, boot: BOOT_ID, start: procStartTime(process.pid) }, 'the lock records boot id and start time');
  l.release();

  write({ pid: 1, boot: '00000000-0000-0000-0000-000000000000', start: 1 }); // left by a power cut, pid 1 alive again
  lockSync(target, opts()).release();
  t.notOk(existsSync(`${target}.lock`), 'pid 1 of another boot: taken over');

  write({ pid: other, boot: BOOT_ID, start: start + 12345 });
  lockSync(target, opts()).release();
  t.notOk(existsSync(`${target}.lock`), 'a live pid whose start time differs: taken over');

  write({ pid: other, boot: BOOT_ID, start });
  t.throws(() => lockSync(target, opts()), { message: new RegExp(`in use by pid ${other} `) }, 'the same pid, boot and start time: its holder, respected');

  write({ pid: other });
  t.throws(() => lockSync(target, opts()), { message: new RegExp(`in use by pid ${other} `) }, 'a lock of the previous version (no boot id): a live pid is respected as before');
  t.end();
});

t.test('a live holder: refused at once with its pid, or waited for up to the bound', async (t) => {
  const dir = t.testdir({});
  const target = join(dir, 'thing');
  const c = child(t, dir, `const l = L.lockSync(target, { what: 'x' }); console.log('held'); setTimeout(() => { l.release(); console.log('released'); setTimeout(() => {}, 60000); }, 700);`, target);
  await until(() => c.out().includes('held'));
  if (!noProc) t.match(lockHolder(target), { pid: c.proc.pid, boot: BOOT_ID, start: procStartTime(c.proc.pid!) }, 'the child recorded its boot and start time');
  const e = t.throws(() => lockSync(target, opts('KMD home H'))) as LockBusyError;
  t.match(e.message, new RegExp(`^KMD home H is in use by pid ${c.proc.pid} \\(test child, since \\d{4}-[0-9T:.-]+Z\\)$`));
  t.equal(e.holder?.pid, c.proc.pid);
  await t.rejects(lock(target, { what: 'x', waitMs: 100 }), { name: 'LockBusyError' }, 'async: the bound ends the wait');
  const t0 = Date.now();
  await withLock(target, { what: 'x', waitMs: 10_000 }, () => t.ok(c.out().includes('released'), 'got it once the holder let go'));
  t.ok(Date.now() - t0 < 5000, 'waited about as long as the holder held it');
});

t.test('released on the ways out of a process; a SIGKILLed holder\'s lock is taken over', async (t) => {
  const dir = t.testdir({});
  const ways: Array<[string, string, NodeJS.Signals | undefined]> = [
    ['exit', `L.lockSync(target, { what: 'x' }); console.log('held'); setTimeout(() => process.exit(3), 50);`, undefined],
    ['throw', `L.lockSync(target, { what: 'x' }); console.log('held'); setTimeout(() => { throw new Error('boom'); }, 50);`, undefined],
    ['SIGTERM', `L.lockSync(target, { what: 'x' }); console.log('held'); setInterval(() => {}, 1000);`, 'SIGTERM'],
    ['SIGINT', `L.lockSync(target, { what: 'x' }); console.log('held'); setInterval(() => {}, 1000);`, 'SIGINT'],
    ['SIGKILL', `L.lockSync(target, { what: 'x' }); console.log('held'); setInterval(() => {}, 1000);`, 'SIGKILL'],
  ];
  for (const [name, body, sig] of ways) {
    const target = join(dir, name);
    const c = child(t, dir, body, target);
    await until(() => c.out().includes('held'));
    t.equal(lockHolder(target)?.pid, c.proc.pid, `${name}: held by the child`);
    if (sig) process.kill(c.proc.pid!, sig);
    const code = await c.exited;
    if (name === 'SIGKILL') {
      t.ok(existsSync(`${target}.lock`), 'SIGKILL: the lock file stays behind');
      lockSync(target, opts()).release();
      t.pass('and is taken over: its pid is dead');
    } else {
      t.notOk(existsSync(`${target}.lock`), `${name}: released (the child ended with ${code})`);
    }
    if (sig === 'SIGTERM' || sig === 'SIGINT') t.equal(code, sig, `${name}: the child still dies of the signal`);
  }
});

t.test('many processes: one holder at a time, also when they all race to take over a stale lock', async (t) => {
  const dir = t.testdir({});
  const target = join(dir, 'counter');
  writeFileSync(target, '0');
  writeFileSync(`${target}.lock`, JSON.stringify({ pid: await deadPid(), host: hostname(), command: 'qkt crashed', since: new Date().toISOString(), nonce: 'cccccccccccccccc' }));
  const N = 6;
  const ROUNDS = 15;
  const go = join(dir, 'go');
  // Each child waits for the go file, then does read-modify-write rounds on the counter under the lock.
  const body = `
    import { readFileSync, writeFileSync, existsSync } from 'node:fs';
    const nap = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    while (!existsSync(${JSON.stringify(go)})) nap(2);
    let overlaps = 0;
    for (let i = 0; i < ${ROUNDS}; i++) {
      L.withLockSync(target, { what: 'counter', waitMs: 30000 }, () => {
        const n = Number(readFileSync(target, 'utf8'));
        nap(1 + Math.random() * 2);
        writeFileSync(target, String(n + 1));
      });
    }
    console.log('done');`;
  const kids = Array.from({ length: N }, () => child(t, dir, body, target));
  writeFileSync(go, '');
  const codes = await Promise.all(kids.map((k) => k.exited));
  t.same(codes, Array(N).fill(0), `all ${N} finished: ${kids.map((k) => k.out()).join(' ').slice(0, 300)}`);
  t.equal(Number(readFileSync(target, 'utf8')), N * ROUNDS, 'no update lost: never two holders at once');
  t.notOk(existsSync(`${target}.lock`), 'and the lock is free again');
});
