// `kmd collect` with version 2 receipts: the terminal's live batch list retires, at the station,
// every older batch the terminal no longer holds: one whose carrier was lost (now stale), one
// whose last message was lost to a power cut; and never one the terminal still holds. A forged
// receipt activates and wipes nothing, and collect cut between its steps finishes on a re-run.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { Group, KeysCmd } from '../../firmware/link/groups.js';
import { startRig } from '../test-support/module-rig.js';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatch, markOnCarrier, readOutbox } from './export.js';
import { collectReceipts } from './collect.js';
import { Carrier, JOURNAL_FILE } from '../carrier/carrier.js';
import { Journal } from '../carrier/journal.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { encodeReceipt, makeReceipt } from '../../firmware/crypto/receipt.js';
import { injectBatch } from '../link/inject.js';
import { StationStore } from '../station/store.js';
import { runQkt } from '../../hil/cli.js';

/** A KMD home with terminal T1 enrolled, its station store, and T1's module on an in-process link. */
async function setup(t: Test) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const flash = NorFlash.fromImage(readFileSync(join(dir, 'T1.img')));
  const deviceKey = home.deviceKey('T1');
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const rig = await startRig({ flash, deviceKey, terminalId: 'T1' });
  t.teardown(() => rig.close());
  return { dir, home, deviceKey, store, rig };
}

t.test('a v2 receipt retires at the station the older batches the terminal no longer holds', async (t) => {
  const { dir, home, deviceKey, store, rig } = await setup(t);

  // Four exports: A (delivered, then used up but its last message lost), B (its carrier lost),
  // C (delivered, still holding keys), D (delivered now: its receipt does the work).
  const [A, B, C, D] = [1, 2, 3, 4].map(() => exportBatch(home, 'T1', 4096, { station: store }));
  const visit = async (e: NonNullable<typeof A>, carrierName: string) => {
    const carrier = Carrier.init(join(dir, carrierName), { carrierId: carrierName, kmdId: home.config.kmdId });
    carrier.addBatch(readOutbox(e));
    markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);
    const r = await injectBatch(rig.client, rig.params, carrier.readBatch(carrier.batchFor('T1')!));
    carrier.recordReceipt('T1', r.batchId, r.receipt);
    return collectReceipts(home, carrier, { station: store });
  };
  t.same((await visit(A!, 'c1')).retired, [], 'nothing older than A');
  // The terminal spends all of A; the station sees none of it (the messages never arrived).
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(512 - 32) });
  t.same((await visit(C!, 'c3')).retired, [{ terminalId: 'T1', batchId: A!.record.batchId, bits: 4096 }, { terminalId: 'T1', batchId: B!.record.batchId, bits: 4096 }], 'A (used up) and B (stale, below C) retired');
  const left = store.status('T1');
  t.same(left.batches.map((b) => b.seq), [3, 4], 'C, which the terminal still holds, and D stay');
  t.same((await visit(D!, 'c4')).retired, [], 'C is listed live in D\'s receipt: kept');
  t.same(store.status('T1').batches.map((b) => b.seq), [3, 4]);
  deviceKey.fill(0);
});

t.test('a receipt collected late, for a batch the station already retired, still counts as delivered', async (t) => {
  const { dir, home, deviceKey, store, rig } = await setup(t);
  const [A, B] = [1, 2].map(() => exportBatch(home, 'T1', 4096, { station: store }));
  const deliver = async (e: NonNullable<typeof A>, name: string) => {
    const carrier = Carrier.init(join(dir, name), { carrierId: name, kmdId: home.config.kmdId });
    carrier.addBatch(readOutbox(e));
    markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);
    const r = await injectBatch(rig.client, rig.params, carrier.readBatch(carrier.batchFor('T1')!));
    carrier.recordReceipt('T1', r.batchId, r.receipt);
    return carrier;
  };
  const c1 = await deliver(A!, 'c1'); // c1 travels on; its receipt is collected last
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(512 - 32) });
  const c2 = await deliver(B!, 'c2');
  t.match(collectReceipts(home, c2, { station: store }), { collected: [{ batchId: B!.record.batchId }], retired: [{ batchId: A!.record.batchId }] });
  const late = collectReceipts(home, c1, { station: store });
  t.match(late, { collected: [{ batchId: A!.record.batchId }], rejected: [], activatedBits: 0 }, 'delivered, nothing to activate');
  t.ok(home.terminal('T1').batches.find((b) => b.batchId === A!.record.batchId)?.deliveredAt, 'the KMD marks it delivered');
  t.same(collectReceipts(home, c1, { station: store }).collected, [], 'and the carrier does not offer it again');
  deviceKey.fill(0);
});

