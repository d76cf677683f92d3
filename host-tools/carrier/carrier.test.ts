// Carrier on plain temp folders: layout, refusals, idempotent loads, receipt -> delivered -> collected -> wiped,
// a forged receipt rejected and quarantined,
// recovery of every interrupted step, torn journal lines, collection, status.
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, readdirSync, statSync, truncateSync, unlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { sealBatch, parseSealedHeader } from '../../firmware/crypto/batch.js';
import type { Purpose } from '../../firmware/crypto/batch.js';
import { encodeReceipt, makeReceipt, decodeReceipt, verifyReceipt } from '../../firmware/crypto/receipt.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { Carrier, CarrierError, formatCarrierStatus, BATCH_DIR, RECEIPT_DIR, JOURNAL_FILE, MANIFEST_FILE } from './carrier.js';
import type { CarrierErrorCode } from './carrier.js';
import { Journal } from './journal.js';
import { InputError } from '../input-error.js';

interface TestBatch {
  sealed: Uint8Array;
  deviceKey: Uint8Array;
  terminalId: string;
  batchId: string;
  id: string;
  seq: number;
  bits: number;
}

function makeBatch(terminalId: string, seq: number, opts: { bits?: number; purpose?: Purpose; deviceKey?: Uint8Array; batchId?: Uint8Array } = {}): TestBatch {
  const bits = opts.bits ?? 512;
  const deviceKey = opts.deviceKey ?? new Uint8Array(randomBytes(32));
  const batchId = opts.batchId ?? new Uint8Array(randomBytes(16));
  const sealed = sealBatch({
    deviceKey,
    header: { batchId, terminalId, seq, purpose: opts.purpose ?? 'enc', bits, chunkSize: 24, createdAt: 1_700_000_000_000 },
    keys: new Uint8Array(randomBytes(bits / 8)),
  });
  const hex = Buffer.from(batchId).toString('hex');
  return { sealed, deviceKey, terminalId, batchId: hex, id: `${terminalId}-${hex}`, seq, bits };
}

function receiptFor(b: TestBatch, edit: { seq?: number } = {}): Uint8Array {
  const info = parseSealedHeader(b.sealed);
  return encodeReceipt(
    makeReceipt(b.deviceKey, {
      terminalId: b.terminalId,
      batchId: info.header.batchId,
      seq: edit.seq ?? b.seq,
      bits: b.bits,
      headerDigest: info.headerDigest,
    }),
  );
}

function code(c: CarrierErrorCode) {
  return { name: 'CarrierError', code: c };
}

function events(c: Carrier): string[] {
  return c.history().map((r) => r.event);
}

// t.testdir() re-creates one folder per test; tests that need several take subfolders of it.
const bases = new WeakMap<Test, { dir: string; n: number }>();
function dirOf(t: Test, layout?: Parameters<Test['testdir']>[0]): string {
  let b = bases.get(t);
  if (!b) {
    b = { dir: t.testdir(), n: 0 };
    bases.set(t, b);
  }
  const dir = join(b.dir, `d${b.n++}`);
  mkdirSync(dir);
  if (layout) writeLayout(dir, layout as Record<string, unknown>);
  return dir;
}

function writeLayout(dir: string, layout: Record<string, unknown>): void {
  for (const [name, v] of Object.entries(layout)) {
    if (typeof v === 'string') writeFileSync(join(dir, name), v);
    else {
      mkdirSync(join(dir, name));
      writeLayout(join(dir, name), v as Record<string, unknown>);
    }
  }
}

function newCarrier(t: Test): Carrier {
  return Carrier.init(dirOf(t), { carrierId: 'C-01', kmdId: 'kmd.A' });
}

t.test('init makes the layout; manifest last; re-init with the same ids opens it', async (t) => {
  const dir = dirOf(t);
  const c = Carrier.init(dir, { carrierId: 'C-01', kmdId: 'kmd.A' });
  t.equal(c.path, dir);
  t.equal(c.carrierId, 'C-01');
  t.equal(c.kmdId, 'kmd.A');
  t.ok(statSync(join(dir, BATCH_DIR)).isDirectory());
  t.ok(statSync(join(dir, RECEIPT_DIR)).isDirectory());
  const m = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8'));
  t.match(m, { format: 'qkt-carrier', version: 1, carrierId: 'C-01', kmdId: 'kmd.A', created: /^\d{4}-\d\d-\d\dT/ });
  t.same(events(c), ['created']);
  t.same(c.history()[0], { event: 'created', carrierId: 'C-01', kmdId: 'kmd.A', time: c.history()[0]!.time });

  const again = Carrier.init(dir, { carrierId: 'C-01', kmdId: 'kmd.A' });
  t.equal(again.manifest.created, c.manifest.created, 'same carrier, not re-created');
  t.same(events(again), ['created']);
  t.throws(() => Carrier.init(dir, { carrierId: 'C-02', kmdId: 'kmd.A' }), code('EXISTS'));
  t.throws(() => Carrier.init(dir, { carrierId: 'C-01', kmdId: 'kmd.B' }), code('EXISTS'));
});

