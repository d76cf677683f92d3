// `--baud` means what docs/cli.md says: a `qkt terminal run --baud 115200` module on a pty takes
// and sends bytes like a UART at 115200 baud, so even an unpaced `qkt inject` (no --baud) cannot
// move a batch into it faster than the line rate (11,520 bytes/s, 8N1). Real clock, upper bound
// only: the transfer's own time (not counting the CLI's start) against the batch's sealed bytes.
import t from 'tap';
import type { Test } from 'tap';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { background, ptyPair, ptySkipReason, qktJson, runQkt, parseJson } from './e2e-rig.js';

t.setTimeout(120_000);

/** A KMD home with T1 enrolled on an image and a new carrier holding `bits` of key for it. */
async function t1WithBatch(t: Test, bits: string): Promise<{ image: string; carrier: string }> {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const image = join(dir, 'T1.img');
  const carrier = join(dir, 'c1');
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', image]);
  await qktJson(t, ['carrier', 'load', '--home', home, '--carrier', carrier, '--terminal', 'T1', '--bits', bits, '--init']);
  return { image, carrier };
}

t.test('an unpaced inject into a module run with --baud 115200 goes no faster than the line', { skip: ptySkipReason() }, async (t) => {
  const { image, carrier } = await t1WithBatch(t, '256Kbit');
  const batchFile = readdirSync(join(carrier, 'batches')).find((f) => f.startsWith('T1-'));
  t.ok(batchFile, 'the carrier holds the batch');
  const sealedBytes = statSync(join(carrier, 'batches', batchFile!)).size;

  const baud = 115_200;
  const cable = await ptyPair(t);
  await background(t, ['terminal', 'run', '--flash', image, '--port', cable.b, '--baud', String(baud)]);
  const r = await runQkt(['inject', '--carrier', carrier, '--port', cable.a, '--json'], { timeoutMs: 60_000 });
  t.equal(r.code, 0, `inject exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`);
  const doc = parseJson<{ bits: number; seconds: number }>(r);
  t.equal(doc.bits, 262_144, 'the whole batch went in');
  const ratio = sealedBytes / doc.seconds / (baud / 10);
  t.comment(`${sealedBytes} sealed bytes in ${doc.seconds} s: ${ratio.toFixed(4)} of the 115200 baud line rate`);
  t.ok(ratio <= 1.05, `at most the line rate (ratio ${ratio.toFixed(4)} <= 1.05)`);

  const st = await qktJson<{ pool: { storedKeyBits: number } }>(t, ['status', '--port', cable.a]);
  t.equal(st.pool.storedKeyBits, 262_144, 'the module holds it');
});

t.test('an unpaced inject into a module run with --baud 19200 (TCP) completes: the module tells its rate in PARAMS', async (t) => {
  const { image, carrier } = await t1WithBatch(t, '64Kbit');
  const term = await background(t, ['terminal', 'run', '--flash', image, '--listen', 'tcp:127.0.0.1:0', '--baud', '19200']);
  const port = term.ready['port'] as string;
  // Before, the host timed the replies as for 115200 baud, declared the line dead after ~11 s at
  // "0 bit" every time, and said a re-run would resume.
  const r = await runQkt(['inject', '--carrier', carrier, '--port', port, '--json'], { timeoutMs: 90_000 });
  t.equal(r.code, 0, `inject exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`);
  t.match(parseJson<{ bits: number; resumes: number }>(r), { bits: 65_536, resumes: 0 }, 'the whole batch, no loss on the way');
});

