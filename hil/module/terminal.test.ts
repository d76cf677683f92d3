// The terminal module as a whole: boot states, no key byte ever on the wire in a full inject +
// traffic scenario, and an injection cut by a power loss at every flash operation then resumed.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { injectBatch } from '../../host-tools/link/inject.js';
import { createInProcessPair } from '../../host-tools/transports/inproc.js';
import { LinkClient } from '../../host-tools/link/client.js';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { PowerCutError } from '../../firmware/flash/errors.js';
import type { CutMode } from '../../firmware/flash/faults.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { decodeReceipt, verifyReceipt } from '../../firmware/crypto/receipt.js';
import { makeAdminToken } from '../../firmware/crypto/token.js';
import { decodeServiceHeader, encodeServiceHeader, sessionSeal } from '../../firmware/crypto/service.js';
import { Deframer } from '../../firmware/link/framer.js';
import { AdminCmd, Group, InjectCmd, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import { Rc } from '../../firmware/link/errors.js';
import { SECURE_SECTORS } from '../../firmware/secure/secure-area.js';
import { drainPool, enrolled, findWindows, makeBatch, poolOf, startRig } from '../../host-tools/test-support/module-rig.js';
import type { TestBatch } from '../../host-tools/test-support/module-rig.js';

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
const linkError = (rc: number) => ({ name: 'LinkError', rc });

t.test('boot states: ready, unenrolled, selftest-failed, flash-error', async (t) => {
  const ready = await startRig();
  t.match(ready.terminal.status(), { state: 'ready', enrolled: true, terminalId: 'T1', selfTest: { ok: true, failed: [] }, pool: { storedKeyBits: 0, maxKeyBits: 8 * 1024 * 1024 } });
  t.equal(ready.terminal.state, 'ready');
  await ready.close();

  const blank = await startRig({ enroll: false });
  t.match(blank.terminal.status(), { state: 'unenrolled', enrolled: false, terminalId: null, audit: { events: 0 } });
  // Only SYSTEM is served: identity and status, nothing that needs keys.
  t.match(await blank.client.request(Group.SYSTEM, SystemCmd.STATUS, {}), { state: 'unenrolled' });
  await t.rejects(blank.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }), linkError(Rc.NOT_ENROLLED));
  await t.rejects(blank.client.request(Group.ADMIN, AdminCmd.ZEROIZE, { token: new Uint8Array(64) }), linkError(Rc.NOT_ENROLLED));
  await blank.close();

  const failed = await startRig({ terminal: { selfTest: { corrupt: 'poly1305' } } });
  t.match(failed.terminal.status(), { state: 'selftest-failed', selfTest: { ok: false, failed: ['poly1305'] } });
  await t.rejects(failed.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }), linkError(Rc.SELF_TEST_FAILED));
  await t.rejects(failed.client.request(Group.INJECT, InjectCmd.BEGIN, { h: new Uint8Array(60) }), linkError(Rc.SELF_TEST_FAILED));
  await failed.close();
  // The failure is logged in the secure area; a module with working crypto reads it back.
  // (The failed module itself answers AUDIT_LOG with an empty log: it does not mount its secure area.)
  const repaired = await startRig({ flash: failed.flash, deviceKey: failed.deviceKey });
  const log = await repaired.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, {});
  t.match(log, { events: [{ type: 'enrolled' }, { type: 'selftest-failed', detail: /poly1305/ }, { type: 'boot' }] }, 'the failure was logged');
  await repaired.close();

  // A pool region that is not a pool (its journal erased): the module says so and serves no keys.
  const { flash } = enrolled();
  for (let s = SECURE_SECTORS; s < SECURE_SECTORS + 8; s++) flash.erase(s);
  const broken = await startRig({ flash });
  t.match(broken.terminal.status(), { state: 'flash-error', enrolled: true, terminalId: 'T1', reason: String });
  await t.rejects(broken.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }), linkError(Rc.FLASH_ERROR));
  await broken.close();
});