t.test('init refuses a folder with other files; accepts a fresh drive and a half-done init', async (t) => {
  const busy = dirOf(t, { 'notes.txt': 'hello' });
  t.throws(() => Carrier.init(busy, { carrierId: 'C', kmdId: 'K' }), code('NOT_EMPTY'));
  t.equal(readdirSync(busy).length, 1, 'nothing written into a refused folder');
  const busyBatches = dirOf(t, { batches: { 'x.qkb': 'x' } });
  t.throws(() => Carrier.init(busyBatches, { carrierId: 'C', kmdId: 'K' }), code('NOT_EMPTY'));

  const drive = dirOf(t, { 'lost+found': {}, 'System Volume Information': {}, '.Trash-0': {} });
  t.doesNotThrow(() => Carrier.init(drive, { carrierId: 'C', kmdId: 'K' }));

  // An init killed after its mkdirs and journal line, before the manifest.
  const half = dirOf(t, { batches: {}, receipts: { '.x.tmp-1': '' }, 'journal.jsonl': '{"event":"created","carrierId":"C","kmdId":"K","time":"x"}\n{"ev' });
  const c = Carrier.init(half, { carrierId: 'C', kmdId: 'K' });
  t.same(events(c), ['created', 'created'], 'torn line cut, a fresh created line');

  const fresh = join(dirOf(t), 'a', 'b');
  t.doesNotThrow(() => Carrier.init(fresh, { carrierId: 'C', kmdId: 'K' }), 'missing folders are made');
  t.ok(existsSync(join(fresh, MANIFEST_FILE)));
});

t.test('init and open validate their arguments', async (t) => {
  const dir = dirOf(t);
  t.throws(() => Carrier.init(dir, { carrierId: 'bad id', kmdId: 'K' }), InputError);
  t.throws(() => Carrier.init(dir, { carrierId: 'C', kmdId: 'x'.repeat(33) }), InputError);
  t.throws(() => Carrier.init(dir, { carrierId: 7 as unknown as string, kmdId: 'K' }), TypeError);
  t.throws(() => Carrier.init(dir, null as unknown as { carrierId: string; kmdId: string }), TypeError);
  t.throws(() => Carrier.init('', { carrierId: 'C', kmdId: 'K' }), TypeError);
  t.throws(() => Carrier.open(''), TypeError);
});

t.test('open: clear typed errors for what is not a carrier', async (t) => {
  const root = dirOf(t, {
    plain: { 'a.txt': 'x' },
    file: 'x',
    badjson: { 'carrier.json': '{"format": "qkt-car' },
    notobj: { 'carrier.json': '42' },
    otherformat: { 'carrier.json': '{"format":"zip","version":1,"carrierId":"C","kmdId":"K","created":"x"}' },
    newer: { 'carrier.json': '{"format":"qkt-carrier","version":2,"carrierId":"C","kmdId":"K","created":"x"}' },
    noid: { 'carrier.json': '{"format":"qkt-carrier","version":1,"kmdId":"K","created":"x"}' },
    badid: { 'carrier.json': '{"format":"qkt-carrier","version":1,"carrierId":"C","kmdId":"../K","created":"x"}' },
    nocreated: { 'carrier.json': '{"format":"qkt-carrier","version":1,"carrierId":"C","kmdId":"K"}' },
  });
  t.throws(() => Carrier.open(join(root, 'missing')), code('NOT_FOUND'));
  t.throws(() => Carrier.open(join(root, 'plain')), code('NOT_A_CARRIER'));
  t.throws(() => Carrier.open(join(root, 'file')), code('NOT_A_CARRIER'));
  t.throws(() => Carrier.open(join(root, 'badjson')), code('CORRUPT'));
  t.throws(() => Carrier.open(join(root, 'notobj')), code('CORRUPT'));
  t.throws(() => Carrier.open(join(root, 'otherformat')), code('CORRUPT'));
  t.throws(() => Carrier.open(join(root, 'newer')), code('UNSUPPORTED_VERSION'));
  t.throws(() => Carrier.open(join(root, 'noid')), code('CORRUPT'));
  t.throws(() => Carrier.open(join(root, 'badid')), code('CORRUPT'));
  t.throws(() => Carrier.open(join(root, 'nocreated')), code('CORRUPT'));
  try {
    Carrier.open(join(root, 'plain'));
  } catch (e) {
    t.type(e, CarrierError);
    t.match((e as Error).message, /not a carrier/);
  }
  // A manifest whose folders vanished: they are made again.
  const dir = dirOf(t, { 'carrier.json': '{"format":"qkt-carrier","version":1,"carrierId":"C","kmdId":"K","created":"x"}' });
  const c = Carrier.open(dir);
  t.same(c.pending(), []);
  t.ok(existsSync(join(dir, BATCH_DIR)) && existsSync(join(dir, RECEIPT_DIR)));
});

