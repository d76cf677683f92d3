// Property tests of the carrier's file decoders (issue 8): the manifest (carrier.json), the journal
// (journal.jsonl), receipts (.qkr, through recordReceipt and as files on the drive) and sealed
// batches (.qkb, through addBatch and as files on the drive), fed random bytes and mutations of
// valid files. Every call either succeeds with a valid result or throws a CarrierError with a
// message; a refusal writes nothing (every file on the carrier byte for byte as before), and a
// damaged file found on the drive is reported, never offered, and left as it was.
import t from 'tap';
import type { Test } from 'tap';
import fc from 'fast-check';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createHash } from 'node:crypto';
import { parseSealedHeader, sealBatch } from '../../firmware/crypto/batch.js';
import { decodeReceipt, encodeReceipt, makeReceipt } from '../../firmware/crypto/receipt.js';
import { decodesCleanly, everyTruncation, hex, mutate, mutationsArb, sameBytes } from '../../firmware/test-support/mutate.js';
import { BATCH_DIR, Carrier, CarrierError, JOURNAL_FILE, MANIFEST_FILE, RECEIPT_DIR, formatCarrierStatus } from './carrier.js';
import { Journal } from './journal.js';

const RUNS = 300;
const ID_RE = /^[A-Za-z0-9._-]{1,32}$/;
const DEVICE_KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);

function sealed(terminalId: string, seq: number, batchIdByte: number): { bytes: Uint8Array; id: string; terminalId: string; batchId: string } {
  const batchId = new Uint8Array(16).fill(batchIdByte);
  const bytes = sealBatch({
    deviceKey: DEVICE_KEY,
    header: { batchId, terminalId, seq, purpose: 'enc', bits: 256, chunkSize: 24, createdAt: 1_700_000_000_000 },
    keys: Uint8Array.from({ length: 32 }, (_, i) => i),
  });
  return { bytes, id: `${terminalId}-${hex(batchId)}`, terminalId, batchId: hex(batchId) };
}

const BATCH = sealed('T1', 5, 0x11);
const INFO = parseSealedHeader(BATCH.bytes);
const RECEIPT = encodeReceipt(makeReceipt(DEVICE_KEY, { terminalId: 'T1', batchId: INFO.header.batchId, seq: 5, bits: 256, headerDigest: INFO.headerDigest }));

/** Every file under `dir`, path -> SHA-256 of its bytes: "nothing written" is this map unchanged. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

function sameSnapshot(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

/** A scratch folder per test, and a template carrier (with BATCH loaded) copied fresh on demand. */
function workspace(t: Test): { fresh(withBatch?: boolean): string } {
  const root = mkdtempSync(join(tmpdir(), 'qkt-carrier-prop-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const empty = join(root, 'template-empty');
  Carrier.init(empty, { carrierId: 'C-01', kmdId: 'kmd.A' });
  const loaded = join(root, 'template-loaded');
  Carrier.init(loaded, { carrierId: 'C-01', kmdId: 'kmd.A' }).addBatch(BATCH.bytes);
  let n = 0;
  return {
    fresh(withBatch = true) {
      const dir = join(root, `c${n++}`);
      cpSync(withBatch ? loaded : empty, dir, { recursive: true });
      return dir;
    },
  };
}

/** Run a carrier call that may refuse: a CarrierError with a message, and then nothing written. */
function refusesCleanly<T>(dir: string, call: () => T): T | undefined {
  const before = snapshot(dir);
  try {
    return call();
  } catch (e) {
    if (!(e instanceof CarrierError)) throw new Error(`raw exception escaped: ${(e as Error).name}: ${(e as Error).message}`, { cause: e });
    if (e.message.trim() === '') throw new Error(`CarrierError ${e.code} without a message`);
    if (!sameSnapshot(before, snapshot(dir))) throw new Error(`refused (${e.code}: ${e.message}) but the carrier changed`);
    return undefined;
  }
}

/** Everything a user of the carrier calls must work on whatever the drive holds. */
function exercise(c: Carrier): void {
  const s = c.status();
  formatCarrierStatus(s);
  c.receipts();
  c.history();
  for (const b of s.batches) c.readBatch(b);
}

const VALID_MANIFEST = { format: 'qkt-carrier', version: 1, carrierId: 'C-01', kmdId: 'kmd.A', created: '2024-01-01T00:00:00.000Z' };
const manifestArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  // Byte-level damage of the valid file.
  mutationsArb().map((ms) => mutate(Buffer.from(`${JSON.stringify(VALID_MANIFEST, null, 2)}\n`), ms)),
  // Well-formed JSON with fields replaced by anything JSON can hold.
  fc
    .record({ key: fc.constantFrom(...Object.keys(VALID_MANIFEST), 'extra'), value: fc.jsonValue() })
    .map(({ key, value }) => Buffer.from(JSON.stringify({ ...VALID_MANIFEST, [key]: value }))),
  fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? '')),
  fc.uint8Array({ maxLength: 200 }),
);