/** The key bytes a service header's ranges name, from the plaintext batches the test made. */
function keysFor(batches: TestBatch[], r: { batchId: Uint8Array; bitOffset: number; bits: number }): Uint8Array {
  const b = batches.find((x) => same(x.batchId, r.batchId));
  if (!b) throw new Error('key range names an unknown batch');
  return b.keys.subarray(r.bitOffset / 8, (r.bitOffset + r.bits) / 8);
}

t.test('no key byte leaves the module: a scan of everything it sent in a full scenario', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const c = rig.client;
  const enc = makeBatch(rig.deviceKey, { bits: 64 * 1024, purpose: 'enc' });
  const auth = makeBatch(rig.deviceKey, { bits: 32 * 1024, purpose: 'auth' });
  const any = makeBatch(rig.deviceKey, { bits: 16 * 1024, purpose: 'any', chunkSize: 512 });
  const batches = [enc, auth, any];
  for (const b of batches) await injectBatch(c, rig.params, b.sealed);
  await injectBatch(c, rig.params, enc.sealed); // re-run: receipt again
  await c.request(Group.SYSTEM, SystemCmd.PARAMS, {});

  // OTP uplinks of several sizes.
  const otp = (await c.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }))['s'] as number;
  for (const n of [0, 1, 31, 200, 1000, 4096]) await c.request(Group.KEYS, KeysCmd.SEAL, { s: otp, d: new Uint8Array(randomBytes(n)) });
  await t.rejects(c.request(Group.KEYS, KeysCmd.OPEN, { s: otp, m: new Uint8Array(200) }));

  // An AEAD session: uplinks, a rekey, downlinks the module opens, a replay it refuses.
  const aead = await c.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', rekeyMessages: 3 });
  const s = aead['s'] as number;
  let last: Uint8Array | undefined;
  for (let i = 0; i < 5; i++) last = (await c.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(randomBytes(100 + i)) }))['m'] as Uint8Array;
  const range = decodeServiceHeader(last!).header.keyIds[0]!;
  for (const counter of [0, 1]) {
    const head = encodeServiceHeader({ mode: 'aead', keyIds: [range], counter });
    const m = Buffer.concat([head, sessionSeal(keysFor(batches, range), counter, new Uint8Array(randomBytes(64)), head, 'down')]);
    await c.request(Group.KEYS, KeysCmd.OPEN, { s, m });
    if (counter === 1) await t.rejects(c.request(Group.KEYS, KeysCmd.OPEN, { s, m }), linkError(Rc.AUTH_FAILED));
  }
  await c.request(Group.KEYS, KeysCmd.CLOSE, { s });

  // Refusals: foreign batch, bad admin token; then status and the audit log.
  await t.rejects(injectBatch(c, rig.params, makeBatch(rig.deviceKey, { terminalId: 'T9', bits: 8192 }).sealed));
  await t.rejects(c.request(Group.ADMIN, AdminCmd.ZEROIZE, { token: makeAdminToken(new Uint8Array(32), { terminalId: 'T1', command: 'zeroize', counter: 1 }) }));
  await c.request(Group.SYSTEM, SystemCmd.STATUS, {});
  await c.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 64 });
  await c.request(Group.ADMIN, AdminCmd.ZEROIZE, { token: makeAdminToken(rig.deviceKey, { terminalId: 'T1', command: 'zeroize', counter: 1 }) });
  await c.request(Group.SYSTEM, SystemCmd.STATUS, {});

  const wire = Buffer.concat(rig.sent);
  const bodies = Buffer.concat(new Deframer(1 << 20).push(wire));
  t.ok(wire.length > 8_000, `scanned ${wire.length} bytes on the wire, ${bodies.length} in decoded frame bodies`);
  for (const [name, secret] of [
    ['enc batch keys', enc.keys],
    ['auth batch keys', auth.keys],
    ['any batch keys', any.keys],
    ['device key', rig.deviceKey],
  ] as const) {
    t.same(findWindows(wire, secret), [], `no 8-byte window of the ${name} on the wire`);
    t.same(findWindows(bodies, secret), [], `no 8-byte window of the ${name} in any frame body`);
  }
  // The scan would see a leak: a window planted in the stream is found.
  t.same(findWindows(Buffer.concat([bodies, enc.keys.subarray(1000, 1008)]), enc.keys), [1000], 'control: a planted window is found');
});