t.test('addBatch stores whole batches, refuses garbage, is idempotent', async (t) => {
  const c = newCarrier(t);
  const b = makeBatch('T-0001.sub', 7);
  const r = c.addBatch(b.sealed);
  t.match(r, { outcome: 'added', id: b.id, terminalId: 'T-0001.sub', batchId: b.batchId, seq: 7, bits: 512, purpose: 'enc', bytes: b.sealed.length });
  t.equal(r.file, join(c.path, BATCH_DIR, `${b.id}.qkb`));
  t.same(new Uint8Array(readFileSync(r.file)), b.sealed);
  t.equal(statSync(r.file).mode & 0o777, 0o600);
  t.same(events(c), ['created', 'loaded']);
  t.match(c.history()[1], { event: 'loaded', id: b.id, seq: 7, bits: 512, bytes: b.sealed.length });

  t.equal(c.addBatch(b.sealed).outcome, 'present');
  t.same(events(c), ['created', 'loaded'], 'no second loaded line');
  t.same(readdirSync(join(c.path, BATCH_DIR)), [`${b.id}.qkb`], 'no temporaries left');

  t.throws(() => c.addBatch(new Uint8Array(300)), code('BAD_BATCH'));
  t.throws(() => c.addBatch(new TextEncoder().encode('QKTB garbage garbage garbage garbage garbage garbage')), code('BAD_BATCH'));
  t.throws(() => c.addBatch(b.sealed.subarray(0, b.sealed.length - 1)), code('BAD_BATCH'), 'one byte short');
  const longer = new Uint8Array(b.sealed.length + 1);
  longer.set(b.sealed);
  t.throws(() => c.addBatch(longer), code('BAD_BATCH'), 'one byte long');
  t.throws(() => c.addBatch(b.sealed.subarray(0, 70)), code('BAD_BATCH'), 'header only');
  t.throws(() => c.addBatch('QKTB' as unknown as Uint8Array), TypeError);
  t.same(c.pending().map((p) => p.id), [b.id]);
});

t.test('addBatch: a file without its journal line, a damaged file, a conflicting batch', async (t) => {
  const c = newCarrier(t);
  // Killed between the file and the journal line: the re-run writes the line.
  const a = makeBatch('T1', 1);
  writeFileAtomic(join(c.path, BATCH_DIR, `${a.id}.qkb`), a.sealed);
  t.equal(c.addBatch(a.sealed).outcome, 'present');
  t.same(events(c), ['created', 'loaded']);

  // A torn file under the final name (a writer that was not atomic): replaced.
  const b = makeBatch('T2', 1);
  writeFileSync(join(c.path, BATCH_DIR, `${b.id}.qkb`), b.sealed.subarray(0, 100));
  t.match(c.scan().damaged, [{ reason: /bytes, but its header says/ }]);
  t.equal(c.addBatch(b.sealed).outcome, 'replaced-damaged');
  t.same(c.scan().damaged, []);

  // Same terminal and batch id, other content: the KMD broke the one-id-per-seal rule.
  const other = makeBatch('T2', 1, { batchId: Buffer.from(b.batchId, 'hex') });
  t.throws(() => c.addBatch(other.sealed), code('CONFLICT'));
  t.same(new Uint8Array(readFileSync(join(c.path, BATCH_DIR, `${b.id}.qkb`))), b.sealed, 'the first one stays');
});

t.test('pending, batchFor, readBatch: seq order, per terminal, whole batches only', async (t) => {
  const c = newCarrier(t);
  const t1s9 = makeBatch('T1', 9, { bits: 8 });
  const t1s3 = makeBatch('T1', 3, { purpose: 'auth' });
  const t2s1 = makeBatch('T2', 1, { bits: 4096, purpose: 'any' });
  for (const b of [t1s9, t2s1, t1s3]) c.addBatch(b.sealed);
  t.same(c.pending().map((p) => [p.terminalId, p.seq]), [['T1', 3], ['T1', 9], ['T2', 1]]);
  t.same(c.pending('T1').map((p) => p.seq), [3, 9]);
  t.same(c.pending('T3'), []);
  t.equal(c.batchFor('T1')?.id, t1s3.id);
  t.equal(c.batchFor('T1')?.purpose, 'auth');
  t.equal(c.batchFor('T2')?.bytes, t2s1.sealed.length);
  t.equal(c.batchFor('T9'), undefined);
  t.throws(() => c.pending('no way'), InputError);

  for (const [e, b] of [[c.batchFor('T1')!, t1s3], [c.batchFor('T2')!, t2s1]] as const) {
    t.same(c.readBatch(e), b.sealed, `${e.id} byte-identical`);
  }
  t.throws(() => c.readBatch({ id: `T1-${'0'.repeat(32)}` }), code('UNKNOWN_BATCH'));
  t.throws(() => c.readBatch({ id: '../../etc/passwd' }), TypeError);
  t.throws(() => c.readBatch(null as unknown as { id: string }), TypeError);
  // Damaged after the scan: readBatch re-checks.
  const e = c.batchFor('T2')!;
  truncateSync(e.file, 50);
  t.throws(() => c.readBatch(e), code('DAMAGED_BATCH'));
});

