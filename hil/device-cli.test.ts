// `qkt hil run --port P [--baud N]` as a rig runs it: misplaced --baud/--vidpid and a missing port
// are refused before any suite starts; without --port the device suite skips, saying why; with
// --port at an emulated module on a pty it passes and its report (goodput against the line rate)
// comes back in --json and in the JUnit report; at a pty where nothing answers it fails, exit 1.
// The `hil run` runs happen in a scratch project root (scratch-root.ts).
import t from 'tap';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { checkDeviceReport } from '../host-tools/cli/commands/hil.js';
import { background, failsWith, ptyPair, ptySkipReason, runQkt } from './e2e-rig.js';
import { runInRoot, scratchRoot } from './scratch-root.js';

t.setTimeout(240_000);

t.test('hil run refuses --baud or --vidpid without --port, and a port that is not there', async (t) => {
  failsWith(t, await runQkt(['hil', 'run', '--baud', '115200']), 2, /^qkt: --baud is the line rate of the device on --port P: give it with --port P;/, '--baud alone');
  failsWith(t, await runQkt(['hil', 'run', '--vidpid', '0483:5740']), 2, /^qkt: --vidpid picks the device of --port auto: give it with --port auto;/, '--vidpid alone');
  failsWith(t, await runQkt(['hil', 'run', '--port', '/dev/pts/9', '--baud', '12']), 2, /--baud must be a whole number from 300 to 12000000/, 'a baud out of range');
  failsWith(t, await runQkt(['hil', 'run', '--port', '/dev/qkt-no-such-tty']), 3, /^qkt: --port \/dev\/qkt-no-such-tty does not exist; qkt ports lists the serial devices attached$/, 'a missing port');
});

t.test('hil run --suite device: skipped without --port; run with it, its report in --json and JUnit', { skip: ptySkipReason() }, async (t) => {
  const root = scratchRoot();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));

  // The caller's QKT_HIL_PORT is no --port: hil run drops it.
  const skipped = await runInRoot(root, ['hil', 'run', '--suite', 'device'], { env: { QKT_HIL_PORT: '/dev/qkt-not-this' }, timeoutMs: 60_000 });
  t.equal(skipped.code, 0, `no --port: exit 0: ${skipped.stderr.trim().slice(-1000)}`);
  t.match(skipped.stderr, /^ {2}skip {2}hil\/device\.test\.ts +1\/1 at \d+ s \(no device given \(qkt hil run --port P\)\)$/m, 'the device suite skips, saying why');
  t.match(skipped.stdout, /^HIL suite passed over inproc, tcp, pty, mock, webusb\n$/, 'and passes');
  const sj = await runInRoot(root, ['hil', 'run', '--suite', 'device', '--json'], { timeoutMs: 60_000 });
  const s = JSON.parse(sj.stdout) as Record<string, unknown>;
  t.match(s, { passed: true, results: [{ suite: 'hil/device.test.ts', ok: true, skipped: 'no device given (qkt hil run --port P)' }] }, '--json: skipped, with the reason');
  t.notOk('device' in s, '--json: no device report');

  // An emulated module paced like a 921600-baud UART stands in for the device.
  const dir = t.testdir({});
  const pair = await ptyPair(t);
  await background(t, ['terminal', 'run', '--flash', join(dir, 'blank.img'), '--create-image', '--port', pair.a, '--baud', '921600']);
  const junit = join(root, 'hil.xml');
  const bytes = 128 * 1024;
  const r = await runInRoot(root, ['hil', 'run', '--suite', 'device', '--port', pair.b, '--baud', '921600', '--junit', junit, '--json'], { env: { QKT_HIL_DEVICE_BYTES: String(bytes) }, timeoutMs: 120_000 });
  t.equal(r.code, 0, `--port: exit 0: ${r.stderr.trim().slice(-2000)}`);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  t.match(doc, { passed: true, suites: ['hil/device.test.ts'], results: [{ suite: 'hil/device.test.ts', ok: true, skipped: null }] });
  const device = checkDeviceReport(doc['device']);
  t.ok(device, `a well-formed device report: ${JSON.stringify(doc['device'])}`);
  if (!device) return;
  t.match(device, { port: pair.b, baud: 921600, firmware: /^qkt-fw /, bulk: { bytes, restarts: Number } });
  t.ok(device.maxChunk! > 0 && device.window! > 0 && device.maxFrame! > device.maxChunk!, 'the limits from PARAMS');
  const b = device.bulk!;
  // seconds is rounded to the millisecond: the goodput from it agrees to well within 1%.
  t.ok(Math.abs(b.goodputBitsPerSecond - (bytes * 8) / b.seconds) < b.goodputBitsPerSecond / 100, `goodput ${b.goodputBitsPerSecond} = ${bytes * 8} bits / ${b.seconds} s`);
  t.ok(b.lineRateFraction !== null && b.lineRateFraction > 0 && b.lineRateFraction <= 1, `line rate fraction ${b.lineRateFraction}: goodput over 92,160 bytes/s`);

  const xml = readFileSync(junit, 'utf8');
  t.match(xml, /<testsuite name="hil\/device\.test\.ts"/, 'JUnit: the suite');
  t.notMatch(xml, /<failure/, 'JUnit: no failure');
  const prop = /<property name="device"><!\[CDATA\[([\s\S]*?)\]\]><\/property>/.exec(xml);
  t.ok(prop, 'JUnit: a device property on the report case');
  t.match(prop?.[1], new RegExp(`port: ${pair.b}\\n\\s*baud: 921600\\n`), 'JUnit: port and baud');
  t.match(prop?.[1], new RegExp(`goodputBitsPerSecond: ${b.goodputBitsPerSecond}\\n`), 'JUnit: the same goodput as --json');

  // The module gone: the pty answers nothing. PARAMS fails, the rest fails at once, exit 1.
  const silent = await ptyPair(t);
  const f = await runInRoot(root, ['hil', 'run', '--suite', 'device', '--port', silent.b, '--json'], { env: { QKT_HIL_DEVICE_BYTES: '4096' }, timeoutMs: 120_000 });
  t.equal(f.code, 1, 'nothing answers: exit 1');
  const fd = JSON.parse(f.stdout) as Record<string, unknown>;
  t.match(fd, { passed: false, results: [{ suite: 'hil/device.test.ts', ok: false }], device: { port: silent.b, baud: null, firmware: null, bulk: null } });
  t.match(f.stderr, /qkt: HIL suite failed \(tap exit 1; failed: hil\/device\.test\.ts\)/, 'the one-line reason');
});
