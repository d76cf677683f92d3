// `qkt monitor` whose stdout is not read (a pager, a paused terminal) while a peer floods a TCP
// end with tiny frames (a line of ~130 characters for every 2 bytes): the lines queued for stdout
// stay bounded (monitor/output.ts), the gap is reported, and the relay and its end go on.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { QKT_BIN } from './cli.js';
import { MAX_BACKLOG } from '../host-tools/monitor/output.js';

t.test('a flood of tiny frames to a monitor whose output is not read: bounded output, the gap reported', async (t) => {
  const FRAMES = 400_000;
  const server = createServer((c) => c.end(Buffer.alloc(2 * FRAMES, Buffer.from([1, 0]))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;

  const child = spawn(process.execPath, [QKT_BIN, 'monitor', `connect:127.0.0.1:${port}`, 'tcp:127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let stderr = '';
  // stdout is left unread (paused) until the relay has ended: the flood has all been seen.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the relay did not end: ${stderr}`)), 60_000);
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/relay ended/.test(stderr)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => chunks.push(d));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  const out = Buffer.concat(chunks).toString();
  t.equal(code, 0, stderr);
  t.ok(out.length < MAX_BACKLOG + 1024 * 1024, `${out.length} bytes of output for ${FRAMES} frames`);
  // One line per gap: under load the reader may fall behind more than once.
  const gaps = [...out.matchAll(/(\d+) frames not shown: the output was not read fast enough/g)].map((g) => Number(g[1]));
  t.ok(gaps.length > 0, 'the gap is reported in the output');
  const shown = out.split('\n').filter((l) => /too short/.test(l)).length;
  t.equal(shown + gaps.reduce((a, b) => a + b, 0), FRAMES, `every frame shown or counted (${gaps.length} gaps)`);
  t.match(stderr, /frames not shown/);
});