t.test('scan reports damaged files and never offers them', async (t) => {
  const c = newCarrier(t);
  const good = makeBatch('T1', 1);
  c.addBatch(good.sealed);
  const cut = makeBatch('T2', 1);
  const zero = makeBatch('T3', 1);
  const misnamed = makeBatch('T4', 1);
  const dir = join(c.path, BATCH_DIR);
  writeFileSync(join(dir, `${cut.id}.qkb`), cut.sealed.subarray(0, cut.sealed.length - 10));
  writeFileSync(join(dir, `${zero.id}.qkb`), new Uint8Array(zero.sealed.length));
  writeFileSync(join(dir, `T4-${'ab'.repeat(16)}.qkb`), misnamed.sealed);
  writeFileSync(join(dir, 'junk.qkb'), 'junk');
  writeFileSync(join(dir, `T5-${'cd'.repeat(16)}.qkb`), '');
  writeFileSync(join(dir, 'README.txt'), 'not ours, not a batch');
  mkdirSync(join(dir, `T6-${'0f'.repeat(16)}.qkb`));
  mkdirSync(join(c.path, RECEIPT_DIR, `T7-${'1f'.repeat(16)}.qkr`));
  const s = c.scan();
  t.same(s.pending.map((p) => p.id), [good.id]);
  const reasons = Object.fromEntries(s.damaged.map((d) => [d.file.slice(dir.length + 1), d.reason]));
  t.match(reasons, {
    [`${cut.id}.qkb`]: /bytes, but its header says/,
    [`${zero.id}.qkb`]: /header does not parse \(bad-magic/,
    [`T4-${'ab'.repeat(16)}.qkb`]: /header names batch T4-/,
    'junk.qkb': /name is not/,
    [`T5-${'cd'.repeat(16)}.qkb`]: /header does not parse \(truncated/,
    [`T6-${'0f'.repeat(16)}.qkb`]: /unreadable \(EISDIR\)/,
  });
  t.match(s.damaged, [{ file: /T7-.*\.qkr$/, reason: /unreadable \(EISDIR\)/ }], 'receipts are listed first');
  t.equal(s.damaged.length, 7);
  t.equal(c.batchFor('T2'), undefined);
  t.equal(c.batchFor('T3'), undefined);
});

t.test('scan removes temporaries of dead writers only', async (t) => {
  const c = newCarrier(t);
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout);
  const dir = join(c.path, BATCH_DIR);
  writeFileSync(join(dir, `.T1-x.qkb.tmp-${deadPid}`), 'half a batch');
  writeFileSync(join(c.path, `.carrier.json.tmp-${deadPid}`), '{');
  writeFileSync(join(dir, `.T1-y.qkb.tmp-${process.pid}`), 'a write in progress');
  const s = c.scan();
  t.equal(s.repaired.length, 2);
  t.match(s.repaired[0], /removed the unfinished write/);
  t.same(readdirSync(dir), [`.T1-y.qkb.tmp-${process.pid}`]);
  t.notOk(existsSync(join(c.path, `.carrier.json.tmp-${deadPid}`)));
  t.same(s.damaged, [], 'temporaries are never batches');
});

t.test('recordReceipt: receipt stored, delivered, ciphertext kept until the KMD collects; then zeroed and unlinked', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 1);
  const b = makeBatch('T1', 2);
  c.addBatch(a.sealed);
  c.addBatch(b.sealed);
  const entry = c.batchFor('T1')!;
  t.equal(entry.id, a.id);
  // A second name for the inode shows what happened to the bytes, not just the name.
  const spy = join(dirOf(t), 'spy');
  linkSync(entry.file, spy);
  const rec = receiptFor(a);
  const r = c.recordReceipt('T1', a.batchId, rec);
  t.match(r, { outcome: 'recorded', id: a.id, terminalId: 'T1', batchId: a.batchId, seq: 1, bits: 512, collected: false, state: 'unverified', ciphertextBytes: a.sealed.length });
  t.same(new Uint8Array(readFileSync(r.receiptFile)), rec);
  t.same(new Uint8Array(readFileSync(entry.file)), a.sealed, 'the ciphertext is kept: the carrier cannot check the receipt');
  t.same(events(c), ['created', 'loaded', 'loaded', 'injected', 'delivered']);
  const injected = c.history()[3]!;
  t.match(injected, { event: 'injected', id: a.id, seq: 1, bits: 512, receipt: Buffer.from(rec).toString('hex') });
  t.equal(c.batchFor('T1')?.id, b.id, 'next batch is the next seq: a batch with a receipt is not offered');
  t.throws(() => c.readBatch(entry), code('UNKNOWN_BATCH'), 'a delivered batch cannot be read');
  t.match(c.status(), { receiptsPending: 1, sealedBytes: a.sealed.length + b.sealed.length, delivered: [{ id: a.id, state: 'unverified' }] });

  // The stored receipt is the terminal's: the KMD can verify it.
  const stored = decodeReceipt(c.receipts()[0]!.receipt);
  t.ok(verifyReceipt(a.deviceKey, stored));

  // Again, same receipt: nothing changes. Another receipt: refused, naming the fix.
  t.equal(c.recordReceipt('T1', a.batchId.toUpperCase(), rec).outcome, 'present');
  t.same(events(c), ['created', 'loaded', 'loaded', 'injected', 'delivered']);
  const forged = rec.slice();
  forged[forged.length - 1]! ^= 1;
  t.throws(() => c.recordReceipt('T1', a.batchId, forged), { code: 'ALREADY_DELIVERED', message: /qkt kmd collect/ });
  // Loading the delivered batch again (a re-run load): never offered again.
  t.match(c.addBatch(a.sealed), { outcome: 'delivered' });
  t.same(c.pending().map((p) => p.id), [b.id]);

  // The KMD verified it: collected, then zeroed and unlinked.
  c.markCollected([a.id]);
  t.notOk(existsSync(entry.file), 'batch file unlinked');
  const left = readFileSync(spy);
  t.equal(left.length, a.sealed.length);
  t.ok(left.every((x) => x === 0), 'ciphertext overwritten with zeros before the unlink');
  t.same(events(c), ['created', 'loaded', 'loaded', 'injected', 'delivered', 'collected', 'wiped']);
  t.match(c.status(), { receiptsPending: 0, sealedBytes: b.sealed.length, delivered: [{ id: a.id, state: 'collected', collected: true, ciphertextBytes: 0 }] });
  c.markCollected([a.id]);
  t.same(events(c).length, 7, 'markCollected again: nothing more');
  t.throws(() => c.recordReceipt('T1', a.batchId, forged), { code: 'ALREADY_DELIVERED', message: /verified/ });
});