/** The sweep of 4b: inject `b` on a module booted from `image`, with the power cut at the n-th flash operation. */
async function cutRun(image: Uint8Array, deviceKey: Uint8Array, b: TestBatch, chunkBytes: number, n: number, mode: CutMode, seed: number) {
  const flash = NorFlash.fromImage(image);
  let cuts = 0;
  // A module whose power is cut answers nothing more: its cable goes dead (here: the host's end is
  // closed), as `terminal run` exits. Left answering from RAM, the in-process module would let the
  // host's BEGIN-again (after INTERNAL) talk to a module no real device could be.
  let rig: Awaited<ReturnType<typeof startRig>> | undefined = undefined;
  rig = await startRig({
    flash,
    deviceKey,
    terminal: {
      onPowerCut: () => {
        cuts++;
        void rig?.client.close();
      },
    },
  });
  flash.faults.cutAfter(n, mode, seed);
  let error: unknown;
  await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes }).catch((e: unknown) => (error = e));
  await rig.close();
  return { image: flash.snapshot(), cut: flash.powerLost, cuts, error };
}

t.test('power cut at every flash operation of an injection: reboot, re-inject, complete exactly once', async (t) => {
  const deviceKey = new Uint8Array(randomBytes(32));
  const base = enrolled('T1', deviceKey).flash.snapshot();
  const b = makeBatch(deviceKey, { bits: 16 * 256 * 8, chunkSize: 256 });
  // Four sealed chunks per request: the module stages chunk by chunk whatever the host sends, so
  // the flash operations are the same as with one per request, for fewer round trips.
  const chunkBytes = 4 * parseSealedHeader(b.sealed).sealedChunkSize;

  // Count the flash operations (programs and erases) one injection performs after boot.
  let ops: number;
  {
    const flash = NorFlash.fromImage(base);
    const rig = await startRig({ flash, deviceKey });
    const m0 = flash.faults.mutations;
    await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes });
    ops = flash.faults.mutations - m0;
    await rig.close();
  }
  t.ok(ops > 16, `an injection of 16 chunks performs ${ops} flash operations`);

  let exercised = 0;
  let resumed = 0;
  let answeredDone = 0;
  const modes: Array<[CutMode, number]> = [
    ['torn', 1],
    ['clean', 1],
    ['after', 1],
  ];
  for (const [mode, seed] of modes) {
    for (let n = 1; n <= ops; n++) {
      const what = `${mode}/${seed} cut at op ${n}/${ops}`;
      const run = await cutRun(base, deviceKey, b, chunkBytes, n, mode, seed);
      if (!run.cut || run.error === undefined || run.cuts !== 1) {
        t.fail(`${what}: the cut should have happened and failed the injection (cut ${run.cut}, reported ${run.cuts})`);
        continue;
      }
      exercised++;
      // Power comes back: a fresh module on the flash as the cut left it.
      const flash = NorFlash.fromImage(run.image);
      const rig = await startRig({ flash, deviceKey });
      if (rig.terminal.state !== 'ready') {
        t.fail(`${what}: module boots ${rig.terminal.state}`, { status: rig.terminal.status() });
        await rig.close();
        continue;
      }
      const r = await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes });
      if (r.alreadyAccepted) answeredDone++;
      else if (r.resumedFromBits > 0) resumed++;
      const pool = poolOf(rig.terminal);
      const ok =
        verifyReceipt(deviceKey, decodeReceipt(r.receipt)) &&
        pool['storedKeyBits'] === b.bits &&
        pool['staging'] === null &&
        pool['lastSeq'] === b.seq &&
        (pool['batches'] as unknown[]).length === 1;
      await rig.close();
      const keys = drainPool(flash);
      if (!ok || !same(keys, b.keys)) t.fail(`${what}: batch not complete exactly once with the same keys`, { pool });
    }
  }
  t.equal(exercised, modes.length * ops, `${exercised} cut points exercised, every one ends with the batch complete exactly once`);
  t.ok(resumed > 0, `${resumed} re-runs resumed mid-batch`);
  t.ok(answeredDone > 0, `${answeredDone} re-runs found the batch already accepted (cut after the commit)`);
});