t.test(`Carrier.open: ${RUNS} damaged manifests give a Carrier with a valid manifest, or a CarrierError and nothing written`, async (t) => {
  const ws = workspace(t);
  const dir = ws.fresh(false);
  let opened = 0;
  fc.assert(
    fc.property(manifestArb, (m) => {
      writeFileSync(join(dir, MANIFEST_FILE), m);
      const c = refusesCleanly(dir, () => Carrier.open(dir));
      if (!c) return;
      opened++;
      const { format, version, carrierId, kmdId, created } = c.manifest;
      if (format !== 'qkt-carrier' || version !== 1 || !ID_RE.test(carrierId) || !ID_RE.test(kmdId) || typeof created !== 'string') {
        throw new Error(`opened with an invalid manifest ${Buffer.from(m).toString()}`);
      }
      exercise(c);
    }),
    { numRuns: RUNS },
  );
  t.comment(`${opened} of ${RUNS} manifests still open`);
  t.pass(`${RUNS} runs`);
});

const JOURNAL_EVENTS = ['created', 'loaded', 'injected', 'delivered', 'rejected', 'wiped', 'collected'];
const journalLineArb: fc.Arbitrary<string> = fc.oneof(
  fc
    .record(
      { event: fc.constantFrom(...JOURNAL_EVENTS), id: fc.oneof(fc.constant(BATCH.id), fc.jsonValue()), ids: fc.oneof(fc.constant([BATCH.id]), fc.jsonValue()), receipt: fc.jsonValue(), file: fc.jsonValue(), reason: fc.jsonValue(), time: fc.jsonValue(), seq: fc.jsonValue() },
      { requiredKeys: ['event'] },
    )
    .map((r) => JSON.stringify(r)),
  fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
  fc.string({ maxLength: 60 }),
);
const journalArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.array(journalLineArb, { maxLength: 8 }).chain((lines) => fc.boolean().map((nl) => Buffer.from(lines.join('\n') + (nl ? '\n' : '')))),
  fc.uint8Array({ maxLength: 300 }),
);