t.test('a forged receipt: ciphertext kept; the KMD rejects it, the receipt is quarantined, the batch is offered again', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 1);
  c.addBatch(a.sealed);
  const info = parseSealedHeader(a.sealed);
  // Right terminal, batch, seq, bits and header digest (all public), MAC under another key.
  const forged = encodeReceipt(makeReceipt(new Uint8Array(32).fill(7), { terminalId: 'T1', batchId: info.header.batchId, seq: 1, bits: 512, headerDigest: info.headerDigest }));
  c.recordReceipt('T1', a.batchId, forged);
  t.same(new Uint8Array(readFileSync(join(c.path, BATCH_DIR, `${a.id}.qkb`))), a.sealed, 'not wiped');
  t.equal(c.batchFor('T1'), undefined, 'not offered while the receipt awaits the KMD');

  const q = c.rejectReceipt(a.id, 'receipt MAC does not verify');
  t.match(q, { id: a.id, reason: 'receipt MAC does not verify' });
  t.same(new Uint8Array(readFileSync(q.file)), forged, 'the false receipt is kept under quarantine/');
  t.same(readdirSync(join(c.path, RECEIPT_DIR)), [], 'and gone from receipts/');
  t.equal(c.batchFor('T1')?.id, a.id, 'the batch is offered again');
  t.match(c.history().at(-1), { event: 'rejected', id: a.id, reason: 'receipt MAC does not verify', receipt: Buffer.from(forged).toString('hex') });
  t.match(c.status(), { receiptsPending: 0, delivered: [], quarantined: [{ id: a.id, reason: 'receipt MAC does not verify' }], batches: [{ id: a.id }] });
  t.match(formatCarrierStatus(c.status()), /rejected \(quarantined; their batches are offered again\): 1\n  T1-[0-9a-f]{32}: receipt MAC does not verify/);
  t.throws(() => c.recordReceipt('T1', a.batchId, forged), { code: 'BAD_RECEIPT', message: /rejected this very receipt/ }, 'the same false receipt again: refused');
  t.equal(c.batchFor('T1')?.id, a.id);
  t.throws(() => c.rejectReceipt(a.id, 'x'), code('UNKNOWN_RECEIPT'));

  // The true receipt: recorded and journalled anew, then collected and wiped.
  c.recordReceipt('T1', a.batchId, receiptFor(a));
  t.same(events(c), ['created', 'loaded', 'injected', 'delivered', 'rejected', 'injected', 'delivered']);
  c.markCollected([a.id]);
  t.throws(() => c.rejectReceipt(a.id, 'x'), code('ALREADY_DELIVERED'), 'a collected receipt cannot be rejected');
  t.notOk(existsSync(join(c.path, BATCH_DIR, `${a.id}.qkb`)));
  const again = Carrier.open(c.path);
  t.same(again.scan().repaired, [], 'nothing left to finish');
  t.equal(again.status().quarantined.length, 1);
});

