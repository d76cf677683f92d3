// INJECT group end to end over the link: every refusal leaves the pool as it was, the delivery
// receipt verifies and binds the batch, and a transfer cut by a cable pull at any chunk resumes.
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { injectBatch } from '../../../host-tools/link/inject.js';
import { withFaults } from '../../../host-tools/transports/faults.js';
import type { FaultyTransport } from '../../../host-tools/transports/faults.js';
import { parseSealedHeader } from '../../../firmware/crypto/batch.js';
import { decodeReceipt, verifyReceipt } from '../../../firmware/crypto/receipt.js';
import { makeAdminToken } from '../../../firmware/crypto/token.js';
import { AdminCmd, Group, InjectCmd } from '../../../firmware/link/groups.js';
import { Rc } from '../../../firmware/link/errors.js';
import { drainPool, enrolled, makeBatch, poolOf, poolRegion, startRig } from '../../../host-tools/test-support/module-rig.js';
import { KeyPool } from '../../../firmware/keypool/key-pool.js';
import { POOL_OPTIONS } from '../../../firmware/secure/enroll.js';
import type { Rig } from '../../../host-tools/test-support/module-rig.js';

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** A refusal at BEGIN: the error code, then the pool's status and its raw flash bytes as before. */
async function refusedAtBegin(t: Test, rig: Rig, sealed: Uint8Array, rc: number, what: string): Promise<void> {
  const pool = poolOf(rig.terminal);
  const raw = poolRegion(rig.flash);
  await t.rejects(injectBatch(rig.client, rig.params, sealed), { name: 'LinkError', rc }, what);
  t.same(poolOf(rig.terminal), pool, `${what}: pool status unchanged`);
  t.ok(same(poolRegion(rig.flash), raw), `${what}: pool flash bytes unchanged`);
}

