// The bench's paced cable is a cable: bytes written at one end come out intact at the other, no
// faster than the line rate (real clock, upper bound only), both for the link's own transport
// and for ZMODEM (lrzsz sz/rz) run on it, as `qkt bench inject` compares them.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSerial } from '../transports/serial.js';
import { socatSkipReason } from '../transports/pty-pair.js';
import { lrzszAvailable, LRZSZ_MISSING, pacedCable, zmodemTransfer } from './wall-clock.js';

t.setTimeout(120_000);

/** In CI lrzsz is installed (.ci/run): missing there is a failure, not a skip. */
function lrzszSkipReason(): string | false {
  if (process.env['CI'] === 'true' || lrzszAvailable()) return false;
  return `${LRZSZ_MISSING}; ZMODEM test skipped`;
}

t.test('paced cable at 115200: bytes arrive intact, no faster than the line', { skip: socatSkipReason() }, async (t) => {
  const baud = 115_200;
  const cable = await pacedCable(baud);
  t.teardown(() => cable.close());
  const a = await openSerial(cable.host);
  const b = await openSerial(cable.device);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const data = new Uint8Array(randomBytes(23_040)); // 2 s of line time
  data[data.length - 1] = 0; // the serial transport hands bytes on at each 0x00
  const got: Buffer[] = [];
  let n = 0;
  const all = new Promise<void>((resolve) => b.onData((c) => (got.push(Buffer.from(c)), (n += c.length) >= data.length && resolve())));
  const t0 = performance.now();
  await a.write(data);
  await all;
  const seconds = (performance.now() - t0) / 1000;
  t.ok(Buffer.concat(got).equals(Buffer.from(data)), 'the bytes came out intact and in order');
  const ratio = data.length / seconds / (baud / 10);
  t.comment(`${data.length} bytes in ${seconds.toFixed(3)} s: ${ratio.toFixed(4)} of the line rate`);
  t.ok(ratio <= 1.05, `no faster than the line (ratio ${ratio.toFixed(4)} <= 1.05)`);
});

t.test('ZMODEM (sz/rz) over the paced cable: intact, no faster than the line', { skip: socatSkipReason() || lrzszSkipReason() }, async (t) => {
  const baud = 921_600;
  const dir = t.testdir({});
  const file = join(dir, 'batch.qkb');
  writeFileSync(file, randomBytes(92_160)); // 1 s of line time
  const cable = await pacedCable(baud);
  t.teardown(() => cable.close());
  const r = await zmodemTransfer(cable, file); // throws unless the received file is the sent one
  t.equal(r.bytes, 92_160);
  const ratio = r.bytes / r.seconds / (baud / 10);
  t.comment(`ZMODEM: ${r.bytes} bytes in ${r.seconds.toFixed(3)} s: ${ratio.toFixed(4)} of the line rate`);
  t.ok(ratio <= 1.05, `no faster than the line (ratio ${ratio.toFixed(4)} <= 1.05)`);
});
