// The secure area under power loss: cut at every flash operation of a run of appends and
// compactions, remount, and find old or new values, never torn ones; the audit log over the link.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../../firmware/flash/nor-flash.js';
import { PowerCutError } from '../../../firmware/flash/errors.js';
import type { CutMode } from '../../../firmware/flash/faults.js';
import { injectBatch } from '../../../host-tools/link/inject.js';
import { Group, SystemCmd } from '../../../firmware/link/groups.js';
import { Rc } from '../../../firmware/link/errors.js';
import { makeBatch, startRig } from '../../../host-tools/test-support/module-rig.js';
import { openSecureArea, REFUSAL_INTERVAL_MS, SECURE_SECTORS, secureBounds } from '../../../firmware/secure/secure-area.js';
import type { WritableSecureArea } from '../../../firmware/secure/secure-area.js';

// Small sectors so that a short run fills one and compacts into the next (the 48 kept audit
// events still fit in one sector).
const GEOMETRY = { size: SECURE_SECTORS * 2048, sectorSize: 2048, pageSize: 256 };
const deviceKey = new Uint8Array(randomBytes(32));
/** A 16-byte batch id whose first 4 bytes are its pool id (as the KMD makes them). */
const batchId = (pool: number, i: number) => Uint8Array.from({ length: 16 }, (_, k) => (k < 3 ? 0 : k === 3 ? pool : (i * 31 + k) & 0xff));

interface State {
  terminalId: string | undefined;
  deviceKey: string | undefined;
  adminCounter: number;
  failed: string;
  audits: number;
  lastAudit: string | undefined;
  batch3: string | undefined;
}

function stateOf(sa: WritableSecureArea): State {
  const id = sa.identity();
  const log = sa.auditLog(0, 1000);
  return {
    terminalId: id?.terminalId,
    deviceKey: id ? Buffer.from(id.deviceKey).toString('hex') : undefined,
    adminCounter: sa.adminCounter(),
    failed: JSON.stringify(sa.failedAuth()),
    audits: sa.auditCount(),
    lastAudit: log.at(-1)?.detail,
    batch3: id ? (sa.batchIdFor(3) ? Buffer.from(sa.batchIdFor(3)!).toString('hex') : undefined) : undefined,
  };
}

/** The run: enrolment, then counters, batch ids and audit events, enough to compact. */
function steps(): Array<(sa: WritableSecureArea) => void> {
  const out: Array<(sa: WritableSecureArea) => void> = [(sa) => sa.enroll({ terminalId: 'FTU-7', deviceKey })];
  for (let i = 1; i <= 170; i++) {
    if (i % 3 === 0) out.push((sa) => sa.setAdminCounter(i));
    if (i % 3 === 1) out.push((sa) => sa.setFailedAuth(i % 5, i % 7 === 0));
    if (i % 10 === 2) out.push((sa) => sa.rememberBatch(i % 4, batchId(i % 4, i)));
    out.push((sa) => sa.audit('boot', `event ${i}`));
  }
  return out;
}