t.test('refusals at BEGIN leave the pool exactly as it was', async (t) => {
  t.test('not enrolled: a blank module refuses and its flash stays blank', async (t) => {
    const rig = await startRig({ enroll: false });
    t.teardown(() => rig.close());
    const b = makeBatch(new Uint8Array(32).fill(7), { bits: 8192 });
    await refusedAtBegin(t, rig, b.sealed, Rc.NOT_ENROLLED, 'NOT_ENROLLED');
    t.ok(rig.flash.snapshot().every((x) => x === 0xff), 'not one bit of the flash was programmed');
    t.match(rig.terminal.status(), { state: 'unenrolled', enrolled: false, terminalId: null });
  });

  t.test('wrong terminal, foreign device key, tampered header or tag', async (t) => {
    const rig = await startRig();
    t.teardown(() => rig.close());
    const first = makeBatch(rig.deviceKey, { bits: 8192 });
    await injectBatch(rig.client, rig.params, first.sealed); // a pool with something in it

    // Sealed under T1's device key but addressed to T2: the tag verifies, the address does not.
    await refusedAtBegin(t, rig, makeBatch(rig.deviceKey, { terminalId: 'T2', bits: 8192 }).sealed, Rc.WRONG_TERMINAL, 'WRONG_TERMINAL');
    // Addressed to T1 but sealed under another module's device key.
    await refusedAtBegin(t, rig, makeBatch(new Uint8Array(randomBytes(32)), { bits: 8192 }).sealed, Rc.AUTH_FAILED, 'foreign device key');

    const good = makeBatch(rig.deviceKey, { bits: 8192 });
    const info = parseSealedHeader(good.sealed);
    for (const [name, at] of [
      ['batch id byte', 10],
      ['seq byte', info.headerLength - 20],
      ['last header byte', info.headerLength - 1],
      ['tag byte', info.tagOffset + 3],
    ] as const) {
      const bad = Uint8Array.from(good.sealed);
      bad[at]! ^= 0x01;
      let rc: number = Rc.AUTH_FAILED;
      try {
        parseSealedHeader(bad);
      } catch {
        rc = Rc.BAD_REQUEST; // a flip that breaks the header's format is refused before the tag
      }
      await refusedAtBegin(t, rig, bad, rc, `tampered ${name}`);
    }
    // The untampered batch still goes in afterwards.
    const r = await injectBatch(rig.client, rig.params, good.sealed);
    t.equal(r.bits, 8192);
    t.match(poolOf(rig.terminal), { storedKeyBits: 16384, staging: null });
  });

  t.test('stale seq, and replay of an older batch after the pool was emptied', async (t) => {
    const rig = await startRig();
    t.teardown(() => rig.close());
    const a = makeBatch(rig.deviceKey, { bits: 8192, seq: 200 });
    await injectBatch(rig.client, rig.params, a.sealed);
    await refusedAtBegin(t, rig, makeBatch(rig.deviceKey, { bits: 8192, seq: 150 }).sealed, Rc.STALE_BATCH, 'older seq');
    await refusedAtBegin(t, rig, makeBatch(rig.deviceKey, { bits: 8192, seq: 200 }).sealed, Rc.STALE_BATCH, 'same seq, other batch');

    // Zeroize (authorized): batch a is gone, the anti-rollback counter stays; a replay of a is stale.
    const token = makeAdminToken(rig.deviceKey, { terminalId: rig.terminalId, command: 'zeroize', counter: 1 });
    await rig.client.request(Group.ADMIN, AdminCmd.ZEROIZE, { token });
    t.match(poolOf(rig.terminal), { storedKeyBits: 0, batches: [], lastSeq: 200 });
    await refusedAtBegin(t, rig, a.sealed, Rc.STALE_BATCH, 'replay of an accepted, zeroized batch');
  });

  t.test('re-injecting the batch just accepted answers done with the same receipt', async (t) => {
    const rig = await startRig();
    t.teardown(() => rig.close());
    const a = makeBatch(rig.deviceKey, { bits: 16384 });
    const first = await injectBatch(rig.client, rig.params, a.sealed);
    const pool = poolOf(rig.terminal);
    const raw = poolRegion(rig.flash);
    const again = await injectBatch(rig.client, rig.params, a.sealed);
    t.equal(again.alreadyAccepted, true);
    t.equal(again.sealedBytesSent, 0, 'no chunk was sent again');
    t.ok(same(again.receipt, first.receipt), 'the same receipt, byte for byte');
    t.same(poolOf(rig.terminal), pool, 'pool status unchanged');
    t.ok(same(poolRegion(rig.flash), raw), 'pool flash bytes unchanged');
  });

  t.test('not enough room: a batch that does not fit a nearly full 8 Mbit pool', async (t) => {
    const rig = await startRig();
    t.teardown(() => rig.close());
    const max = poolOf(rig.terminal)['maxKeyBits'] as number;
    t.equal(max, 8 * 1024 * 1024);
    const big = makeBatch(rig.deviceKey, { bits: max - 32768 });
    await injectBatch(rig.client, rig.params, big.sealed);
    t.match(poolOf(rig.terminal), { storedKeyBits: max - 32768 });
    await refusedAtBegin(t, rig, makeBatch(rig.deviceKey, { bits: 32768 + 8 }).sealed, Rc.NO_SPACE, 'NO_SPACE');
    // What does fit still goes in: the refusal reserved nothing.
    await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 32768 }).sealed);
    t.match(poolOf(rig.terminal), { storedKeyBits: max, staging: null });
  });

  t.test('self-test failure: SELF_TEST_FAILED, state selftest-failed, flash untouched', async (t) => {
    const healthy = await startRig();
    await injectBatch(healthy.client, healthy.params, makeBatch(healthy.deviceKey, { bits: 8192 }).sealed);
    const pool = poolOf(healthy.terminal);
    await healthy.close();

    const rig = await startRig({ flash: healthy.flash, deviceKey: healthy.deviceKey, terminal: { selfTest: { corrupt: 'aes-256-gcm' } } });
    t.match(rig.terminal.status(), { state: 'selftest-failed', selfTest: { ok: false, failed: ['aes-256-gcm'] }, reason: /aes-256-gcm/ });
    const raw = poolRegion(rig.flash);
    await t.rejects(injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 8192 }).sealed), { name: 'LinkError', rc: Rc.SELF_TEST_FAILED });
    t.ok(same(poolRegion(rig.flash), raw), 'pool flash bytes unchanged');
    await rig.close();

    // Rebooted with working crypto, the module finds its pool as it was.
    const back = await startRig({ flash: healthy.flash, deviceKey: healthy.deviceKey });
    t.teardown(() => back.close());
    t.equal(back.terminal.state, 'ready');
    t.same(poolOf(back.terminal), pool);
  });
  t.end();
});

