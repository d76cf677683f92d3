// Enrolment and re-enrolment (enroll.ts): a factory-reset module of an enrolled terminal gets a
// new device key and generation, every batch of the old key is void (KMD and station), sequence
// numbers go on forward, and the module works with the new key; a live module is never
// re-enrolled; a cut between the steps is completed by running it again; a --flash that is not
// a regular file, or a failure before the ledger is written, changes nothing.
import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { AdminCmd, Group, SystemCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { startRig } from '../test-support/module-rig.js';
import { KmdHome } from './home.js';
import { enrollTerminal, reenrollTerminal } from './enroll.js';
import { exportBatch, markOnCarrier, readOutbox } from './export.js';
import { issueToken, readToken } from './tokens.js';
import { kmdStatus } from './status.js';
import { injectBatch } from '../link/inject.js';
import { StationStore } from '../station/store.js';

function setup(t: Test) {
  const dir = t.testdir({ car: {} });
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 22 });
  const image = join(dir, 'T1.img');
  enrollTerminal(home, 'T1', image);
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  return { dir, home, image, store };
}

/** The module on its image file, as `terminal run` hosts it; closed (image flushed) by the caller. */
async function module(home: KmdHome, image: string) {
  const flash = NorFlash.open(image);
  const rig = await startRig({ flash, deviceKey: home.deviceKey('T1'), terminalId: 'T1' });
  return {
    rig,
    close: async () => {
      await rig.close();
      flash.close();
    },
  };
}

