// HIL: `qkt terminal run --power-cut-after N` on a socat pty pair dies at its Nth flash operation
// mid-injection; restarted on the same flash file, the re-run injection ends complete exactly once.
import t from 'tap';
import { copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createPtyPair, socatSkipReason } from './pty.js';
import type { PtyPair } from './pty.js';
import { startQkt } from './cli.js';
import { assertFreshBuild } from './build-check.js';
import type { Background } from './cli.js';
import { openSerial } from '../host-tools/transports/serial.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import type { InjectResult } from '../host-tools/link/inject.js';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { enrollFlash } from '../firmware/secure/enroll.js';
import { createTerminal } from '../firmware/terminal.js';
import { parseSealedHeader } from '../firmware/crypto/batch.js';
import { decodeReceipt, verifyReceipt } from '../firmware/crypto/receipt.js';
import { Group, SystemCmd } from '../firmware/link/groups.js';
import { drainPool, makeBatch } from '../host-tools/test-support/module-rig.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';

// It runs the built CLI: a missing or stale build fails here, never skips.
assertFreshBuild();
const skip = socatSkipReason();

t.setTimeout(120_000);

t.test('power cut at the Nth flash operation of a real terminal process, then resume', { skip }, async (t) => {
  const dir = t.testdir({});
  const base = `${dir}/base.img`;
  const deviceKey = new Uint8Array(randomBytes(32));
  {
    const flash = NorFlash.open(base);
    enrollFlash(flash, { terminalId: 'T1', deviceKey });
    flash.close();
  }
  const b = makeBatch(deviceKey, { bits: 16 * 256 * 8, chunkSize: 256 });
  const chunkBytes = parseSealedHeader(b.sealed).sealedChunkSize;

  // Count, in process on a copy of the image, the flash operations of boot and of one injection.
  let bootOps: number;
  let injectOps: number;
  {
    const flash = NorFlash.fromImage(NorFlash.open(base).snapshot());
    const [host, device] = createInProcessPair();
    createTerminal({ flash, transport: device });
    bootOps = flash.faults.mutations;
    const client = new LinkClient(host);
    await injectBatch(client, await client.negotiate(), b.sealed, { chunkBytes });
    injectOps = flash.faults.mutations - bootOps;
    await client.close();
  }
  t.ok(injectOps > 16, `boot takes ${bootOps} flash operations, the injection ${injectOps}`);
  // 10 cut points spread over the injection, first and last included (each costs two CLI starts).
  const points = [...new Set(Array.from({ length: 10 }, (_, i) => bootOps + 1 + Math.round((i * (injectOps - 1)) / 9)))];

  const running = new Set<Background>();
  const ptys = new Set<PtyPair>();
  t.teardown(async () => {
    for (const p of running) await p.stop(); // by pid
    for (const p of ptys) await p.close(); // socat, by pid
  });
  const pair = async () => {
    const p = await createPtyPair();
    ptys.add(p);
    return p;
  };
  const run = async (flashPath: string, pty: PtyPair, extra: string[]) => {
    const term = await startQkt(['terminal', 'run', '--flash', flashPath, '--port', pty.b, ...extra]);
    running.add(term);
    void term.exited.then(() => running.delete(term));
    return term;
  };
  const connect = async (pty: PtyPair) => {
    const client = new LinkClient(await openSerial(pty.a), { baseTimeoutMs: 1500 });
    return { client, params: await client.negotiate() };
  };

  const outcomes = { resumed: 0, alreadyAccepted: 0, fromZero: 0 };
  for (const n of points) {
    const flashPath = `${dir}/cut-${n}.img`;
    copyFileSync(base, flashPath);

    // First life: the terminal dies at its nth flash operation, in the middle of the injection.
    const pty1 = await pair();
    const term1 = await run(flashPath, pty1, ['--power-cut-after', String(n)]);
    const c1 = await connect(pty1);
    const first = injectBatch(c1.client, c1.params, b.sealed, { chunkBytes }).then(
      () => 'completed',
      () => 'failed',
    );
    const code = await term1.exited;
    await c1.client.close().catch(() => undefined);
    t.equal(code, 137, `N=${n}: the terminal died as after a power loss`);
    t.equal(await first, 'failed', `N=${n}: the first injection did not complete`);
    t.match(term1.stderr(), /power cut/);
    await pty1.close();
    ptys.delete(pty1);

    // Power back: the same flash file, no fault; the host runs the injection again.
    const pty2 = await pair();
    const term2 = await run(flashPath, pty2, []);
    t.match(term2.ready, { event: 'ready', enrolled: true, terminalId: 'T1' });
    const c2 = await connect(pty2);
    const r: InjectResult = await injectBatch(c2.client, c2.params, b.sealed, { chunkBytes });
    if (r.alreadyAccepted) outcomes.alreadyAccepted++;
    else if (r.resumedFromBits > 0) outcomes.resumed++;
    else outcomes.fromZero++;
    t.ok(verifyReceipt(deviceKey, decodeReceipt(r.receipt)), `N=${n}: receipt verifies`);
    const st = await c2.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    t.match(st, { state: 'ready', pool: { storedKeyBits: b.bits, staging: null, lastSeq: b.seq, batches: [{ bits: b.bits, seq: b.seq }] } }, `N=${n}: complete`);
    t.equal((st['pool'] as { batches: unknown[] }).batches.length, 1, `N=${n}: exactly once`);
    await c2.client.close();
    t.equal(await term2.stop(), 0, `N=${n}: the restarted terminal stops cleanly`);
    await pty2.close();
    ptys.delete(pty2);

    // The keys on the flash file are the batch's, byte for byte.
    const flash = NorFlash.open(flashPath);
    const keys = drainPool(flash);
    flash.close();
    t.ok(Buffer.from(keys).equals(b.keys), `N=${n}: keys byte-identical`);
  }
  t.comment(`cut points N = ${points.join(', ')}; re-runs: ${JSON.stringify(outcomes)}`);
  t.ok(outcomes.resumed > 0, 'some re-runs resumed mid-batch');
});