t.test(`journal.jsonl: ${RUNS} random and damaged journals are read without a throw; the carrier still opens and serves`, async (t) => {
  const ws = workspace(t);
  // One carrier for all runs: each writes its journal over the last (open may cut a torn line; nothing else is written).
  const dir = ws.fresh();
  const valid = readFileSync(join(dir, JOURNAL_FILE));
  fc.assert(
    fc.property(fc.oneof(journalArb, mutationsArb().map((ms) => mutate(valid, ms))), (bytes) => {
      writeFileSync(join(dir, JOURNAL_FILE), bytes);
      const j = decodesCleanly(bytes, () => new Journal(join(dir, JOURNAL_FILE)).read(), []);
      if (!j || j.records.some((r) => r === null || typeof r !== 'object' || typeof r.event !== 'string')) throw new Error('a record without an event');
      const c = decodesCleanly(bytes, () => Carrier.open(dir), []);
      if (!c) throw new Error('unreachable');
      exercise(c);
      // The batch is still there and still offered: no journal content makes the carrier drop it.
      if (!c.pending('T1').some((b) => b.id === BATCH.id)) throw new Error(`a damaged journal hid the batch: ${hex(bytes)}`);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test(`recordReceipt: ${RUNS} random and mutated receipts are recorded only if they name the batch, else a CarrierError and nothing written`, async (t) => {
  const ws = workspace(t);
  let dir = ws.fresh();
  let c = Carrier.open(dir);
  let recorded = 0;
  const tryReceipt = (r: Uint8Array) => {
    const out = refusesCleanly(dir, () => c.recordReceipt('T1', BATCH.batchId, r));
    if (!out) return;
    // Accepted: it must decode and name exactly this batch (the MAC is the KMD's to check).
    const d = decodeReceipt(r);
    if (d.terminalId !== 'T1' || hex(d.batchId) !== BATCH.batchId || d.seq !== 5 || d.bits !== 256 || !sameBytes(d.headerDigest, INFO.headerDigest)) {
      throw new Error(`recorded a receipt for another batch: ${hex(r)}`);
    }
    recorded++;
    dir = ws.fresh();
    c = Carrier.open(dir);
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), tryReceipt), { numRuns: RUNS / 2 });
  fc.assert(fc.property(mutationsArb(), (ms) => tryReceipt(mutate(RECEIPT, ms))), { numRuns: RUNS });
  for (const cut of everyTruncation(RECEIPT)) tryReceipt(cut);
  t.comment(`${recorded} mutants recorded (changes in the MAC only)`);
  t.pass(`${RUNS + RUNS / 2} runs and every truncation`);
});

t.test(`receipts/*.qkr on the drive: ${RUNS} damaged receipt files are reported damaged, their batch kept and never offered`, async (t) => {
  const ws = workspace(t);
  let dir = ws.fresh();
  fc.assert(
    fc.property(fc.oneof(mutationsArb().map((ms) => mutate(RECEIPT, ms)), fc.uint8Array({ maxLength: 150 })), (r) => {
      const file = join(dir, RECEIPT_DIR, `${BATCH.id}.qkr`);
      writeFileSync(file, r);
      const before = snapshot(dir);
      const c = decodesCleanly(r, () => Carrier.open(dir), []);
      if (!c) throw new Error('unreachable');
      const scan = c.scan();
      let names = false;
      try {
        const d = decodeReceipt(r);
        names = d.terminalId === 'T1' && hex(d.batchId) === BATCH.batchId;
      } catch {
        /* damaged */
      }
      if (names) {
        // A receipt naming the batch marks it delivered (docs/carrier.md): not offered, ciphertext kept until collect.
        if (!scan.delivered.some((d) => d.id === BATCH.id) || scan.pending.length !== 0) throw new Error('a readable receipt did not deliver its batch');
        exercise(c);
        dir = ws.fresh(); // delivered: the next run needs the batch back
        return;
      } else {
        if (!scan.damaged.some((d) => d.file === file)) throw new Error(`damaged receipt ${hex(r)} not reported`);
        if (scan.pending.some((b) => b.id === BATCH.id)) throw new Error('the batch of a damaged receipt is offered');
        if (!sameSnapshot(before, snapshot(dir))) throw new Error(`a damaged receipt ${hex(r)} changed the carrier`);
      }
      exercise(c);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

/** Sealed batches for the carrier: random bytes, mutants of a real one, and real ones for random terminal ids. */
const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
const sealedArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  { weight: 4, arbitrary: mutationsArb().map((ms) => mutate(BATCH.bytes, ms)) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ unit: fc.constantFrom(...ID_CHARS), minLength: 1, maxLength: 32 }), fc.integer({ min: 0, max: 255 }))
      .map(([id, b]) => sealed(id, 9, b).bytes),
  },
);

t.test(`addBatch: ${RUNS} random and mutated sealed batches are stored and offered, or refused with nothing written`, async (t) => {
  const ws = workspace(t);
  let dir = ws.fresh(false);
  let c = Carrier.open(dir);
  let added = 0;
  fc.assert(
    fc.property(sealedArb, (bytes) => {
      const r = refusesCleanly(dir, () => c.addBatch(bytes));
      if (!r) return;
      added++;
      // Stored means offered: the batch is pending under its id and reads back byte for byte.
      const p = c.pending(r.terminalId).find((b) => b.id === r.id);
      if (!p) throw new Error(`added ${r.id} (${r.outcome}) but it is not pending`);
      if (!sameBytes(c.readBatch(p), bytes)) throw new Error(`${r.id} reads back different bytes`);
      exercise(c);
      dir = ws.fresh(false);
      c = Carrier.open(dir);
    }),
    { numRuns: RUNS },
  );
  t.comment(`${added} of ${RUNS} stored (mutants in the ciphertext are whole batches to the carrier: only the module can check the tags)`);
  t.pass(`${RUNS} runs`);
});

t.test(`batches/*.qkb on the drive: ${RUNS} damaged batch files are reported damaged and left alone, whole ones offered`, async (t) => {
  const ws = workspace(t);
  const dir = ws.fresh(); // nothing is written by a scan of batch files (checked): one carrier for all runs
  fc.assert(
    fc.property(fc.oneof(mutationsArb().map((ms) => mutate(BATCH.bytes, ms)), fc.uint8Array({ maxLength: 300 })), (bytes) => {
      const file = join(dir, BATCH_DIR, `${BATCH.id}.qkb`);
      writeFileSync(file, bytes);
      const c = decodesCleanly(bytes, () => Carrier.open(dir), []);
      if (!c) throw new Error('unreachable');
      const before = snapshot(dir);
      const scan = c.scan();
      const pending = scan.pending.find((b) => b.id === BATCH.id);
      if (pending) {
        if (!sameBytes(c.readBatch(pending), bytes)) throw new Error('a pending batch reads back different bytes');
      } else {
        if (!scan.damaged.some((d) => d.file === file)) throw new Error(`damaged batch ${hex(bytes).slice(0, 120)} neither offered nor reported`);
        if (!sameBytes(new Uint8Array(readFileSync(file)), bytes)) throw new Error('a damaged batch file was changed');
        const refused = refusesCleanly(dir, () => c.readBatch({ id: BATCH.id }));
        if (refused) throw new Error('readBatch served a damaged batch');
      }
      if (!sameSnapshot(before, snapshot(dir))) throw new Error('scanning a batch file changed the carrier');
      exercise(c);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});
