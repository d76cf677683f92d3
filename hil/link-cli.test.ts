// `qkt link` as a test engineer runs it: a paced virtual cable between two new ptys, a
// `qkt terminal run` on one end and `qkt status` on the other, through the relay; then a TCP end.
import t from 'tap';
import { socatSkipReason } from './pty.js';
import { runQkt, startQkt } from './cli.js';

t.test('status through qkt link pty pty at 115200 baud', { skip: socatSkipReason() }, async (t) => {
  const link = await startQkt(['link', 'pty', 'pty', '--baud', '115200', '--seed', '3']);
  t.teardown(() => link.stop());
  t.match(link.ready, { event: 'ready', a: /^\/dev\//, b: /^\/dev\//, baud: 115200, noise: 0, seed: 3, pid: link.child.pid });
  const a = link.ready['a'] as string;
  const b = link.ready['b'] as string;
  const dir = t.testdir({});
  const term = await startQkt(['terminal', 'run', '--flash', `${dir}/t1.img`, '--create-image', '--port', b]);
  t.teardown(() => term.stop());
  const r = await runQkt(['status', '--json', '--port', a]);
  t.equal(r.code, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { terminalId: null, firmware: /^qkt-fw / });
  await term.stop();
  t.equal(await link.stop(), 0, 'link exits 0 on SIGTERM');
  t.match(link.stderr(), /A->B: \d+ bytes in, \d+ out, 0 corrupted, 0 dropped, 0 inserted/);
  t.match(link.stderr(), /B->A: [1-9]\d* bytes in/);
});

t.test('status through qkt link pty tcp:127.0.0.1:0', { skip: socatSkipReason() }, async (t) => {
  const link = await startQkt(['link', 'pty', 'tcp:127.0.0.1:0', '--baud', '115200', '--noise', '0%', '--seed', '1']);
  t.teardown(() => link.stop());
  t.match(link.ready, { a: /^\/dev\//, b: /^tcp:127\.0\.0\.1:\d+$/, noise: 0, seed: 1 });
  const dir = t.testdir({});
  const term = await startQkt(['terminal', 'run', '--flash', `${dir}/t1.img`, '--create-image', '--port', link.ready['a'] as string]);
  t.teardown(() => term.stop());
  const r = await runQkt(['status', '--json', '--port', link.ready['b'] as string]);
  t.equal(r.code, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { firmware: /^qkt-fw / });
  await term.stop();
  await link.stop();
  t.match(link.stderr(), /connected/);
  t.match(link.stderr(), /B->A: \d+ bytes in/);
});

t.test('qkt link refuses a bad command line', async (t) => {
  const one = await runQkt(['link', 'pty', '--baud', '9600']);
  t.equal(one.code, 2);
  t.match(one.stderr, /two cable ends/);
  const noise = await runQkt(['link', 'pty', 'pty', '--baud', '9600', '--noise', '200%']);
  t.equal(noise.code, 2);
  t.match(noise.stderr, /--noise must be a percentage/);
  const end = await runQkt(['link', 'pty', 'serial', '--baud', '9600']);
  t.equal(end.code, 2);
  t.match(end.stderr, /neither pty nor tcp:HOST:PORT/);
});