t.test('a tampered chunk: AUTH_FAILED at that chunk, costs no flash, the batch never live; the good copy resumes', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 8192 }).sealed);
  const b = makeBatch(rig.deviceKey, { bits: 16 * 256 * 8, chunkSize: 256 });
  const info = parseSealedHeader(b.sealed);
  const bad = Uint8Array.from(b.sealed);
  bad[info.chunksOffset + 5 * info.sealedChunkSize + 17]! ^= 0x80; // chunk 5 of 16

  const progress: number[] = [];
  await t.rejects(
    injectBatch(rig.client, rig.params, bad, { chunkBytes: info.sealedChunkSize, onProgress: (p) => progress.push(p.committedBytes) }),
    { name: 'LinkError', rc: Rc.AUTH_FAILED, message: /chunk 5/ },
  );
  t.equal(Math.max(...progress), 5 * info.sealedChunkSize, 'chunks 0-4 were taken, chunk 5 refused');
  // The chunks before it authenticated and stay staged; nothing is live (commit needs all).
  t.match(poolOf(rig.terminal), { storedKeyBits: 8192, staging: { durableBits: 5 * 256 * 8 } });
  // Resending the bad chunk again and again costs no flash: a stranger on the cable cannot wear it.
  const m0 = rig.flash.faults.mutations;
  for (let i = 0; i < 5; i++) await t.rejects(injectBatch(rig.client, rig.params, bad, { chunkBytes: info.sealedChunkSize }), { name: 'LinkError', rc: Rc.AUTH_FAILED });
  t.equal(rig.flash.faults.mutations, m0, 'no flash operation for refused chunks');
  t.match(rig.terminal.status(), { audit: { pendingRefusals: 6 } });

  // The untampered batch then goes in, resuming at the refused chunk, once.
  const r = await injectBatch(rig.client, rig.params, b.sealed);
  t.equal(r.resumedFromBits, 5 * 256 * 8);
  t.match(poolOf(rig.terminal), { storedKeyBits: 8192 + b.bits, staging: null });
  t.equal((poolOf(rig.terminal)['batches'] as unknown[]).length, 2);
});

t.test('a staged sector lost at boot: the durable offset is cut back and the resume is chunk-aligned, then completes', async (t) => {
  const rig = await startRig();
  const b = makeBatch(rig.deviceKey, { bits: 12 * 1024 * 8, chunkSize: 1024 });
  const info = parseSealedHeader(b.sealed);
  const part = b.sealed.subarray(0, info.chunksOffset + 9 * info.sealedChunkSize);
  // Stop after 9 chunks (9216 bytes: sectors 0..2 of 3264 payload bytes each).
  await t.rejects(injectBatch(rig.client, rig.params, part, { chunkBytes: info.sealedChunkSize }));
  await rig.close();
  const pool = KeyPool.mount(rig.flash, POOL_OPTIONS);
  const staged = pool.inspect().batches[0]!;
  t.equal(staged.durableBytes, 9 * 1024);
  // Damage the data header of the batch's second sector: mount must cut the durable offset back to 3264.
  rig.flash.flipStoredBit(staged.sectors[1]! * pool.inspect().sectorSize + 2, 1);
  const again = await startRig({ flash: rig.flash, deviceKey: rig.deviceKey });
  t.teardown(() => again.close());
  t.match(poolOf(again.terminal), { staging: { durableBits: 3264 * 8 } }, 'cut back to a sector boundary, not a chunk boundary');
  const r = await injectBatch(again.client, again.params, b.sealed);
  t.equal(r.resumedFromBits, 3 * 1024 * 8, 'resumed at the chunk boundary below it');
  t.match(poolOf(again.terminal), { storedKeyBits: b.bits, staging: null });
  await again.close();
  t.ok(Buffer.from(drainPool(rig.flash)).equals(Buffer.from(b.keys)), 'the keys are the batch, byte for byte');
});

