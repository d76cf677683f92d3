// A carrier from a stranger's USB drive: symlinks, FIFOs, devices and oversize files under the
// carrier's own names must never be followed, blocked on, zeroed, appended to or read whole.
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { sealBatch, parseSealedHeader } from '../../firmware/crypto/batch.js';
import { encodeReceipt, makeReceipt } from '../../firmware/crypto/receipt.js';
import { Carrier, BATCH_DIR, RECEIPT_DIR, JOURNAL_FILE, MANIFEST_FILE, RECEIPT_MAX_BYTES } from './carrier.js';

function makeBatch(terminalId: string, seq: number) {
  const deviceKey = new Uint8Array(randomBytes(32));
  const batchId = new Uint8Array(randomBytes(16));
  const sealed = sealBatch({
    deviceKey,
    header: { batchId, terminalId, seq, purpose: 'enc', bits: 512, chunkSize: 24, createdAt: 1_700_000_000_000 },
    keys: new Uint8Array(randomBytes(64)),
  });
  const hex = Buffer.from(batchId).toString('hex');
  return { sealed, deviceKey, terminalId, batchId: hex, id: `${terminalId}-${hex}`, seq };
}

function receiptFor(b: ReturnType<typeof makeBatch>): Uint8Array {
  const info = parseSealedHeader(b.sealed);
  return encodeReceipt(makeReceipt(b.deviceKey, { terminalId: b.terminalId, batchId: info.header.batchId, seq: b.seq, bits: 512, headerDigest: info.headerDigest }));
}

/** A carrier folder and, beside it, a victim file outside the carrier. */
function setup(t: Test) {
  const base = t.testdir();
  const dir = join(base, 'carrier');
  const victim = join(base, 'victim');
  const victimBytes = Buffer.from('precious data that lives outside the carrier\n');
  writeFileSync(victim, victimBytes);
  const c = Carrier.init(dir, { carrierId: 'C1', kmdId: 'K1' });
  return { base, dir, victim, victimBytes, c };
}

function mkfifo(t: Test, path: string): boolean {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) {
    t.comment('mkfifo is not available: FIFO checks skipped');
    return false;
  }
  return true;
}