t.test('power cut at every flash operation of appends and compactions: old or new, never torn', async (t) => {
  const run = steps();
  // Reference: the state after each step, and the flash operations the whole run takes.
  const flash0 = NorFlash.memory(GEOMETRY);
  const sa0 = openSecureArea(flash0, () => 1);
  const models: State[] = [stateOf(sa0)];
  for (const step of run) {
    step(sa0);
    models.push(stateOf(sa0));
  }
  const ops = flash0.faults.mutations;
  t.ok(flash0.eraseCount(0) >= 2, `the run compacts round the ring and back into sector 0 (erase counts ${[0, 1, 2, 3].map((s) => flash0.eraseCount(s)).join(' ')})`);
  t.same(stateOf(openSecureArea(flash0, () => 1)), models.at(-1), 'an uninterrupted run remounts to its last state');

  let cuts = 0;
  for (const [mode, seed] of [['torn', 1], ['clean', 1], ['after', 1]] as Array<[CutMode, number]>) {
    for (let n = 1; n <= ops; n++) {
      const flash = NorFlash.memory(GEOMETRY);
      flash.faults.cutAfter(n, mode, seed);
      let k = 0; // the step the cut landed in (1-based); all before it completed
      try {
        const sa = openSecureArea(flash, () => 1);
        for (k = 1; k <= run.length; k++) run[k - 1]!(sa);
        t.fail(`cut ${n} never happened`);
        continue;
      } catch (e) {
        if (!(e instanceof PowerCutError)) throw e;
      }
      cuts++;
      flash.reboot();
      const after = stateOf(openSecureArea(flash, () => 1));
      const old = models[k - 1]!;
      const neu = models[k]!;
      const what = `${mode}/${seed} cut at op ${n} in step ${k}`;
      // Field by field: each is the old or the new value; none is torn or lost.
      const bad = (Object.keys(after) as Array<keyof State>).filter((f) => after[f] !== old[f] && after[f] !== neu[f]);
      if (k > 1 && (after.terminalId !== 'FTU-7' || after.deviceKey !== old.deviceKey)) t.fail(`${what}: identity lost`, { after });
      if (bad.length > 0) t.fail(`${what}: ${bad.join(', ')} neither old nor new`, { after, old, neu });
      // And the area keeps working: one more append (compacting away a torn record) survives a remount.
      if (after.terminalId) {
        const sa = openSecureArea(flash, () => 1);
        sa.setAdminCounter(1_000_000);
        const again = stateOf(openSecureArea(flash, () => 1));
        if (again.adminCounter !== 1_000_000 || again.terminalId !== 'FTU-7' || again.audits !== after.audits) t.fail(`${what}: append after recovery lost`, { again });
      }
    }
  }
  t.equal(cuts, 3 * ops, `${cuts} cut points (${ops} flash operations x 3 cut modes), every one old or new`);
});

t.test('counters never go backwards across cuts in a long run of increments', async (t) => {
  // One flash, cut again and again: every remount sees the last completed value or the next one.
  const flash = NorFlash.memory(GEOMETRY);
  openSecureArea(flash).enroll({ terminalId: 'FTU-8', deviceKey });
  let done = 0;
  let cuts = 0;
  for (let round = 0; round < 60; round++) {
    flash.faults.cutAfter(1 + (round % 7), round % 2 ? 'torn' : 'clean', round);
    try {
      const sa = openSecureArea(flash);
      for (;;) {
        sa.setAdminCounter(done + 1);
        done++;
      }
    } catch (e) {
      if (!(e instanceof PowerCutError)) throw e;
    }
    cuts++;
    flash.reboot();
    const seen = openSecureArea(flash).adminCounter();
    if (seen !== done && seen !== done + 1) t.fail(`round ${round}: counter ${seen}, expected ${done} or ${done + 1}`);
    done = seen;
  }
  t.ok(done > 20, `the counter reached ${done} through ${cuts} cuts, never backwards`);
  t.equal(openSecureArea(flash).identity()?.terminalId, 'FTU-8');
});