t.test('a half-staged batch (cable pulled) is dropped by the BEGIN of another batch', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const a = makeBatch(rig.deviceKey, { bits: 16 * 256 * 8, chunkSize: 256 });
  const info = parseSealedHeader(a.sealed);
  let ft: FaultyTransport | undefined;
  await rig.reconnect({ wrap: (h) => (ft = withFaults(h)) });
  await t.rejects(
    injectBatch(rig.client, rig.params, a.sealed, {
      chunkBytes: info.sealedChunkSize,
      onProgress: (p) => {
        if (p.committedBytes >= 6 * info.sealedChunkSize) ft!.pull('test');
      },
    }),
  );
  await rig.reconnect();
  t.match(poolOf(rig.terminal), { storedKeyBits: 0, batches: [], staging: { bits: a.bits, durableBits: Number } });
  t.ok(((poolOf(rig.terminal)['staging'] as { durableBits: number }).durableBits) >= 6 * 256 * 8, 'the pull left a half-staged batch');

  // Its carrier went elsewhere; the next carrier brings a newer batch: the half-staged one goes.
  const b = makeBatch(rig.deviceKey, { bits: 8192 });
  const r = await injectBatch(rig.client, rig.params, b.sealed);
  t.equal(r.resumedFromBits, 0);
  t.match(poolOf(rig.terminal), { storedKeyBits: 8192, staging: null, lastSeq: b.seq });
  t.equal((poolOf(rig.terminal)['batches'] as unknown[]).length, 1, 'only the new batch is live');
  // The dropped one can no longer come back: it is older than the batch now accepted.
  await t.rejects(injectBatch(rig.client, rig.params, a.sealed), { name: 'LinkError', rc: Rc.STALE_BATCH });
});

t.test('the delivery receipt verifies under the device key and binds terminal, batch, seq, bits', async (t) => {
  const rig = await startRig({ terminalId: 'FTU-0042' });
  t.teardown(() => rig.close());
  const b = makeBatch(rig.deviceKey, { terminalId: 'FTU-0042', bits: 3 * 8192, seq: 777 });
  const r = await injectBatch(rig.client, rig.params, b.sealed);
  const receipt = decodeReceipt(r.receipt);
  t.ok(verifyReceipt(rig.deviceKey, receipt), 'MAC verifies under the device key');
  t.equal(receipt.terminalId, 'FTU-0042');
  t.ok(same(receipt.batchId, b.batchId), 'batch id');
  t.equal(receipt.seq, 777);
  t.equal(receipt.bits, 3 * 8192);
  t.ok(same(receipt.headerDigest, parseSealedHeader(b.sealed).headerDigest), 'names exactly the header that was sealed');
  t.notOk(verifyReceipt(new Uint8Array(randomBytes(32)), receipt), 'not under another key');
  for (const forged of [{ ...receipt, seq: 778 }, { ...receipt, bits: 4 * 8192 }, { ...receipt, terminalId: 'FTU-0043' }, { ...receipt, batchId: new Uint8Array(16) }]) {
    t.notOk(verifyReceipt(rig.deviceKey, forged), 'any changed field breaks the MAC');
  }
  t.same(Object.keys(r).includes('receipt'), true);
  // The host tool returns the receipt, not the module's key material or state.
  t.equal(r.bits, 3 * 8192);
});

