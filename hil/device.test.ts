// The device suite (hil/device.suite.ts) against a module on a port. `qkt hil run --port P [--baud N]`
// names it (QKT_HIL_PORT, QKT_HIL_BAUD; the report goes to QKT_HIL_DEVICE_REPORT); `qkt hil run`
// without --port skips it. Run on its own (npm test), it starts an emulated module itself, `qkt
// terminal run` on one end of a socat pty pair, paced at 921600 baud, and runs the suite on the other.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deviceSuite } from './device.suite.js';
import { formatDevice } from '../host-tools/cli/commands/hil.js';
import type { DeviceReport } from '../host-tools/cli/commands/hil.js';
import { background, ptyPair, ptySkipReason } from './e2e-rig.js';

const env = process.env;
const port = env['QKT_HIL_PORT'];
/** Started by `qkt hil run` (it always names the transports): then only --port gives a device. */
const fromHilRun = env['QKT_HIL_TRANSPORTS'] !== undefined;

function positive(name: string, text: string | undefined, parse: (s: string) => number): number | undefined {
  if (text === undefined || text === '') return undefined;
  const n = parse(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number, got ${JSON.stringify(text)}`);
  return n;
}
const baud = positive('QKT_HIL_BAUD', env['QKT_HIL_BAUD'], Number);
/** Bytes of the bulk transfer: 1 MiB on a device; 256 KiB on the emulated module of npm test. */
const bulkBytes = positive('QKT_HIL_DEVICE_BYTES', env['QKT_HIL_DEVICE_BYTES'], Number);

/** Each bulk byte is 10 bits on the line; the suite's own checks take seconds. */
function timeoutFor(bytes: number, lineBaud: number): number {
  return 180_000 + Math.ceil((6 * bytes * 10 * 1000) / lineBaud);
}

function writeReport(r: DeviceReport): void {
  const file = env['QKT_HIL_DEVICE_REPORT'];
  if (file) writeFileSync(file, JSON.stringify(r));
  t.comment(formatDevice(r).trim());
}

if (port !== undefined && port !== '') {
  const bytes = bulkBytes ?? 1024 * 1024;
  t.setTimeout(timeoutFor(bytes, baud ?? 115_200));
  t.comment(`device suite on ${port}${baud ? ` at ${baud} baud` : ''}: non-destructive (PARAMS, STATUS, ECHO, DIAG sink), ${bytes} bytes bulk`);
  deviceSuite(t, { port, ...(baud ? { baud } : {}), bulkBytes: bytes, onReport: writeReport });
} else if (fromHilRun) {
  // A plan of none with a reason: tap reports the whole file skipped with it, so `hil run` shows why.
  t.plan(0, 'no device given (qkt hil run --port P)');
} else {
  // npm test: an emulated module on a pty pair stands in for the device.
  const emulatedBaud = 921_600;
  const bytes = bulkBytes ?? 256 * 1024;
  t.setTimeout(timeoutFor(bytes, emulatedBaud));
  t.test(`an emulated module on a pty at ${emulatedBaud} baud`, { skip: ptySkipReason() }, async (t) => {
    const dir = t.testdir({});
    const pair = await ptyPair(t);
    await background(t, ['terminal', 'run', '--flash', join(dir, 'blank.img'), '--create-image', '--port', pair.a, '--baud', String(emulatedBaud)]);
    let report: DeviceReport | undefined;
    deviceSuite(t, { port: pair.b, baud: emulatedBaud, bulkBytes: bytes, onReport: (r) => (report = r) });
    t.test('the report names the module and the goodput', async (t) => {
      t.ok(report, 'a report');
      if (!report) return;
      t.match(report, { port: pair.b, baud: emulatedBaud, firmware: /^qkt-fw /, window: Number, maxChunk: Number });
      t.equal(report.bulk?.bytes, bytes, 'of the whole transfer');
      t.ok(report.bulk && report.bulk.goodputBitsPerSecond > 0, 'goodput measured');
      // 8N1 carries at most baud/10 bytes a second: goodput can only be a fraction of it (never asserted as a speed).
      t.ok(report.bulk && report.bulk.lineRateFraction !== null && report.bulk.lineRateFraction > 0 && report.bulk.lineRateFraction <= 1, `line rate fraction ${report.bulk?.lineRateFraction} in (0, 1]`);
    });
  });
}