t.test('the audit log through SYSTEM AUDIT_LOG: refusals coalesced, security events never evicted', async (t) => {
  let now = 1_700_000_000_000;
  const clock = () => now;
  const rig = await startRig({ terminal: { clock } });
  t.teardown(() => rig.close());
  const b = makeBatch(rig.deviceKey, { bits: 8192 });
  await injectBatch(rig.client, rig.params, b.sealed);
  const foreign = makeBatch(rig.deviceKey, { terminalId: 'T2', bits: 8192 });
  await t.rejects(injectBatch(rig.client, rig.params, foreign.sealed));

  const first = await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, {});
  t.match(first, {
    total: 3,
    events: [
      { n: 1, type: 'enrolled', detail: 'T1' },
      { n: 2, type: 'boot', detail: /^qkt-fw / },
      { n: 3, type: 'batch-accepted', detail: `${Buffer.from(b.batchId).toString('hex').slice(0, 8)} seq ${b.seq} 8192b` },
    ],
  });
  t.equal((first['events'] as unknown[]).length, 3, 'the refusal cost no flash: it is counted in RAM');
  t.match(rig.terminal.status(), { audit: { events: 3, pendingRefusals: 1 }, secureArea: { damaged: false } });

  // A flood within the interval: still nothing written.
  const m0 = rig.flash.faults.mutations;
  for (let i = 0; i < 50; i++) await t.rejects(injectBatch(rig.client, rig.params, foreign.sealed));
  t.equal(rig.flash.faults.mutations, m0, '50 more refusals: no flash operation');
  t.match(rig.terminal.status(), { audit: { events: 3, pendingRefusals: 51 } });
  // After the interval, the next refusal writes them all as one event: count, first, last.
  const t0 = now;
  now += REFUSAL_INTERVAL_MS + 1;
  await t.rejects(injectBatch(rig.client, rig.params, foreign.sealed));
  const log = await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 4 });
  t.match(log, { total: 4, events: [{ n: 4, type: 'refused', count: 52, first: t0, at: now, detail: `${Buffer.from(foreign.batchId).toString('hex').slice(0, 8)} rc ${Rc.WRONG_TERMINAL}` }] });
  t.match(rig.terminal.status(), { audit: { events: 4, pendingRefusals: 0 } });
  await t.rejects(rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { max: 65 }), { name: 'LinkError', rc: Rc.BAD_REQUEST });

  // 120 reboots fill the routine ring many times over: the enrolment (a security event) stays,
  // the newest boots are kept in order, paging works, and the count runs on.
  await rig.close();
  let flash = rig.flash;
  for (let i = 0; i < 120; i++) {
    now += 1000;
    const r = await startRig({ flash, deviceKey: rig.deviceKey, terminal: { clock } });
    await r.close();
    flash = r.flash;
  }
  const again = await startRig({ flash, deviceKey: rig.deviceKey, terminal: { clock } });
  t.teardown(() => again.close());
  const total = 4 + 121;
  t.match(again.terminal.status(), { audit: { events: total } });
  const all = await again.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 64 });
  t.equal(all['total'], total);
  const ev = all['events'] as Array<{ n: number; type: string }>;
  const bounds = secureBounds(flash.geometry.sectorSize);
  t.equal(ev.length, 1 + bounds.routineEvents, `the enrolment and the newest ${bounds.routineEvents} routine events are kept`);
  t.match(ev[0], { n: 1, type: 'enrolled' });
  t.same(ev.slice(1).map((e) => e.n), Array.from({ length: bounds.routineEvents }, (_, i) => total - bounds.routineEvents + 1 + i), 'the newest routine events, consecutive');
  const tail = await again.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: total - 2 });
  t.same((tail['events'] as Array<{ n: number }>).map((e) => e.n), [total - 2, total - 1, total], 'paging with from');
  const page = await again.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: total - 20, max: 5 });
  t.same((page['events'] as Array<{ n: number }>).map((e) => e.n), [total - 20, total - 19, total - 18, total - 17, total - 16], 'paging with max');
});

t.test('a factory reset cut at any flash operation never leaves an older enrolled state', async (t) => {
  const flash0 = NorFlash.memory(GEOMETRY);
  const sa0 = openSecureArea(flash0, () => 1);
  sa0.enroll({ terminalId: 'FTU-9', deviceKey });
  // Append until the newest log sector is sector 0 and the three others hold older states:
  // a reset that erased sector 0 first and then lost power would leave an older state readable.
  const gens = () => [0, 1, 2, 3].map((s) => {
    const h = flash0.peek(s * GEOMETRY.sectorSize, 16);
    const v = new DataView(h.buffer, h.byteOffset, 16);
    return v.getUint32(0, true) === 0x3253_4b51 ? v.getUint32(4, true) : -1;
  });
  let i = 0;
  while (i < 120 || !(gens()[0]! > Math.max(...gens().slice(1)) && gens().every((g) => g > 0))) {
    i++;
    sa0.setAdminCounter(i);
    sa0.audit('boot', `b${i}`);
  }
  const last = i;
  const image = flash0.snapshot();
  const ops = (() => {
    const f = NorFlash.fromImage(image, GEOMETRY);
    const m0 = f.faults.mutations;
    openSecureArea(f, () => 1).factoryReset();
    return f.faults.mutations - m0;
  })();
  for (const mode of ['torn', 'clean', 'after'] as CutMode[]) {
    for (let n = 1; n <= ops; n++) {
      const f = NorFlash.fromImage(image, GEOMETRY);
      f.faults.cutAfter(n, mode, n);
      t.throws(() => openSecureArea(f, () => 1).factoryReset(), PowerCutError);
      f.reboot();
      const sa = openSecureArea(f, () => 1);
      const id = sa.terminalId();
      if (id !== undefined && sa.adminCounter() !== last) t.fail(`${mode} cut at op ${n}/${ops}: enrolled with admin counter ${sa.adminCounter()}, not ${last}`);
    }
  }
  t.pass(`${3 * ops} cut points: the area is the last state or not enrolled, never an older one`);
});