t.test('cable pull at every chunk boundary: the injection resumes and ends complete exactly once', async (t) => {
  const deviceKey = new Uint8Array(randomBytes(32));
  const CHUNKS = 16;
  // One sealed batch for the whole sweep: each run starts from a freshly enrolled module.
  const b = makeBatch(deviceKey, { bits: CHUNKS * 256 * 8, chunkSize: 256 });
  const info = parseSealedHeader(b.sealed);
  const chunkBytes = info.sealedChunkSize;

  // Dry run: how many bytes have crossed the host's cable when the module acknowledges chunk k.
  const bytesAt: number[] = [];
  {
    let ft: FaultyTransport | undefined;
    const rig = await startRig({ ...enrolled('T1', deviceKey), wrapHost: (h) => (ft = withFaults(h)) });
    const r = await injectBatch(rig.client, rig.params, b.sealed, {
      chunkBytes,
      onProgress: (p) => {
        const k = p.committedBytes / chunkBytes;
        bytesAt[k] ??= ft!.stats.bytes;
      },
    });
    t.equal(r.resumedFromBits, 0);
    await rig.close();
  }
  t.equal(bytesAt.length, CHUNKS + 1);

  for (let k = 0; k <= CHUNKS; k++) {
    let ft: FaultyTransport | undefined;
    const rig = await startRig({ ...enrolled('T1', deviceKey), wrapHost: (h) => (ft = withFaults(h, { pullAfterBytes: bytesAt[k]! })) });
    await t.rejects(injectBatch(rig.client, rig.params, b.sealed, { chunkBytes }), `k=${k}: the first run dies with the cable`);
    t.ok(ft!.stats.pulled, `k=${k}: pulled`);
    await rig.reconnect();
    const r = await injectBatch(rig.client, rig.params, b.sealed, { chunkBytes });
    if (k > 0) t.ok(r.resumedFromBits >= k * 256 * 8, `k=${k}: resumed from ${r.resumedFromBits} bits, not from zero`);
    t.ok(verifyReceipt(deviceKey, decodeReceipt(r.receipt)), `k=${k}: receipt verifies`);
    const pool = poolOf(rig.terminal);
    t.match(pool, { storedKeyBits: b.bits, staging: null, lastSeq: b.seq }, `k=${k}: complete`);
    t.equal((pool['batches'] as unknown[]).length, 1, `k=${k}: exactly once`);
    await rig.close();
    t.ok(same(drainPool(rig.flash), b.keys), `k=${k}: keys byte-identical`);
  }
});

t.test('INJECT without an open transfer, or COMMIT too early, is refused', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.CHUNK, { t: 99, o: 0, d: new Uint8Array(4) }), { name: 'LinkError', rc: Rc.NO_TRANSFER });
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.COMMIT, { t: 99 }), { name: 'LinkError', rc: Rc.NO_TRANSFER });
  const b = makeBatch(rig.deviceKey, { bits: 4 * 256 * 8, chunkSize: 256 });
  const info = parseSealedHeader(b.sealed);
  const begin = await rig.client.request(Group.INJECT, InjectCmd.BEGIN, { h: b.sealed.subarray(0, info.chunksOffset) });
  const id = begin['t'] as number;
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.COMMIT, { t: id }), { name: 'LinkError', rc: Rc.BAD_STATE });
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.CHUNK, { t: id, o: 17, d: new Uint8Array(4) }), { name: 'LinkError', rc: Rc.OUT_OF_ORDER, details: { committed: 0 } });
  await rig.client.request(Group.INJECT, InjectCmd.ABORT, { t: id });
  t.match(poolOf(rig.terminal), { staging: null, storedKeyBits: 0 });
});

t.test(
  'a BEGIN refused for room does not drop another batch left half-staged',
  async (t) => {
    const rig = await startRig();
    t.teardown(() => rig.close());
    await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 8 * 1024 * 1024 - 65536 }).sealed);
    const a = makeBatch(rig.deviceKey, { bits: 32768, chunkSize: 256 });
    const sealedChunk = parseSealedHeader(a.sealed).sealedChunkSize;
    let ft: FaultyTransport | undefined;
    await rig.reconnect({ wrap: (h) => (ft = withFaults(h)) });
    await t.rejects(
      injectBatch(rig.client, rig.params, a.sealed, {
        chunkBytes: sealedChunk,
        onProgress: (p) => {
          if (p.committedBytes >= 4 * sealedChunk) ft!.pull('test');
        },
      }),
    );
    await rig.reconnect();
    const pool = poolOf(rig.terminal);
    t.match(pool, { staging: { bits: 32768 } }, 'a half-staged batch');
    await t.rejects(injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 65536 + 8 }).sealed), { name: 'LinkError', rc: Rc.NO_SPACE });
    t.same(poolOf(rig.terminal), pool, 'the refusal left the pool as it was');
  },
);
