// socat pty pair: paths parsed, bytes flow a -> b through openSerial, close() kills socat.
import t from 'tap';
import { existsSync } from 'node:fs';
import { createPtyPair, socatSkipReason } from './pty.js';
import { openSerial } from '../host-tools/transports/serial.js';
import { collect, concat, randomChunks, watchClose } from '../host-tools/transports/transport.suite.js';

const skip = socatSkipReason();

t.test('createPtyPair: two raw ptys relaying bytes, socat killed by pid on close', { skip }, async (t) => {
  const pair = await createPtyPair();
  t.match(pair.a, /^\/dev\/pts\/\d+$/);
  t.match(pair.b, /^\/dev\/pts\/\d+$/);
  t.not(pair.a, pair.b);
  t.ok(pair.pid > 0);
  const a = await openSerial(pair.a);
  const b = await openSerial(pair.b);
  // Every byte value, including the ones a cooked tty would eat (^C, ^D, ^S, CR, NL, DEL).
  const every = Uint8Array.from({ length: 256 }, (_, i) => (i + 1) & 0xff); // ends with 0x00
  const chunks = [every, ...randomChunks(5, 50_000, 4000, true)];
  const got = collect(b, concat(chunks).length);
  for (const c of chunks) await a.write(c);
  t.ok((await got).equals(concat(chunks)), 'bytes arrive untouched and in order');

  const wa = watchClose(a);
  await pair.close();
  await pair.close(); // idempotent
  t.throws(() => process.kill(pair.pid, 0), 'socat is gone');
  const err = await wa.closed;
  t.type(err, Error, `open port sees the pull: ${err?.message}`);
  await b.close();
  t.notOk(existsSync(pair.a), 'pty node removed with socat');
});

t.test('socatSkipReason never skips in CI', async (t) => {
  const saved = process.env['CI'];
  process.env['CI'] = 'true';
  t.equal(socatSkipReason(), false);
  if (saved === undefined) delete process.env['CI'];
  else process.env['CI'] = saved;
});

t.test('socat is out of the terminal\'s Ctrl-C (its own process group) and ends with the process that made it', { skip }, async (t) => {
  const { spawnSync, spawn } = await import('node:child_process');
  const pgid = (pid: number) => spawnSync('ps', ['-o', 'pgid=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim();
  const pair = await createPtyPair();
  t.teardown(() => pair.close());
  t.not(pgid(pair.pid), pgid(process.pid), 'a Ctrl-C to this process group does not reach socat');
  // A process that exits without closing its pair (process.exit after a second Ctrl-C) takes it along.
  const url = new URL('../dist/host-tools/transports/pty-pair.js', import.meta.url).href; // built (npm test builds first), as the CLI runs
  const child = spawn(process.execPath, ['--input-type=module', '-e', `const { createPtyPair } = await import(${JSON.stringify(url)}); const p = await createPtyPair(); console.log(p.pid); process.exit(0);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const printed = new Promise<void>((r) =>
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) r();
    }),
  );
  await Promise.all([printed, new Promise((r) => child.once('exit', r))]);
  const pid = Number(out.trim());
  t.ok(pid > 0, `socat pid ${out.trim()}`);
  // Gone, or a zombie waiting for init to reap it (state Z): either way it no longer runs.
  const running = () => {
    const st = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim();
    return st !== '' && !st.startsWith('Z');
  };
  let alive = running();
  for (let i = 0; i < 50 && alive; i++) {
    await new Promise((r) => setTimeout(r, 20));
    alive = running();
  }
  if (alive) process.kill(pid, 'SIGTERM');
  t.notOk(alive, 'socat ended with the process that made it');
});