t.test('a rejection cut before its move is finished by open(), and never moves a later true receipt', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 1);
  c.addBatch(a.sealed);
  const info = parseSealedHeader(a.sealed);
  const forged = encodeReceipt(makeReceipt(new Uint8Array(32).fill(9), { terminalId: 'T1', batchId: info.header.batchId, seq: 1, bits: 512, headerDigest: info.headerDigest }));
  c.recordReceipt('T1', a.batchId, forged);
  // The `rejected` line is on the drive, the rename is not (the drive was pulled in between).
  new Journal(join(c.path, JOURNAL_FILE)).append({ event: 'rejected', id: a.id, receipt: Buffer.from(forged).toString('hex'), reason: 'receipt MAC does not verify', file: 'quarantine/x.qkr' });
  const again = Carrier.open(c.path);
  t.same(readdirSync(join(c.path, RECEIPT_DIR)), [], 'moved on open');
  t.equal(readdirSync(join(c.path, 'quarantine')).length, 1);
  t.equal(again.batchFor('T1')?.id, a.id, 'offered again');
  again.recordReceipt('T1', a.batchId, receiptFor(a));
  t.same(Carrier.open(c.path).receipts().map((r) => r.id), [a.id], 'the true receipt stays');
});

t.test('recordReceipt refusals', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 5);
  const other = makeBatch('T1', 6);
  c.addBatch(a.sealed);
  t.throws(() => c.recordReceipt('T1', a.batchId, new Uint8Array(100)), code('BAD_RECEIPT'));
  t.throws(() => c.recordReceipt('T1', a.batchId, receiptFor(other)), code('BAD_RECEIPT'), 'receipt of another batch');
  t.throws(() => c.recordReceipt('T2', a.batchId, receiptFor(a)), code('BAD_RECEIPT'), 'terminal id differs');
  t.throws(() => c.recordReceipt('T1', a.batchId, receiptFor(a, { seq: 4 })), code('BAD_RECEIPT'), 'seq differs');
  t.throws(() => c.recordReceipt('T1', other.batchId, receiptFor(other)), code('UNKNOWN_BATCH'), 'batch not on the carrier');
  t.throws(() => c.recordReceipt('T1', 'xyz', receiptFor(a)), InputError);
  t.throws(() => c.recordReceipt('T 1', a.batchId, receiptFor(a)), InputError);
  t.throws(() => c.recordReceipt('T1', 5 as unknown as string, receiptFor(a)), TypeError);
  t.throws(() => c.recordReceipt('T1', a.batchId, [1, 2] as unknown as Uint8Array), TypeError);
  t.same(readdirSync(join(c.path, RECEIPT_DIR)), [], 'nothing stored');
  t.equal(c.batchFor('T1')?.id, a.id, 'still pending');
});

t.test('open/scan finish a delivery or a collect interrupted at every step', async (t) => {
  const steps = ['receipt stored', 'injected journalled', 'delivered journalled', 'collected journalled', 'zeroed, not unlinked', 'unlinked, wiped not journalled'] as const;
  for (const [i, step] of steps.entries()) {
    const c = newCarrier(t);
    const a = makeBatch('T1', 1);
    const b = makeBatch('T1', 2);
    c.addBatch(a.sealed);
    c.addBatch(b.sealed);
    const rec = receiptFor(a);
    const file = join(c.path, BATCH_DIR, `${a.id}.qkb`);
    writeFileAtomic(join(c.path, RECEIPT_DIR, `${a.id}.qkr`), rec);
    const j = new Journal(join(c.path, JOURNAL_FILE));
    if (i >= 1) j.append({ event: 'injected', id: a.id, terminalId: 'T1', batchId: a.batchId, seq: 1, bits: 512, receipt: Buffer.from(rec).toString('hex') });
    if (i >= 2) j.append({ event: 'delivered', id: a.id });
    if (i >= 3) j.append({ event: 'collected', ids: [a.id] });
    if (i === 4) writeFileSync(file, new Uint8Array(a.sealed.length));
    if (i === 5) unlinkSync(file);
    const again = Carrier.open(c.path);
    if (i < 3) {
      t.same(new Uint8Array(readFileSync(file)), a.sealed, `${step}: ciphertext kept until collect`);
      t.same(events(again), ['created', 'loaded', 'loaded', 'injected', 'delivered'], `${step}: journal completed`);
      t.equal(again.receipts().length, 1, `${step}: the receipt awaits the KMD`);
    } else {
      t.notOk(existsSync(file), `${step}: ciphertext gone`);
      t.same(events(again), ['created', 'loaded', 'loaded', 'injected', 'delivered', 'collected', 'wiped'], `${step}: journal completed`);
      t.match(again.history()[6], { event: 'wiped', id: a.id, recovered: true });
      t.equal(again.receipts().length, 0);
    }
    t.same(again.pending().map((p) => p.id), [b.id], `${step}: the delivered batch is not offered`);
    t.same(again.scan().repaired, [], `${step}: a second scan has nothing to do`);
  }
});