t.test('a forged receipt wipes nothing; collect quarantines it, the batch injects for real and collects', async (t) => {
  const { dir, home, deviceKey, store, rig } = await setup(t);
  const e = exportBatch(home, 'T1', 4096, { station: store });
  const carrier = Carrier.init(join(dir, 'c1'), { carrierId: 'c1', kmdId: home.config.kmdId });
  carrier.addBatch(readOutbox(e));
  markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);
  const entry = carrier.batchFor('T1')!;
  const sealed = carrier.readBatch(entry);
  // Something on the port claiming to be T1 answers with a receipt that names the batch (all of it
  // public, from the header) under a key it made up.
  const info = parseSealedHeader(sealed);
  const forged = encodeReceipt(makeReceipt(new Uint8Array(32).fill(0x5a), { terminalId: 'T1', batchId: info.header.batchId, seq: info.header.seq, bits: info.header.bits, headerDigest: info.headerDigest }));
  carrier.recordReceipt('T1', entry.batchId, forged);
  t.same(new Uint8Array(readFileSync(entry.file)), sealed, 'the ciphertext is not wiped');
  t.equal(carrier.batchFor('T1'), undefined, 'not offered while the receipt awaits the KMD');

  const first = collectReceipts(home, carrier, { station: store });
  t.match(first, { collected: [], rejected: [{ id: entry.id, reason: 'receipt MAC does not verify', quarantined: true }], activatedBits: 0 });
  t.notOk(home.terminal('T1').batches[0]!.deliveredAt, 'the KMD does not mark it delivered');
  t.equal(store.batch('T1', info.header.batchId).active, false, 'no station key activated');
  t.match(carrier.history().at(-1), { event: 'rejected', id: entry.id, reason: 'receipt MAC does not verify' });
  t.equal(carrier.batchFor('T1')?.id, entry.id, 'the batch is offered again');

  // The real terminal: the batch injects, its receipt verifies, the ciphertext is wiped.
  const r = await injectBatch(rig.client, rig.params, carrier.readBatch(carrier.batchFor('T1')!));
  t.equal(r.alreadyAccepted, false, 'injected for real');
  carrier.recordReceipt('T1', r.batchId, r.receipt);
  const second = collectReceipts(home, carrier, { station: store });
  t.match(second, { collected: [{ terminalId: 'T1', batchId: e.record.batchId }], rejected: [], activatedBits: 4096 });
  t.notOk(existsSync(entry.file), 'wiped after the KMD verified the receipt');
  t.same(carrier.history().slice(-2).map((x) => x.event), ['collected', 'wiped']);
  t.match(carrier.status(), { receiptsPending: 0, sealedBytes: 0, delivered: [{ id: entry.id, state: 'collected' }], quarantined: [{ id: entry.id }] });
  t.same(collectReceipts(home, carrier, { station: store }), { carrierId: 'c1', collected: [], rejected: [], activatedBits: 0, retired: [] }, 'idempotent');
  deviceKey.fill(0);
});

t.test('collect cut between its steps: a re-run finishes with one activation and one wipe', async (t) => {
  const { dir, home, deviceKey, store, rig } = await setup(t);
  const e = exportBatch(home, 'T1', 4096, { station: store });
  const carrier = Carrier.init(join(dir, 'c1'), { carrierId: 'c1', kmdId: home.config.kmdId });
  carrier.addBatch(readOutbox(e));
  markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);
  const entry = carrier.batchFor('T1')!;
  const r = await injectBatch(rig.client, rig.params, carrier.readBatch(entry));
  carrier.recordReceipt('T1', r.batchId, r.receipt);

  // Cut 1: the KMD and station are updated, the carrier never hears of it.
  const cut = Object.assign(Object.create(Object.getPrototypeOf(carrier) as object) as Carrier, carrier, {
    markCollected: () => {
      throw new Error('power cut');
    },
  });
  t.throws(() => collectReceipts(home, cut, { station: store }), /power cut/);
  t.ok(home.terminal('T1').batches[0]!.deliveredAt);
  t.ok(existsSync(entry.file), 'not wiped yet');
  const again = collectReceipts(home, Carrier.open(carrier.path), { station: store });
  t.match(again, { collected: [{ batchId: e.record.batchId }], activatedBits: 0 }, 'collected; the keys were active already');
  t.notOk(existsSync(entry.file));

  // Cut 2: the carrier's `collected` line is written, the wipe is not (seen from the journal).
  const e2 = exportBatch(home, 'T1', 4096, { station: store });
  carrier.addBatch(readOutbox(e2));
  markOnCarrier(home, 'T1', e2.record.batchId, carrier.carrierId);
  const entry2 = carrier.batchFor('T1')!;
  const r2 = await injectBatch(rig.client, rig.params, carrier.readBatch(entry2));
  carrier.recordReceipt('T1', r2.batchId, r2.receipt);
  new Journal(join(carrier.path, JOURNAL_FILE)).append({ event: 'collected', ids: [entry2.id] });
  t.ok(existsSync(entry2.file));
  const reopened = Carrier.open(carrier.path);
  t.notOk(existsSync(entry2.file), 'open() wipes a collected batch it finds');
  t.match(reopened.history().at(-1), { event: 'wiped', id: entry2.id, recovered: true });
  deviceKey.fill(0);
});

t.test('qkt kmd collect exits 5 with the result on stdout when it rejects a receipt', async (t) => {
  const { dir, home, store } = await setup(t);
  const e = exportBatch(home, 'T1', 4096, { station: store });
  const carrier = Carrier.init(join(dir, 'c1'), { carrierId: 'c1', kmdId: home.config.kmdId });
  carrier.addBatch(readOutbox(e));
  markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);
  const entry = carrier.batchFor('T1')!;
  const info = parseSealedHeader(carrier.readBatch(entry));
  carrier.recordReceipt('T1', entry.batchId, encodeReceipt(makeReceipt(new Uint8Array(32).fill(0x5a), { terminalId: 'T1', batchId: info.header.batchId, seq: info.header.seq, bits: info.header.bits, headerDigest: info.headerDigest })));
  store.close();
  const r = await runQkt(['kmd', 'collect', '--home', join(dir, 'kmd'), '--carrier', join(dir, 'c1'), '--json']);
  t.equal(r.code, 5, 'not success: a script sees the rejection');
  t.match(JSON.parse(r.stdout), { collected: [], rejected: [{ id: entry.id, reason: 'receipt MAC does not verify', quarantined: true }] }, 'the whole result is still the one JSON document');
  t.equal(r.stderr.trim(), 'qkt: 1 receipt(s) rejected (see the list); the rest were collected');
  const again = await runQkt(['kmd', 'collect', '--home', join(dir, 'kmd'), '--carrier', join(dir, 'c1'), '--json']);
  t.equal(again.code, 0, 'the quarantined receipt is not rejected twice');
});
