// The carrier on a real drive a test engineer points at (`qkt hil run --carrier /media/usb0`, or
// QKT_HIL_CARRIER): in a scratch folder on it, batches go on and come back byte-identical, a
// receipt marks delivery (ciphertext kept until the KMD collects), collect wipes it, and a reopen
// sees the same state.
import t from 'tap';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { makeBatch } from '../host-tools/test-support/module-rig.js';
import { encodeReceipt, makeReceipt } from '../firmware/crypto/receipt.js';
import { parseSealedHeader } from '../firmware/crypto/batch.js';

const drive = process.env['QKT_HIL_CARRIER'];

t.test('carrier on the given drive', { skip: drive ? false : 'no drive given (qkt hil run --carrier DIR, or QKT_HIL_CARRIER)' }, async (t) => {
  if (!existsSync(drive!)) throw new Error(`${drive} does not exist`);
  const dir = join(drive!, `qkt-hil-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(dir);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = new Uint8Array(randomBytes(32));
  const carrier = Carrier.init(dir, { carrierId: 'hil-car', kmdId: 'hil-kmd' });
  const batches = ['T1', 'T2', 'T3'].map((terminalId, i) => ({ terminalId, b: makeBatch(key, { terminalId, bits: 256 * 1024, seq: i + 1 }) }));
  for (const { b } of batches) t.equal(carrier.addBatch(b.sealed).outcome, 'added');
  const again = Carrier.open(dir);
  for (const { terminalId, b } of batches) {
    const e = again.batchFor(terminalId);
    t.ok(e, `${terminalId} batch is offered`);
    t.equal(Buffer.compare(again.readBatch(e!), b.sealed), 0, `${terminalId} batch byte-identical after reopen`);
  }
  const { terminalId, b } = batches[0]!;
  const info = parseSealedHeader(b.sealed);
  const receipt = encodeReceipt(makeReceipt(key, { terminalId, batchId: b.batchId, seq: b.seq, bits: b.bits, headerDigest: info.headerDigest }));
  again.recordReceipt(terminalId, Buffer.from(b.batchId).toString('hex'), receipt);
  const st = Carrier.open(dir).status();
  t.equal(st.batches.length, 2, 'two batches still pending');
  t.equal(st.delivered.length, 1, 'one delivered');
  t.equal(st.damaged.length, 0, 'nothing damaged');
  t.equal(Carrier.open(dir).batchFor(terminalId), undefined, 'a delivered batch is never offered again');
  const file = join(dir, 'batches', `${terminalId}-${Buffer.from(b.batchId).toString('hex')}.qkb`);
  t.ok(existsSync(file), 'its ciphertext stays until the KMD verifies the receipt');
  Carrier.open(dir).markCollected([`${terminalId}-${Buffer.from(b.batchId).toString('hex')}`]);
  t.notOk(existsSync(file), 'wiped once collected');
  t.match(Carrier.open(dir).status(), { delivered: [{ state: 'collected', ciphertextBytes: 0 }], receiptsPending: 0 });
});
