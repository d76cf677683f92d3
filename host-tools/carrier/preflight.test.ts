// The carrier preflight (preflight.ts) and removeNewCarrier, on folders, with the kernel's answers
// simulated where a test cannot make them as any user (EROFS, EACCES, a full drive): each refusal
// has its typed code and names the carrier and the fix; the probe leaves nothing behind.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, mkdirSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Carrier, CarrierError, removeNewCarrier } from './carrier.js';
import { batchToSend, checkCarrierWritable, preflightCarrier, RECEIPT_ROOM_BYTES, sealedBytesFor } from './preflight.js';
import { makeBatch } from '../test-support/module-rig.js';

const errnoError = (code: string) => Object.assign(new Error(`${code}: simulated`), { code });
const code = (c: string) => ({ name: 'CarrierError', code: c });
const roomy = () => ({ bavail: 1e6, bsize: 4096, files: 1000, ffree: 1000 });

function carrier(t: Test): Carrier {
  return Carrier.init(join(t.testdir({}), 'car'), { carrierId: 'C-01', kmdId: 'kmd.A' });
}

t.test('a sound carrier passes, and the probe leaves no file', async (t) => {
  const c = carrier(t);
  const before = [readdirSync(c.path).sort(), readdirSync(join(c.path, 'receipts'))];
  t.doesNotThrow(() => preflightCarrier(c.path, { statfs: roomy }));
  t.doesNotThrow(() => preflightCarrier(c.path)); // the real statfs and probe
  t.same([readdirSync(c.path).sort(), readdirSync(join(c.path, 'receipts'))], before);
});

t.test('missing, not a folder, not a carrier: NOT_FOUND / NOT_A_CARRIER, "is the drive mounted?"', async (t) => {
  const dir = t.testdir({ file: 'x', empty: {}, other: { 'a.txt': 'x' } });
  t.throws(() => preflightCarrier(join(dir, 'usb0')), { ...code('NOT_FOUND'), message: /usb0 does not exist: is the drive mounted\?/ });
  t.notOk(existsSync(join(dir, 'usb0')), 'nothing made');
  t.throws(() => preflightCarrier(join(dir, 'file')), { ...code('NOT_A_CARRIER'), message: /is not a folder/ });
  t.throws(() => preflightCarrier(join(dir, 'empty')), { ...code('NOT_A_CARRIER'), message: /is not a carrier \(no carrier\.json\): is the drive mounted\?/ });
  t.throws(() => preflightCarrier(join(dir, 'other')), code('NOT_A_CARRIER'));
  t.same(readdirSync(join(dir, 'empty')), [], 'nothing written into a folder that is not a carrier');
});

t.test('EROFS and EACCES from the write probe: READ_ONLY and NOT_WRITABLE, naming the carrier and the fix', async (t) => {
  const c = carrier(t);
  const seen: string[] = [];
  const probe = (e: string) => (folder: string) => {
    seen.push(folder);
    throw errnoError(e);
  };
  t.throws(() => preflightCarrier(c.path, { probe: probe('EROFS') }), { ...code('READ_ONLY'), message: new RegExp(`^carrier ${c.path} is on a drive mounted read-only, so the terminal's receipt could not be stored; nothing was sent: remount it read-write`) });
  t.throws(() => preflightCarrier(c.path, { probe: probe('EACCES') }), { ...code('NOT_WRITABLE'), message: /is not writable by this user .*run qkt as the user who owns the carrier/ });
  t.throws(() => preflightCarrier(c.path, { probe: probe('EPERM') }), code('NOT_WRITABLE'));
  t.throws(() => preflightCarrier(c.path, { probe: probe('ENOSPC') }), code('NO_ROOM'));
  t.throws(() => preflightCarrier(c.path, { probe: probe('EIO') }), { code: 'EIO' }, 'anything else is not dressed up');
  t.equal(seen[0], c.path, 'the carrier folder is probed');
  // Only receipts/ refusing (a drive whose subfolder is another user's): still refused.
  t.throws(() => preflightCarrier(c.path, { probe: (f) => { if (f.endsWith('receipts')) throw errnoError('EACCES'); } }), code('NOT_WRITABLE'));
  const load = 'no batch could be stored on it; nothing was exported';
  t.throws(() => checkCarrierWritable(c.path, { probe: probe('EROFS'), consequence: load }), { message: new RegExp(`so ${load}: remount`) }, 'a load says what a load lost');
});