t.test('hostile ids: dot names are never offered, other ids are refused at the entry points', async (t) => {
  const c = newCarrier(t);
  const hex = 'ab'.repeat(16);
  const a = makeBatch('T1', 1);
  writeFileSync(join(c.path, BATCH_DIR, `..-${hex}.qkb`), a.sealed);
  writeFileSync(join(c.path, RECEIPT_DIR, `..-${hex}.qkr`), receiptFor(a));
  const s = c.scan();
  t.same(s.pending, []);
  t.same(s.delivered, []);
  // Dot names are never read (temporaries, hidden files), so these are neither offered nor touched.
  t.same(s.damaged, []);
  t.same(readFileSync(join(c.path, BATCH_DIR, `..-${hex}.qkb`)), Buffer.from(a.sealed), 'left as it was');
  for (const bad of ['..', '.', '', 'x'.repeat(200), '../x', 'T\u00001']) {
    t.throws(() => c.recordReceipt(bad, hex, receiptFor(a)), InputError, `recordReceipt ${JSON.stringify(bad)}`);
    t.throws(() => c.pending(bad), InputError, `pending ${JSON.stringify(bad)}`);
  }
});

t.test('a damaged receipt keeps its batch out of the offer', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 1);
  c.addBatch(a.sealed);
  writeFileSync(join(c.path, RECEIPT_DIR, `${a.id}.qkr`), 'QKTR?');
  const other = makeBatch('T1', 2);
  writeFileSync(join(c.path, RECEIPT_DIR, `${a.terminalId}-${other.batchId}.qkr`), receiptFor(a));
  writeFileSync(join(c.path, RECEIPT_DIR, 'strange.qkr'), receiptFor(a));
  const s = c.scan();
  t.same(s.pending, []);
  t.equal(s.damaged.length, 4);
  const reasons = s.damaged.map((d) => d.reason.replace(/ \(.*/, '')).sort();
  t.same(reasons, ['its receipt is damaged', 'name is not <terminalId>-<batchIdHex>.qkr', 'receipt does not parse', 'receipt names another batch than its file name']);
  t.ok(existsSync(join(c.path, BATCH_DIR, `${a.id}.qkb`)), 'kept for a human to look at');
  t.same(c.receipts(), []);
});

t.test('receipts and markCollected', async (t) => {
  const c = newCarrier(t);
  const bs = [makeBatch('T2', 1), makeBatch('T1', 4), makeBatch('T1', 3)];
  for (const b of bs) {
    c.addBatch(b.sealed);
    c.recordReceipt(b.terminalId, b.batchId, receiptFor(b));
  }
  const rs = c.receipts();
  t.same(rs.map((r) => [r.terminalId, r.seq]), [['T1', 3], ['T1', 4], ['T2', 1]]);
  for (const r of rs) t.ok(r.receipt instanceof Uint8Array && r.file.endsWith(`${r.id}.qkr`));
  t.throws(() => c.markCollected(['nope']), code('UNKNOWN_RECEIPT'));
  t.throws(() => c.markCollected('T1' as unknown as string[]), TypeError);
  t.throws(() => c.markCollected([3 as unknown as string]), TypeError);
  c.markCollected([rs[0]!.id, rs[0]!.id]);
  t.same(c.receipts().map((r) => r.seq), [4, 1]);
  c.markCollected([rs[0]!.id, rs[1]!.id]);
  t.same(c.history().filter((r) => r.event === 'collected').map((r) => (r as { ids: string[] }).ids), [[rs[0]!.id], [rs[1]!.id]], 'only new ids journalled');
  c.markCollected([]);
  const reopened = Carrier.open(c.path);
  t.same(reopened.receipts().map((r) => r.id), [rs[2]!.id], 'collected marks survive a re-plug');
  const st = reopened.status();
  t.equal(st.receiptsPending, 1);
  t.same(st.delivered.map((d) => d.collected), [true, true, false]);
});