t.test('a second cut during the recovery (boot and re-inject) still ends complete exactly once', async (t) => {
  const deviceKey = new Uint8Array(randomBytes(32));
  const base = enrolled('T1', deviceKey).flash.snapshot();
  const b = makeBatch(deviceKey, { bits: 8 * 256 * 8, chunkSize: 256 });
  const chunkBytes = parseSealedHeader(b.sealed).sealedChunkSize;
  let runs = 0;
  for (const n of [3, 9, 15, 21, 27]) {
    const first = await cutRun(base, deviceKey, b, chunkBytes, n, 'torn', n);
    if (!first.cut) continue;
    for (const m of [1, 2, 4, 8, 16]) {
      // Second cut, counted from power-up: it may land in the boot's own writes.
      const flash = NorFlash.fromImage(first.image);
      flash.faults.cutAfter(m, 'torn', m);
      try {
        const rig = await startRig({ flash, deviceKey });
        await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes }).catch(() => undefined);
        await rig.close();
      } catch (e) {
        if (!(e instanceof PowerCutError)) throw e;
      }
      const third = NorFlash.fromImage(flash.snapshot());
      const rig = await startRig({ flash: third, deviceKey });
      await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes });
      t.match(poolOf(rig.terminal), { storedKeyBits: b.bits, staging: null, batches: [{ bits: b.bits }] }, `cut at ${n}, then at ${m}`);
      t.equal((poolOf(rig.terminal)['batches'] as unknown[]).length, 1);
      await rig.close();
      t.ok(same(drainPool(third), b.keys), `cut at ${n}, then at ${m}: keys byte-identical`);
      runs++;
    }
  }
  t.ok(runs >= 20, `${runs} double cuts`);
});

t.test('LOW_WATERMARK reaches every open link: closing one link detaches that link, not the newest', async (t) => {
  const rig = await startRig({ terminal: { lowWatermarkBits: 4096 } });
  t.teardown(() => rig.close());
  await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 8192 }).sealed);
  // Cables B (closes) then C (stays), attached after the rig's own (A): closing B, which is not
  // the newest link, must detach B and leave C on the list.
  const [hostB, devB] = createInProcessPair({ names: ['B', 'module'] });
  rig.terminal.attach(devB);
  const [hostC, devC] = createInProcessPair({ names: ['C', 'module'] });
  rig.terminal.attach(devC);
  const c = new LinkClient(hostC, { baseTimeoutMs: 2000 });
  await c.negotiate();
  await hostB.close();
  const seen: string[] = [];
  // Wait for the two events themselves; the bound turns a missing one into a failure, not a hang.
  let both!: () => void;
  const two = new Promise<void>((r) => (both = r));
  const see = (x: string) => {
    seen.push(x);
    if (seen.length === 2) both();
  };
  rig.client.onEvent((m) => see(`A ${m.command}`));
  c.onEvent((m) => see(`C ${m.command}`));
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(600) }); // 632 of 1024 bytes: below 4096 bits
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([two, new Promise<void>((r) => (bound = setTimeout(r, 5000)))]);
  clearTimeout(bound);
  t.same(seen.sort(), ['A 0', 'C 0'], 'both open links got the event after another one closed');
  await c.close();
});