t.test('enrol again: refused while enrolled or live; after a factory reset, a new key, old batches void, seq forward', async (t) => {
  const { dir, home, image, store } = setup(t);
  t.throws(() => enrollTerminal(home, 'T1', join(dir, 'other.img')), {
    code: 'ALREADY_ENROLLED',
    message: /^terminal T1 is already enrolled at this KMD; to enrol its module again after a factory reset: qkt kmd enroll --home \S+ --terminal T1 --flash FILE --again$/,
  });
  t.throws(() => reenrollTerminal(home, 'T9', join(dir, 'x.img')), { code: 'NOT_ENROLLED', message: /qkt kmd enroll --home .* --terminal T9 --flash FILE \(without --again\)/ });
  const oldKey = home.terminal('T1').deviceKey;

  // A batch delivered (the module holds it) and one still in the outbox.
  const a = exportBatch(home, 'T1', 8192, { station: store });
  const b = exportBatch(home, 'T1', 8192, { station: store });
  const bSealed = readOutbox(b); // sealed under the old key
  let m = await module(home, image);
  await injectBatch(m.rig.client, m.rig.params, readOutbox(a));
  await m.close();
  markOnCarrier(home, 'T1', a.record.batchId, 'car1');
  const ra = home.terminal('T1');
  ra.batches[0]!.deliveredAt = home.nowIso(); // as kmd collect marks it
  home.saveTerminal(ra);

  t.throws(() => reenrollTerminal(home, 'T1', image, { station: store }), { code: 'LIVE_MODULE', message: /is a live module of T1 holding this KMD's current device key \(generation 1\): nothing to do; .*factory-reset it first \(qkt kmd token/ });
  t.equal(home.terminal('T1').deviceKey, oldKey, 'refused: nothing changed');
  t.equal(store.status('T1').batches.length, 2);

  // The factory reset, with the KMD's token, as `qkt zeroize --factory-reset` does it.
  issueToken(home, 'T1', 'factory-reset', join(dir, 'car'));
  m = await module(home, image);
  t.same(await m.rig.client.request(Group.ADMIN, AdminCmd.FACTORY_RESET, { token: readToken(join(dir, 'car'), 'T1', 'factory-reset')! }), { reset: true });
  await m.close();

  const r = reenrollTerminal(home, 'T1', image, { station: store });
  t.equal(r.record.generation, 2, 'generation 2');
  t.equal(r.record.deviceKey, '', 'the result carries no key');
  t.same(
    r.voided.voided.map((v) => [v.seq, v.was]),
    [
      [1, 'collected'],
      [2, 'exported'],
    ],
    'every old batch void, also the collected one',
  );
  const rec = home.terminal('T1');
  t.not(rec.deviceKey, oldKey, 'a new device key');
  t.notOk(readFileSync(home.path('terminals', 'T1.json'), 'utf8').includes(oldKey), 'the old key is gone from the home');
  t.equal(rec.nextSeq, 3, 'seq goes on forward');
  t.equal(store.status('T1').storedKeyBits, 0, "the station's room is free");
  t.notOk(existsSync(b.file), 'the outbox holds nothing sealed under the old key');
  t.match(kmdStatus(home, { station: store }), { terminals: [{ terminalId: 'T1', generation: 2, nextSeq: 3 }], totals: { void: { batches: 2 } } });

  // The module works under the new key; a batch sealed under the old one does not authenticate.
  m = await module(home, image);
  t.teardown(() => m.close());
  const st = await m.rig.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.equal(st['terminalId'], 'T1');
  const refused = await injectBatch(m.rig.client, m.rig.params, bSealed).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(refused instanceof LinkError && refused.rc === Rc.AUTH_FAILED, `the old key's batch is refused: ${String(refused)}`);
  const c = exportBatch(home, 'T1', 8192, { station: store });
  t.equal(c.record.seq, 3);
  t.match(await injectBatch(m.rig.client, m.rig.params, readOutbox(c)), { seq: 3 }, 'a new batch injects');
});

t.test('a cut between the steps: running it again completes; a replacement module on a new image', async (t) => {
  const { dir, home, store } = setup(t);
  exportBatch(home, 'T1', 8192, { station: store });
  const img = join(dir, 'blank.img');
  NorFlash.open(img).close(); // a blank module
  t.throws(() => reenrollTerminal(home, 'T1', img, { station: store, afterStep: (s) => { if (s === 'voided') throw new Error('cut'); } }), { message: 'cut' });
  t.equal(home.terminal('T1').generation, 1, 'still generation 1, batches void');
  t.equal(kmdStatus(home, { station: store }).totals.void.batches, 1);
  t.throws(() => reenrollTerminal(home, 'T1', img, { station: store, afterStep: (s) => { if (s === 'record') throw new Error('cut'); } }), { message: 'cut' });
  t.equal(home.terminal('T1').generation, 2, 'the new key is recorded before the image is written');
  const r = reenrollTerminal(home, 'T1', img, { station: store });
  t.equal(r.record.generation, 3, 'the re-run completes it (a generation skipped)');
  t.same(r.voided.voided, [], 'nothing more to void');
  t.throws(() => reenrollTerminal(home, 'T1', img, { station: store }), { code: 'LIVE_MODULE' }, 'now it is live');
  // A new module (no image yet) for a replaced terminal.
  t.equal(reenrollTerminal(home, 'T1', join(dir, 'new.img'), { station: store }).newImage, true);
  t.end();
});

t.test('an image that is not provably blank or reset is refused, unchanged', (t) => {
  const { dir, home, store } = setup(t);
  const other = join(dir, 'T2.img');
  enrollTerminal(home, 'T2', other);
  t.throws(() => reenrollTerminal(home, 'T1', other, { station: store }), { code: 'LIVE_MODULE', message: /is a live module enrolled as T2; only a blank or factory-reset module/ });
  const junk = join(dir, 'junk.img');
  NorFlash.open(junk).close();
  const bytes = readFileSync(junk);
  bytes.fill(0x5a, 0, 64); // an unreadable secure area: an older format, or damage
  writeFileSync(junk, bytes);
  t.throws(() => reenrollTerminal(home, 'T1', junk, { station: store }), { code: 'LIVE_MODULE', message: /secure area is unreadable/ });
  writeFileSync(join(dir, 'short.img'), Buffer.alloc(100));
  t.throws(() => reenrollTerminal(home, 'T1', join(dir, 'short.img'), { station: store }), { code: 'CORRUPT' });
  t.equal(home.terminal('T1').generation, 1, 'T1 unchanged');
  t.end();
});

t.test('--again on a name that is not a regular file, or a failure before the ledger: nothing changes', (t) => {
  const { dir, home, store } = setup(t);
  exportBatch(home, 'T1', 8192, { station: store });
  const record = () => readFileSync(home.path('terminals', 'T1.json'), 'utf8');
  // All of `kmd status --json` but the supply's available bits (they accrue with the clock).
  const status = () => JSON.stringify({ ...kmdStatus(home, { station: store }), supply: { ...kmdStatus(home, { station: store }).supply, availableBits: 0 } });
  const before = { record: record(), status: status() };
  const unchanged = (what: string) => {
    t.equal(record(), before.record, `${what}: the record (key, generation, batches) unchanged`);
    t.equal(status(), before.status, `${what}: kmd status identical`);
  };

  // The review's repro: a dangling symlink looked like "no image".
  const dangling = join(dir, 'dangling.img');
  symlinkSync(join(dir, 'nonexistent', 'new.img'), dangling);
  t.throws(() => reenrollTerminal(home, 'T1', dangling, { station: store }), { code: 'BAD_INPUT', message: /dangling\.img: a symbolic link, not a regular file; a module flash image is a regular file/ });
  unchanged('dangling symlink');
  t.notOk(existsSync(join(dir, 'nonexistent')), 'nothing created through the link');
  // A link to a real blank image: refused too (the image is named by its own path).
  const blank = join(dir, 'blank.img');
  NorFlash.open(blank).close();
  const link = join(dir, 'link.img');
  symlinkSync(blank, link);
  t.throws(() => reenrollTerminal(home, 'T1', link, { station: store }), { code: 'BAD_INPUT', message: /symbolic link/ });
  unchanged('symlink to a blank image');

  const folder = join(dir, 'folder.img');
  mkdirSync(folder);
  t.throws(() => reenrollTerminal(home, 'T1', folder, { station: store }), { code: 'BAD_INPUT', message: /folder\.img: unreadable \(EISDIR\): a directory/ });
  unchanged('directory');

  // A FIFO: an open of it would block for ever, holding the home's lock.
  const fifo = join(dir, 'fifo.img');
  execFileSync('mkfifo', [fifo]);
  t.throws(() => reenrollTerminal(home, 'T1', fifo, { station: store }), { code: 'BAD_INPUT', message: /fifo\.img: a FIFO, not a regular file/ });
  t.throws(() => enrollTerminal(home, 'T5', fifo), { code: 'BAD_INPUT', message: /a FIFO/ }, 'a first enrolment too');
  t.throws(() => enrollTerminal(home, 'T5', dangling), { code: 'BAD_INPUT', message: /a symbolic link/ });
  t.notOk(home.hasTerminal('T5'));
  unchanged('FIFO');

  // A disk full (or read-only) once the new image is made, before the ledger: the image this run
  // created is removed, the ledger untouched.
  const fresh = join(dir, 'fresh.img');
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  t.throws(() => reenrollTerminal(home, 'T1', fresh, { station: store, afterStep: (s) => { if (s === 'image') throw full; } }), { code: 'ENOSPC' });
  unchanged('ENOSPC on a new image');
  t.notOk(existsSync(fresh), 'the new image it made is gone');
  t.notOk(existsSync(`${fresh}.wear`));
  // On an existing blank image: that image is not this run's to remove.
  t.throws(() => reenrollTerminal(home, 'T1', blank, { station: store, afterStep: (s) => { if (s === 'image') throw full; } }), { code: 'ENOSPC' });
  unchanged('ENOSPC on an existing image');
  t.ok(existsSync(blank), 'an existing image is left');

  // A folder the image cannot be created in (EACCES for anyone but root; root skips it).
  const ro = join(dir, 'ro');
  mkdirSync(ro);
  chmodSync(ro, 0o500);
  if (process.getuid?.() !== 0) {
    t.throws(() => reenrollTerminal(home, 'T1', join(ro, 'new.img'), { station: store }), { code: 'EACCES' });
    unchanged('read-only folder');
  }
  chmodSync(ro, 0o700);

  // And after all that, the blank image enrols.
  const r = reenrollTerminal(home, 'T1', blank, { station: store });
  t.equal(r.record.generation, 2);
  t.equal(r.voided.voided.length, 1);
  t.end();
});