/** Open the carrier and take its status in a child process: a hang fails after 10 s instead of hanging the run. */
function statusInChild(dir: string): { status: number | null; signal: NodeJS.Signals | null; out: string; err: string } {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  const mod = pathToFileURL(join(import.meta.dirname, 'carrier.ts')).href;
  const script = `const { Carrier } = await import(${JSON.stringify(mod)}); process.stdout.write(JSON.stringify(Carrier.open(${JSON.stringify(dir)}).status()));`;
  const r = spawnSync(process.execPath, [...loader, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}

t.test('a symlinked .qkb with its receipt present: the link target is never zeroed or unlinked', async (t) => {
  const { dir, victim, victimBytes, c } = setup(t);
  const a = makeBatch('T1', 1);
  c.addBatch(a.sealed);
  c.recordReceipt('T1', a.batchId, receiptFor(a));
  c.markCollected([a.id]); // the KMD verified it: wipes the real batch file
  const link = join(dir, BATCH_DIR, `${a.id}.qkb`);
  t.notOk(existsSync(link));
  symlinkSync(victim, link);

  const s = Carrier.open(dir).status(); // scan() -> finishWipe for the collected receipt
  t.same(readFileSync(victim), victimBytes, 'victim untouched');
  t.ok(lstatSync(link).isSymbolicLink(), 'the link itself is left for a human to look at');
  t.match(s.damaged, [{ file: link, reason: /symbolic link/ }]);
  t.equal(s.delivered.length, 1);
  t.equal(c.history().filter((r) => r.event === 'wiped').length, 1, 'no second wiped line for the link');

  // recordReceipt again (finishing an "interrupted" call) and a receipt symlinked to the victim too.
  t.match(c.recordReceipt('T1', a.batchId, receiptFor(a)), { outcome: 'present' });
  t.same(readFileSync(victim), victimBytes, 'victim untouched after recordReceipt');
});

t.test('a batch symlink is never read through, and addBatch replaces the link, not its target', async (t) => {
  const { dir, victim, victimBytes, c } = setup(t);
  const a = makeBatch('T2', 1);
  const link = join(dir, BATCH_DIR, `${a.id}.qkb`);
  symlinkSync(victim, link);
  t.match(c.status().damaged, [{ file: link, reason: /symbolic link/ }]);
  t.throws(() => c.readBatch({ id: a.id }), { code: 'DAMAGED_BATCH' });
  t.match(c.addBatch(a.sealed), { outcome: 'replaced-damaged' });
  t.same(readFileSync(victim), victimBytes, 'victim untouched');
  t.ok(lstatSync(link).isFile(), 'the link was replaced by the batch');
  t.same(new Uint8Array(c.readBatch({ id: a.id })), a.sealed);
});

t.test('a symlinked journal.jsonl: the carrier is refused and the target gets no lines', async (t) => {
  const { dir, victim, victimBytes } = setup(t);
  const j = join(dir, JOURNAL_FILE);
  unlinkSync(j);
  symlinkSync(victim, j);
  t.throws(() => Carrier.open(dir), { name: 'CarrierError', code: 'UNSAFE_FILE', message: /journal\.jsonl: a symbolic link/ });
  t.same(readFileSync(victim), victimBytes, 'victim untouched');
  // A dangling link (O_CREAT would otherwise create its target).
  unlinkSync(j);
  const ghost = join(dir, '..', 'ghost');
  symlinkSync(ghost, j);
  t.throws(() => Carrier.open(dir), { code: 'UNSAFE_FILE' });
  t.notOk(existsSync(ghost), 'the dangling target was not created');
});

t.test('carrier.json, batches/ and receipts/ must not be links or special files', async (t) => {
  const { base, dir, victim } = setup(t);
  const m = join(dir, MANIFEST_FILE);
  const real = join(base, 'real-manifest.json');
  renameSync(m, real);
  symlinkSync(real, m);
  t.throws(() => Carrier.open(dir), { code: 'UNSAFE_FILE', message: /carrier\.json: a symbolic link/ });
  unlinkSync(m);
  renameSync(real, m);
  t.ok(Carrier.open(dir));

  const outside = join(base, 'outside');
  mkdirSync(outside);
  rmSync(join(dir, BATCH_DIR), { recursive: true });
  symlinkSync(outside, join(dir, BATCH_DIR));
  t.throws(() => Carrier.open(dir), { code: 'UNSAFE_FILE', message: /batches: a symbolic link/ });
  unlinkSync(join(dir, BATCH_DIR));
  mkdirSync(join(dir, BATCH_DIR));

  rmSync(join(dir, RECEIPT_DIR), { recursive: true });
  writeFileSync(join(dir, RECEIPT_DIR), 'x');
  t.throws(() => Carrier.open(dir), { code: 'UNSAFE_FILE', message: /receipts: not a folder/ });
  unlinkSync(join(dir, RECEIPT_DIR));
  mkdirSync(join(dir, RECEIPT_DIR));

  const j = join(dir, JOURNAL_FILE);
  unlinkSync(j);
  if (mkfifo(t, j)) {
    const r = statusInChild(dir);
    t.not(r.signal, 'SIGTERM', 'open did not block on a FIFO journal');
    t.not(r.status, 0);
    t.match(r.err, /UNSAFE_FILE|a FIFO, not a regular file/);
  }
  t.ok(existsSync(victim));
});

t.test('a FIFO receipt does not block: the open returns and reports it damaged', async (t) => {
  const { dir, c } = setup(t);
  const a = makeBatch('T3', 1);
  c.addBatch(a.sealed);
  const fifo = join(dir, RECEIPT_DIR, `${a.id}.qkr`);
  if (!mkfifo(t, fifo)) return;
  const fifoBatch = join(dir, BATCH_DIR, `T3-${'ee'.repeat(16)}.qkb`);
  mkfifo(t, fifoBatch);
  const r = statusInChild(dir);
  t.equal(r.signal, null, 'the child was not killed by the 10 s guard');
  t.equal(r.status, 0, r.err);
  const s = JSON.parse(r.out) as ReturnType<Carrier['status']>;
  // In any order: the batch ids are random, and the listing follows the file names.
  const byFile = <T extends { file: string }>(l: T[]) => [...l].sort((x, y) => (x.file < y.file ? -1 : 1));
  t.match(
    byFile(s.damaged),
    byFile([
      { file: fifo, reason: /FIFO, not a regular file/ },
      { file: join(dir, BATCH_DIR, `${a.id}.qkb`), reason: 'its receipt is damaged' },
      { file: fifoBatch, reason: /FIFO, not a regular file/ },
    ]),
  );
  t.same(s.batches, [], 'nothing offered');
  t.same(Carrier.open(dir).receipts(), [], 'kmd collect sees no receipt');
});

t.test('a receipt linked to /dev/zero is reported damaged without reading it; an oversize receipt too', async (t) => {
  const { dir, c } = setup(t);
  if (!existsSync('/dev/zero')) return t.comment('no /dev/zero');
  const a = makeBatch('T4', 1);
  const b = makeBatch('T4', 2);
  c.addBatch(a.sealed);
  c.addBatch(b.sealed);
  const zero = join(dir, RECEIPT_DIR, `${a.id}.qkr`);
  symlinkSync('/dev/zero', zero);
  const big = join(dir, RECEIPT_DIR, `${b.id}.qkr`);
  writeFileSync(big, new Uint8Array(RECEIPT_MAX_BYTES + 1));
  const r = statusInChild(dir);
  t.equal(r.signal, null, 'returned within 10 s');
  t.equal(r.status, 0, r.err);
  const s = JSON.parse(r.out) as ReturnType<Carrier['status']>;
  t.match(s.damaged.find((d) => d.file === zero), { bytes: 0, reason: /symbolic link/ });
  t.match(s.damaged.find((d) => d.file === big), { bytes: RECEIPT_MAX_BYTES + 1, reason: /640 bytes, more than the 639/ });
  t.equal(s.delivered.length, 0);
  t.equal(s.batches.length, 0, 'batches with unreadable receipts are not offered');
  t.throws(() => c.recordReceipt('T4', a.batchId, receiptFor(a)), { code: 'ALREADY_DELIVERED' });
  t.throws(() => c.markCollected([a.id]), { code: 'UNKNOWN_RECEIPT' });
});

t.test('a normal carrier still delivers, wipes and collects', async (t) => {
  const { dir, c } = setup(t);
  const a = makeBatch('T5', 1);
  c.addBatch(a.sealed);
  c.recordReceipt('T5', a.batchId, receiptFor(a));
  const again = Carrier.open(dir);
  t.equal(again.receipts().length, 1);
  again.markCollected([a.id]);
  t.match(again.status(), { damaged: [], receiptsPending: 0, delivered: [{ id: a.id, collected: true }] });
});

t.test('a symlinked quarantine/ never takes a rejected receipt off the carrier', async (t) => {
  const { base, dir, c } = setup(t);
  const a = makeBatch('T6', 1);
  c.addBatch(a.sealed);
  c.recordReceipt('T6', a.batchId, receiptFor(a));
  const outside = join(base, 'elsewhere');
  mkdirSync(outside);
  symlinkSync(outside, join(dir, 'quarantine'));
  t.throws(() => c.rejectReceipt(a.id, 'receipt MAC does not verify'), { code: 'UNSAFE_FILE' });
  t.throws(() => Carrier.open(dir), { code: 'UNSAFE_FILE' });
  t.same(readdirSync(outside), [], 'nothing moved outside');
  t.ok(existsSync(join(dir, RECEIPT_DIR, `${a.id}.qkr`)), 'the receipt stays where it was');
});
