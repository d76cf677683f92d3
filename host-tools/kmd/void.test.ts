// `kmd void` (void.ts): batches that will never be used are retired on the KMD (ledger, outbox)
// and at the station (keys wiped, room freed); in-use batches only with inUse; idempotent; a cut
// between its steps is completed by the next void; it never interleaves with an export (the
// home's lock, held by another process).
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatch, markOnCarrier, outbox, outboxFile } from './export.js';
import { voidBatches } from './void.js';
import { kmdStatus } from './status.js';
import { StationStore } from '../station/store.js';

function setup(t: Test) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 22 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const store = new StationStore(home.path('station'));
  t.teardown(() => store.close());
  const rec = () => readFileSync(home.path('terminals', 'T1.json'), 'utf8');
  const named = () => Object.values(store.state('T1').batches).map((b) => b.batchId).sort();
  const states = () => Object.fromEntries(kmdStatus(home, { station: store }).batches.map((b) => [b.seq, b.state]));
  return { dir, home, store, rec, named, states };
}

/** Four batches: seq 1 collected, 2 on a carrier, 3 in the outbox, 4 burned (no sealed batch). */
function fourBatches(home: KmdHome, store: StationStore) {
  const [a, b, c, d] = [1, 2, 3, 4].map(() => exportBatch(home, 'T1', 8192, { station: store })) as [ReturnType<typeof exportBatch>, ReturnType<typeof exportBatch>, ReturnType<typeof exportBatch>, ReturnType<typeof exportBatch>];
  markOnCarrier(home, 'T1', a.record.batchId, 'car1');
  markOnCarrier(home, 'T1', b.record.batchId, 'car2');
  const r = home.terminal('T1');
  r.batches[0]!.deliveredAt = home.nowIso(); // as kmd collect marks it
  home.saveTerminal(r);
  store.activate('T1', a.record.batchId, 'receipt');
  unlinkSync(d.file); // an export cut before its sealed batch was written
  return { a, b, c, d };
}

t.test('void without --batch: every batch not in use, at the KMD and the station; collected ones kept', (t) => {
  const { home, store, named, states } = setup(t);
  const { a, b, c, d } = fourBatches(home, store);
  t.same(states(), { 1: 'collected', 2: 'on-carrier', 3: 'exported', 4: 'burned' });
  const before = store.status('T1').storedKeyBits;
  const r = voidBatches(home, 'T1', { reason: 'lost-carrier', station: store });
  t.same(
    r.voided.map((v) => [v.seq, v.was, v.stationBits, v.outboxRemoved]),
    [
      [2, 'on-carrier', 8192, false],
      [3, 'exported', 8192, true],
      [4, 'burned', 8192, false],
    ],
  );
  t.same(r.kept, [{ batchId: a.record.batchId, seq: 1, state: 'collected' }], 'the collected batch is kept');
  t.same(states(), { 1: 'collected', 2: 'void', 3: 'void', 4: 'void' });
  t.same(named(), [a.record.batchId], 'the station names only the collected batch');
  t.equal(store.status('T1').storedKeyBits, before - 3 * 8192, 'their room is free');
  t.notOk(existsSync(c.file), 'the outbox file is gone');
  t.same(outbox(home), [], 'nothing left to load');
  const rec = home.terminal('T1');
  t.same(rec.batches.map((x) => x.voidReason), [undefined, 'lost-carrier', 'lost-carrier', 'lost-carrier']);
  t.equal(rec.nextSeq, 5, 'sequence numbers never go back');
  t.ok([b, d].every((x) => rec.batches.find((y) => y.batchId === x.record.batchId)?.voidedAt), 'voidedAt recorded');
  t.end();
});

t.test('idempotent: a second void changes nothing', (t) => {
  const { home, store, rec, named } = setup(t);
  fourBatches(home, store);
  voidBatches(home, 'T1', { reason: 'zeroized', station: store });
  const [r0, n0, s0] = [rec(), named(), store.status('T1').storedKeyBits];
  const again = voidBatches(home, 'T1', { reason: 'zeroized', station: store });
  t.same(again.voided, [], 'nothing more to void');
  t.equal(rec(), r0, 'terminal record byte for byte the same');
  t.same(named(), n0);
  t.equal(store.status('T1').storedKeyBits, s0);
  // One batch named by id, already void: a no-op that reports it.
  const id = home.terminal('T1').batches[1]!.batchId;
  const one = voidBatches(home, 'T1', { batch: id.slice(0, 8), station: store });
  t.match(one.voided, [{ batchId: id, was: 'void', reason: 'zeroized', stationBits: 0, outboxRemoved: false }]);
  t.equal(rec(), r0);
  t.end();
});

for (const step of ['ledger', 'outbox'] as const) {
  t.test(`a cut after the ${step} step: the batch is void and never loaded; the next void completes it`, (t) => {
    const { home, store, named, states } = setup(t);
    const e = exportBatch(home, 'T1', 8192, { station: store });
    t.throws(
      () =>
        voidBatches(home, 'T1', {
          reason: 'lost-carrier',
          station: store,
          afterStep: (s) => {
            if (s === step) throw new Error(`cut after ${s}`);
          },
        }),
      { message: `cut after ${step}` },
    );
    t.same(states(), { 1: 'void' }, 'the ledger says void');
    t.equal(existsSync(e.file), step === 'ledger', step === 'ledger' ? 'its sealed batch is still in the outbox' : 'its outbox file is gone');
    t.same(outbox(home), [], 'but no carrier load or download takes it');
    t.same(named(), [e.record.batchId], 'the station still holds its keys');
    const done = voidBatches(home, 'T1', { reason: 'other', station: store });
    t.match(done.voided, [{ batchId: e.record.batchId, was: 'void', reason: 'lost-carrier', stationBits: 8192, outboxRemoved: step === 'ledger' }], 'completed, under the first reason');
    t.same(named(), [], 'station keys wiped');
    t.notOk(existsSync(e.file));
    t.same(voidBatches(home, 'T1', { station: store }).voided, [], 'and then there is nothing left to do');
    t.end();
  });
}