t.test('journal: fsynced lines, torn last line ignored and cut, garbage lines skipped', async (t) => {
  const c = newCarrier(t);
  c.addBatch(makeBatch('T1', 1).sealed);
  const path = join(c.path, JOURNAL_FILE);
  appendFileSync(path, '{"time":"2025-01-01T00:00:00.000Z","event":"loa');
  const j = new Journal(path);
  const before = j.read();
  t.equal(before.torn, true);
  t.same(before.records.map((r) => r.event), ['created', 'loaded']);
  t.equal(c.status().journal.events, 2);
  t.notOk(readFileSync(path, 'utf8').includes('"event":"loa\n'), 'status scanned and cut the torn line');
  t.equal(j.read().torn, false);
  t.equal(j.repair(), false, 'nothing left to cut');

  // A whole line of garbage (a medium returning zeros) in the middle: skipped, counted.
  appendFileSync(path, '\0\0\0\0\n[1,2]\n{"no":"event"}\n');
  c.addBatch(makeBatch('T1', 2).sealed);
  const after = j.read();
  t.same(after.records.map((r) => r.event), ['created', 'loaded', 'loaded']);
  t.equal(after.skipped, 3);
  t.equal(c.status().journal.skippedLines, 3);
  t.match(formatCarrierStatus(c.status()), /journal: 3 unreadable line\(s\) skipped/);

  // Only a fragment: cut to empty.
  const lone = join(dirOf(t), 'j.jsonl');
  writeFileSync(lone, '{"ev');
  const jl = new Journal(lone);
  t.equal(jl.repair(), true);
  t.equal(readFileSync(lone, 'utf8'), '');
  t.same(new Journal(join(dirOf(t), 'none.jsonl')).read(), { records: [], skipped: 0, torn: false });
  t.equal(new Journal(join(dirOf(t), 'none.jsonl')).repair(), false);
});

t.test('status is JSON-able and formatCarrierStatus prints it', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T-0001', 1, { bits: 8 * 2 ** 17 });
  const b = makeBatch('T-0001', 2);
  const d = makeBatch('T-0002', 1);
  for (const x of [a, b, d]) c.addBatch(x.sealed);
  c.recordReceipt('T-0002', d.batchId, receiptFor(d));
  writeFileSync(join(c.path, BATCH_DIR, `T-0003-${'ee'.repeat(16)}.qkb`), new Uint8Array(70));
  const s = c.status();
  t.match(s, {
    carrierId: 'C-01',
    kmdId: 'kmd.A',
    formatVersion: 1,
    path: c.path,
    receiptsPending: 1,
    // created, 3 loaded, injected, delivered: no `wiped` before collect.
    journal: { events: 6, skippedLines: 0 },
    sealedBytes: a.sealed.length + b.sealed.length + d.sealed.length,
    quarantined: [],
  });
  t.same(s.batches.map((x) => [x.terminalId, x.seq, x.bits, x.bytes]), [['T-0001', 1, 2 ** 20, a.sealed.length], ['T-0001', 2, 512, b.sealed.length]]);
  t.same(s.delivered.map((x) => [x.terminalId, x.seq, x.collected]), [['T-0002', 1, false]]);
  t.equal(s.damaged.length, 1);
  t.type(s.bytesFree, 'number');
  t.ok(s.bytesFree! > 0);
  t.same(JSON.parse(JSON.stringify(s)), s, 'plain JSON, no bytes or classes');

  const text = formatCarrierStatus(s);
  t.match(text, /^carrier C-01 \(KMD kmd\.A\) at /);
  t.match(text, /pending batches: 2 \(/);
  t.match(text, /T-0001 {2}seq 1 {2}1 Mbit {2}enc/);
  t.match(text, /delivered: 1 \(1 receipt to collect\)/);
  t.match(text, /T-0002 {2}seq 1 .* receipt to collect \(unverified; .* sealed kept until qkt kmd collect\)/);
  t.match(text, /sealed bytes held: /);
  t.match(text, /damaged \(never offered\): 1/);
  t.notMatch(text, /journal:/);

  const empty = newCarrier(t).status();
  delete empty.bytesFree;
  const et = formatCarrierStatus({ ...empty, receiptsPending: 0 });
  t.match(et, /pending batches: 0\n/);
  t.match(et, /delivered: 0 \(0 receipts to collect\)/);
  t.notMatch(et, /free/);
});

t.test('a carrier survives a copy to another folder (a drive mounted elsewhere)', async (t) => {
  const c = newCarrier(t);
  const a = makeBatch('T1', 1);
  c.addBatch(a.sealed);
  const dest = dirOf(t);
  for (const sub of [BATCH_DIR, RECEIPT_DIR]) mkdirSync(join(dest, sub));
  for (const f of [MANIFEST_FILE, JOURNAL_FILE, join(BATCH_DIR, `${a.id}.qkb`)]) writeFileSync(join(dest, f), readFileSync(join(c.path, f)));
  const moved = Carrier.open(dest);
  t.equal(moved.path, dest);
  t.same(moved.readBatch(moved.batchFor('T1')!), a.sealed);
});