t.test('room: too few free bytes or inodes is NO_ROOM; a filesystem without inode counts is not refused for them', async (t) => {
  const c = carrier(t);
  const fs = (bavail: number, files = 1000, ffree = 1000) => () => ({ bavail, bsize: 4096, files, ffree });
  t.throws(() => preflightCarrier(c.path, { statfs: fs(4) }), { ...code('NO_ROOM'), message: /has 16\.0 KiB free and needs at least 64\.0 KiB, so the terminal's receipt could not be stored; nothing was sent: free space/ });
  t.doesNotThrow(() => preflightCarrier(c.path, { statfs: fs(RECEIPT_ROOM_BYTES / 4096) }), 'exactly the margin is enough');
  t.throws(() => preflightCarrier(c.path, { statfs: fs(1e6, 1000, 1) }), { ...code('NO_ROOM'), message: /inodes/ });
  t.doesNotThrow(() => preflightCarrier(c.path, { statfs: fs(1e6, 0, 0) }), 'FAT counts no inodes');
  t.doesNotThrow(() => preflightCarrier(c.path, { statfs: fs(0), needBytes: 0 }), 'needBytes 0: no room check (zeroize frees a token)');
  t.doesNotThrow(() => preflightCarrier(c.path, { statfs: () => { throw errnoError('ENOSYS'); } }), 'no statfs: not refused on that');
  t.throws(() => checkCarrierWritable(c.path, { statfs: fs(100), needBytes: 1 << 20 }), code('NO_ROOM'), 'a load asks room for its batches');
  t.ok(sealedBytesFor(1 << 20) > (1 << 20) / 8, 'a sealed batch is its key bytes and more');
  t.equal(sealedBytesFor(-1), 0);
});

t.test('batchToSend: the batch and its bytes; a damaged one is DAMAGED_BATCH with its fix; none is undefined', async (t) => {
  const c = carrier(t);
  const key = new Uint8Array(randomBytes(32));
  const a = makeBatch(key, { terminalId: 'T1', bits: 8192, seq: 1 });
  const b = makeBatch(key, { terminalId: 'T-2', bits: 8192, seq: 1 });
  const ea = c.addBatch(a.sealed);
  const eb = c.addBatch(b.sealed);
  t.same(batchToSend(c, 'T1')!.sealed, a.sealed);
  t.equal(batchToSend(c, 'T9'), undefined, 'nothing for T9');
  truncateSync(ea.file, 100);
  t.throws(() => batchToSend(c, 'T1'), { ...code('DAMAGED_BATCH'), message: new RegExp(`^carrier C-01: terminal T1's batch ${ea.batchId.slice(0, 8)} is damaged \\(T1-${ea.batchId}\\.qkb: 100 bytes, but its header says \\d+\\); nothing was sent: back at the KMD, void it \\(qkt kmd void --home H --terminal T1 --batch ${ea.batchId.slice(0, 8)} --reason damaged\\)`) });
  t.equal(batchToSend(c, 'T')?.id, undefined, 'T is not T1 or T-2');
  writeFileSync(eb.file, Buffer.concat([Buffer.from('XXXX'), Buffer.from(b.sealed).subarray(4)]));
  t.throws(() => batchToSend(c, 'T-2'), { ...code('DAMAGED_BATCH'), message: /header does not parse/ }, 'a terminal id with "-" in it');
  t.ok(new CarrierError('DAMAGED_BATCH', 'x') instanceof Error);
});

t.test('removeNewCarrier: takes away a carrier that holds nothing, keeps one that holds anything', async (t) => {
  const dir = t.testdir({ drive: { 'lost+found': {} } });
  // A folder the load made: removed with the folder.
  const made = join(dir, 'made');
  Carrier.init(made, { carrierId: 'C', kmdId: 'K' });
  t.equal(removeNewCarrier(made, { folder: true }), true);
  t.notOk(existsSync(made), 'the folder the load made is gone');
  // An existing empty drive: back to what it held (lost+found), the mount point stays.
  const drive = join(dir, 'drive');
  Carrier.init(drive, { carrierId: 'C', kmdId: 'K' });
  writeFileSync(join(drive, '.qkt.lock'), '{}');
  t.equal(removeNewCarrier(drive, { folder: false }), true);
  t.same(readdirSync(drive).sort(), ['.qkt.lock', 'lost+found'], 'only what was there before (and the running command\'s lock)');
  // A carrier holding a batch, a token or anything else is kept whole.
  const held = join(dir, 'held');
  const c = Carrier.init(held, { carrierId: 'C', kmdId: 'K' });
  c.addBatch(makeBatch(new Uint8Array(32), { terminalId: 'T1', bits: 8192, seq: 1 }).sealed);
  t.equal(removeNewCarrier(held, { folder: true }), false);
  t.ok(existsSync(join(held, 'carrier.json')), 'kept');
  const other = join(dir, 'other');
  Carrier.init(other, { carrierId: 'C', kmdId: 'K' });
  mkdirSync(join(other, 'tokens'));
  t.equal(removeNewCarrier(other, { folder: true }), false);
  t.ok(existsSync(join(other, 'carrier.json')), 'kept');
  t.equal(removeNewCarrier(join(dir, 'gone'), { folder: true }), true, 'nothing there: nothing to do');
  // Half an init (no manifest yet): cleaned up too.
  const half = join(dir, 'half');
  mkdirSync(join(half, 'batches'), { recursive: true });
  writeFileSync(join(half, 'journal.jsonl'), '');
  t.equal(removeNewCarrier(half, { folder: true }), true);
  t.notOk(existsSync(half));
});