t.test('a batch in use is voided only with inUse; bad input changes nothing', (t) => {
  const { home, store, rec, named } = setup(t);
  const { a } = fourBatches(home, store);
  const r0 = rec();
  t.throws(() => voidBatches(home, 'T1', { batch: a.record.batchId.slice(0, 10), station: store }), {
    code: 'IN_USE',
    message: new RegExp(`^batch ${a.record.batchId.slice(0, 8)} of T1 is collected: the terminal holds it .*qkt kmd void --home \\S+ --terminal T1 --batch ${a.record.batchId.slice(0, 8)} --in-use$`),
  });
  t.throws(() => voidBatches(home, 'T1', { batch: 'ffffffffff', station: store }), { code: 'NO_BATCH', message: /T1 has no batch ffffffffff \(qkt kmd status --home .* lists its batches\)/ });
  t.throws(() => voidBatches(home, 'T1', { batch: 'xyz', station: store }), { code: 'BAD_INPUT' });
  t.throws(() => voidBatches(home, 'T1', { reason: 'Lost Carrier!', station: store }), { code: 'BAD_INPUT' });
  t.throws(() => voidBatches(home, 'T9', { station: store }), { code: 'NOT_ENROLLED' });
  t.equal(rec(), r0, 'nothing changed');
  const r = voidBatches(home, 'T1', { batch: a.record.batchId.slice(0, 8), reason: 'zeroized', inUse: true, station: store });
  t.match(r.voided, [{ seq: 1, was: 'collected', stationBits: 8192 }]);
  t.notOk(named().includes(a.record.batchId), 'its station keys are gone');
  t.end();
});

t.test('a stale batch (a newer one was collected) is voided; the station may have retired it already', (t) => {
  const { home, store, states } = setup(t);
  const [a, b] = [1, 2].map(() => exportBatch(home, 'T1', 8192, { station: store })) as [ReturnType<typeof exportBatch>, ReturnType<typeof exportBatch>];
  markOnCarrier(home, 'T1', a.record.batchId, 'lost');
  markOnCarrier(home, 'T1', b.record.batchId, 'car2');
  const r = home.terminal('T1');
  r.batches[1]!.deliveredAt = home.nowIso();
  home.saveTerminal(r);
  t.same(states(), { 1: 'stale', 2: 'collected' });
  store.voidBatch('T1', a.record.batchId); // what a v2 receipt's live list does at collect
  t.match(voidBatches(home, 'T1', { reason: 'stale', station: store }).voided, [{ seq: 1, was: 'stale', stationBits: 0 }]);
  t.same(states(), { 1: 'void', 2: 'collected' });
  t.end();
});

t.test('a void never interleaves with another process holding the home (an export): it waits, then fails, changing nothing', async (t) => {
  const { dir, home, store, rec } = setup(t);
  exportBatch(home, 'T1', 8192, { station: store });
  const r0 = rec();
  // Another process takes the home's lock and holds it, as a long export does.
  const script = join(dir, 'hold.mts');
  const lockTs = fileURLToPath(new URL('../lock.ts', import.meta.url));
  const homeTs = fileURLToPath(new URL('./home.ts', import.meta.url));
  writeFileSync(
    script,
    `import { lockSync, setLockCommand } from ${JSON.stringify(lockTs)};\nimport { homeLockOptions } from ${JSON.stringify(homeTs)};\nsetLockCommand('qkt kmd export');\nconst l = lockSync(${JSON.stringify(home.dir)}, homeLockOptions(${JSON.stringify(home.dir)}));\nprocess.stdout.write('held\\n');\nsetTimeout(() => { l.release(); }, 1500);\n`,
  );
  const loader = fileURLToPath(new URL('../../node_modules/@tapjs/typescript/dist/esm/import.mjs', import.meta.url));
  const child = spawn(process.execPath, [`--import=${loader}`, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.on('exit', r));
  t.teardown(() => {
    if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
  });
  await new Promise<void>((r) => child.stdout!.on('data', () => r()));
  const saved = process.env['QKT_LOCK_WAIT'];
  process.env['QKT_LOCK_WAIT'] = '0.2';
  try {
    t.throws(() => voidBatches(home, 'T1', { station: store }), { name: 'LockBusyError', message: new RegExp(`is in use by pid ${child.pid} \\(qkt kmd export, since `) });
    // A status does not wait for it either: it reads without the lock and says who holds it.
    const s = kmdStatus(home, { station: store, lockWaitMs: 100 });
    t.match(s, { consistent: false, writer: { pid: child.pid, command: 'qkt kmd export' } });
  } finally {
    if (saved === undefined) delete process.env['QKT_LOCK_WAIT'];
    else process.env['QKT_LOCK_WAIT'] = saved;
  }
  t.equal(rec(), r0, 'the void changed nothing');
  t.ok(existsSync(outboxFile(home, 'T1', home.terminal('T1').batches[0]!.batchId)));
  // With the default wait, the void goes ahead once the holder is done.
  t.match(voidBatches(home, 'T1', { reason: 'lost-carrier', station: store }).voided, [{ seq: 1, was: 'exported' }]);
  await exited;
  t.match(kmdStatus(home, { station: store }), { consistent: true, writer: null });
});
