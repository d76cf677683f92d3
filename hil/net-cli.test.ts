// `qkt net relay` as a user runs it: the --json ready line, bytes through it to a TCP echo on
// 127.0.0.1, the per-direction stats at SIGTERM, and usage errors (exit 2).
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { runQkt, startQkt } from './cli.js';

t.test('qkt net relay: ready line, an echo through it, stats at exit', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.teardown(() => echo.close());
  const port = (echo.address() as net.AddressInfo).port;
  const relay = await startQkt(['net', 'relay', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${port}`, '--rate', '64kbit/s', '--latency', '5ms', '--jitter', '1ms', '--loss', '1%', '--seed', '42']);
  t.teardown(() => relay.stop());
  t.match(relay.ready, { event: 'ready', listen: /^127\.0\.0\.1:\d+$/, to: `127.0.0.1:${port}`, rate: 64000, latencyMs: 5, jitterMs: 1, loss: 0.01, seed: 42, mssBytes: 536, overheadBytes: 40, pid: relay.child.pid });
  const [, p] = (relay.ready['listen'] as string).split(':');
  const c = net.connect({ host: '127.0.0.1', port: Number(p) });
  await once(c, 'connect');
  const msg = Buffer.from('hello through a 64 kbit/s link '.repeat(40));
  const parts: Buffer[] = [];
  let n = 0;
  const back = new Promise<void>((r) => c.on('data', (d: Buffer) => (parts.push(d), (n += d.length) >= msg.length && r())));
  c.write(msg);
  await back;
  t.ok(Buffer.concat(parts).equals(msg), 'echoed intact');
  c.end();
  await once(c, 'close');
  t.equal(await relay.stop(), 0, 'exits 0 on SIGTERM');
  const lines = relay.stdout().trim().split('\n');
  const end = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
  t.match(end, { event: 'end', connections: 1, up: { bytesIn: msg.length, bytesOut: msg.length }, down: { bytesOut: msg.length } });
  t.match(relay.stderr(), /connection 0 from 127\.0\.0\.1:\d+/);
});

t.test('qkt net relay refuses a bad command line (exit 2)', async (t) => {
  const cases: [string[], RegExp][] = [
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1'], /--rate/],
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1', '--rate', 'fast'], /^qkt: --rate: not a rate/],
    [['net', 'relay', '--listen', 'nowhere', '--to', '127.0.0.1:1', '--rate', '9.6kbit/s'], /^qkt: --listen: address must look like/],
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1', '--rate', '9.6kbit/s', '--latency', 'soon'], /^qkt: --latency: not a duration/],
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1', '--rate', '9.6kbit/s', '--loss', '100%'], /^qkt: --loss must be below 100%/],
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1', '--rate', '9.6kbit/s', '--loss', '150%'], /^qkt: --loss: not a percentage/],
    [['net', 'relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1', '--rate', '9.6kbit/s', '--seed', '-1'], /^qkt: --seed must be a whole number/],
  ];
  for (const [args, re] of cases) {
    const r = await runQkt(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re, args.join(' '));
  }
});
