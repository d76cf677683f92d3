// The CLI on a virtual serial cable, as a test engineer would run it: `qkt terminal run` on one
// end of a socat pty pair, `qkt status` on the other; line noise at the terminal does not stop it.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { createPtyPair, socatSkipReason } from './pty.js';
import { runQkt, startQkt } from './cli.js';
import { openSerial } from '../host-tools/transports/serial.js';

t.test('status over a pty pair, before and after 100 KiB of random bytes', { skip: socatSkipReason() }, async (t) => {
  const pty = await createPtyPair();
  const dir = t.testdir({});
  const term = await startQkt(['terminal', 'run', '--flash', `${dir}/t1.img`, '--create-image', '--port', pty.b]);
  t.teardown(async () => {
    await term.stop();
    await pty.close();
  });
  t.match(term.ready, { event: 'ready', port: pty.b, enrolled: false });

  const before = await runQkt(['status', '--json', '--port', pty.a]);
  t.equal(before.code, 0, before.stderr);
  const s1 = JSON.parse(before.stdout) as Record<string, unknown>;
  t.match(s1, { terminalId: null, firmware: /^qkt-fw /, pool: { storedKeyBits: 0, maxKeyBits: Number, consumedKeyBits: 0, batches: [] } });

  // Line noise: 100 KiB of random bytes written at the terminal.
  const noisy = await openSerial(pty.a);
  for (let i = 0; i < 25; i++) await noisy.write(randomBytes(4096));
  await noisy.close();

  const after = await runQkt(['status', '--json', '--port', pty.a]);
  t.equal(after.code, 0, after.stderr);
  t.match(JSON.parse(after.stdout), { firmware: s1['firmware'], pool: s1['pool'] });

  const human = await runQkt(['status', '--port', pty.a]);
  t.match(human.stdout, /terminal\s+\(not enrolled\)/);
  t.match(human.stdout, /key pool\s+0 bit stored/);
});

t.test('status against a terminal on TCP, paced at 115200 baud', async (t) => {
  const dir = t.testdir({});
  const term = await startQkt(['terminal', 'run', '--flash', `${dir}/t.img`, '--create-image', '--listen', 'tcp:127.0.0.1:0', '--baud', '115200']);
  t.teardown(() => term.stop());
  const port = term.ready['port'] as string;
  t.match(port, /^tcp:127\.0\.0\.1:\d+$/);
  const r = await runQkt(['status', '--json', '--port', port, '--baud', '115200']);
  t.equal(r.code, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { port, link: { protocolVersions: [1] } });
});

t.test('terminal run refuses a bad command line', async (t) => {
  const both = await runQkt(['terminal', 'run', '--flash', 'x.img', '--port', '/dev/null', '--listen', 'tcp:127.0.0.1:0']);
  t.equal(both.code, 2);
  t.match(both.stderr, /exactly one of --port/);
  const noflash = await runQkt(['terminal', 'run', '--port', '/dev/null']);
  t.equal(noflash.code, 2);
  t.match(noflash.stderr, /--flash is required/);
});
