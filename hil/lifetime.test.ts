// A service life in one test (issue 8): one terminal and its station store, a thousand field
// visits on the in-process link. Each visit: the KMD exports a batch (matching keys into the
// station store), a carrier takes it, the module injects it, the KMD collects the receipt; then the
// terminal spends every key through the KEYS group and the station opens every message. The module
// reboots every few visits and loses power at a random flash operation on some. Every visit must
// succeed, no key is used twice on either side, every store stays inside its bounds, and a boot
// after the last visit reads no more than twice what the first one read.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { Group, KeysCmd, SystemCmd } from '../firmware/link/groups.js';
import { decodeServiceHeader } from '../firmware/crypto/service.js';
import { prng } from '../firmware/flash/faults.js';
import { SECURE_SECTORS, secureBounds } from '../firmware/secure/secure-area.js';
import { startRig } from '../host-tools/test-support/module-rig.js';
import type { Rig } from '../host-tools/test-support/module-rig.js';
import { KmdHome } from '../host-tools/kmd/home.js';
import { enrollTerminal } from '../host-tools/kmd/enroll.js';
import { exportBatch, markOnCarrier, readOutbox } from '../host-tools/kmd/export.js';
import { collectReceipts } from '../host-tools/kmd/collect.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Station } from '../host-tools/station/station.js';
import { StationStore } from '../host-tools/station/store.js';

const VISITS = Number(process.env['QKT_LIFETIME_VISITS'] ?? 1000);
const BITS = 4096; // 512 key bytes a visit: two OTP messages of 224 bytes (32-byte MAC key each)
const MESSAGE = BITS / 8 / 2 - 32;
const REBOOT_EVERY = 5;
const CUT_EVERY = 7;
const DAY = 86_400_000;

t.setTimeout(600_000);

t.test(`${VISITS} field visits: export, inject, spend every key, collect; reboots and power cuts`, async (t) => {
  // fsync-heavy stores on a RAM disk where there is one: the test is about state, not disks.
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'qkt-life-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let now = Date.parse('2027-01-01T00:00:00Z');
  const clock = () => now;
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: VISITS * BITS + BITS, now: clock });
  const img = join(dir, 'T1.img');
  enrollTerminal(home, 'T1', img);
  const deviceKey = home.deviceKey('T1');
  t.teardown(() => deviceKey.fill(0));
  const flash = NorFlash.fromImage(readFileSync(img));
  const store = new StationStore(home.path('station'));
  const station = new Station(store, clock);
  t.teardown(() => station.close());
  const rand = prng(8);

  let cuts = 0;
  const boot = async (): Promise<{ rig: Rig; readBytes: number }> => {
    if (flash.powerLost) flash.reboot();
    const r0 = flash.stats.readBytes;
    const rig = await startRig({ flash, deviceKey, terminalId: 'T1', terminal: { clock, onPowerCut: () => cuts++ } });
    return { rig, readBytes: flash.stats.readBytes - r0 };
  };
  let { rig, readBytes: firstBootReads } = await boot();
  let lastBootReads = firstBootReads;
  /** Run `fn` on the module; after a power cut, boot again and run it again (the visit goes on). */
  const onModule = async <T>(fn: (r: Rig) => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(rig);
      } catch (e) {
        if (!flash.powerLost || attempt > 3) throw e;
        await rig.close();
        ({ rig } = await boot());
      }
    }
  };
  const status = async () => (await onModule((r) => r.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))) as { pool: { storedKeyBits: number; consumedKeyBits: number; batches: unknown[]; staging: unknown }; secureArea: { damaged: boolean } };

  // Key bits used, per batch: the highest end so far. Consumption is in order on both sides, so
  // a range starting below it would be a key used twice.
  const usedTo = new Map<string, number>();
  let messages = 0;
  let lostLastMessages = 0;
  let opsPerVisit = 0;
  let worstStationBatches = 0;
  let worstTerminalBatches = 0;
  let voidedBits = 0;
  let worstStationNames = 0;

  for (let v = 1; v <= VISITS; v++) {
    now += 3 * DAY;
    if (v % REBOOT_EVERY === 0) {
      await rig.close();
      ({ rig, readBytes: lastBootReads } = await boot());
    }
    const m0 = flash.faults.mutations;
    if (v % CUT_EVERY === 0 && opsPerVisit > 0) flash.faults.cutAfter(1 + Math.floor(rand() * opsPerVisit), (['torn', 'clean', 'after'] as const)[v % 3]!, v);

    // KMD: export onto a fresh carrier (the matching keys go into the station store, inactive).
    const carrierDir = join(dir, 'carrier');
    rmSync(carrierDir, { recursive: true, force: true });
    const carrier = Carrier.init(carrierDir, { carrierId: 'car-life', kmdId: home.config.kmdId });
    const e = exportBatch(home, 'T1', BITS, { station: store });
    carrier.addBatch(readOutbox(e));
    markOnCarrier(home, 'T1', e.record.batchId, carrier.carrierId);

    // The field visit: inject (a cut is rebooted through and the re-run resumes), receipt back.
    const entry = carrier.batchFor('T1')!;
    const r = await onModule((m) => injectBatch(m.client, m.params, carrier.readBatch(entry)));
    carrier.recordReceipt('T1', r.batchId, r.receipt);
    const collected = collectReceipts(home, carrier, { station: store });
    if (collected.collected.length !== 1) t.fail(`visit ${v}: receipt not collected`, { collected });

    // Spend every key: OTP uplinks, each opened by the station with the keys it names.
    // A message takes a 32-byte MAC key and its length in pad; what a cut leaves below 32 bytes
    // is crumbs, retired when the next batch commits.
    for (let guard = 0, left = (await status()).pool.storedKeyBits / 8; left >= 32; guard++, left = (await status()).pool.storedKeyBits / 8) {
      if (guard > 8) throw new Error(`visit ${v}: keys left after ${guard} messages`);
      const data = new Uint8Array(Math.min(MESSAGE, left - 32)).fill(v & 0xff);
      let m: Uint8Array;
      try {
        const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
        m = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: data }))['m'] as Uint8Array;
      } catch (err) {
        if (!flash.powerLost) throw new Error(`visit ${v}: SEAL failed: ${(err as Error).message}`);
        // The keys this message took are burned at the terminal; the station burns them when
        // the next message names later keys. Boot and go on with what is left.
        await rig.close();
        ({ rig } = await boot());
        continue;
      }
      for (const k of decodeServiceHeader(m).header.keyIds) {
        const id = Buffer.from(k.batchId).toString('hex');
        if (k.bitOffset < (usedTo.get(id) ?? 0)) t.fail(`visit ${v}: key ${id}:${k.bitOffset} used twice by the terminal`);
        usedTo.set(id, k.bitOffset + k.bits);
      }
      const plain = station.openUplink('T1', m); // takes each key once by id: a second use throws
      if (Buffer.compare(plain, data) !== 0) t.fail(`visit ${v}: uplink opened to other bytes`);
      messages++;
    }

    // The terminal retired the batch at its last key. A power cut that took the last message
    // with it burned those keys at the terminal only: the station keeps them until voided.
    const st = await status();
    worstTerminalBatches = Math.max(worstTerminalBatches, st.pool.batches.length);
    if (st.pool.batches.length > 1 || st.pool.storedKeyBits >= 256 || st.pool.staging !== null) t.fail(`visit ${v}: terminal pool holds more than crumbs`, { pool: st.pool });
    if (st.secureArea.damaged) t.fail(`visit ${v}: secure area damaged`, { st });
    const sp = store.status('T1');
    worstStationBatches = Math.max(worstStationBatches, sp.batches.length);
    worstStationNames = Math.max(worstStationNames, sp.active.length + sp.inactive.length);
    // Nothing is voided by hand: each receipt lists the batches the terminal holds, and
    // `collect` retires at the station every older batch it no longer does.
    for (const r of collected.retired) {
      lostLastMessages++;
      voidedBits += r.bits;
    }
    if (v === 1) opsPerVisit = flash.faults.mutations - m0;
  }
  await rig.close();
  ({ rig, readBytes: lastBootReads } = await boot());
  const final = await status();
  await rig.close();

  // ---- what a service life must show
  // Both sides account for every bit exported: used, burned by a cut, or voided.
  const stationStored = store.status('T1').storedKeyBits;
  const stationUsed = station.consumedBits.get('T1') ?? 0;
  t.equal(stationUsed + voidedBits + stationStored, VISITS * BITS, `station: ${stationUsed} bits used, ${voidedBits} voided, ${stationStored} held`);
  t.equal(final.pool.consumedKeyBits + final.pool.storedKeyBits, VISITS * BITS, 'terminal: every bit used or burned');
  t.ok(messages >= VISITS * 2 - cuts, `${messages} uplinks opened by the station (a cut loses at most the message it interrupts)`);
  t.ok(worstTerminalBatches <= 1, `terminal pool: at most ${worstTerminalBatches} live batch (crumbs) after a visit`);
  t.ok(cuts >= Math.floor(VISITS / CUT_EVERY) - 2, `${cuts} power cuts during visits, every visit completed`);
  t.match(final, { pool: { staging: null }, secureArea: { damaged: false } });
  t.ok(final.pool.storedKeyBits < 256, 'the terminal holds at most crumbs at the end');
  t.ok(worstStationBatches <= 2, `station pool: at most ${worstStationBatches} live batches after a visit (this one, and crumbs of the last)`);
  t.ok(worstStationNames <= 3, `station state.json names at most ${worstStationNames} batches after a visit`);
  const log = (await (async () => {
    const r = (await boot()).rig;
    const a = await r.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 64 });
    await r.close();
    return a;
  })()) as { events: Array<{ type: string }>; total: number };
  const bounds = secureBounds(flash.geometry.sectorSize);
  t.ok(log.events.length <= bounds.securityEvents + bounds.routineEvents, `audit log holds ${log.events.length} of ${log.total} events (bound ${bounds.securityEvents + bounds.routineEvents})`);
  t.equal(log.events[0]?.type, 'enrolled', 'the enrolment is still readable after the whole life');
  t.ok(lastBootReads <= 2 * firstBootReads, `boot after the last visit read ${lastBootReads} flash bytes, the first ${firstBootReads} (mount cost within 2x)`);
  const erases = [...flash.eraseCounts()];
  const secure = erases.slice(0, SECURE_SECTORS);
  t.ok(Math.max(...secure) < VISITS / 4, `secure area erase counts ${secure.join(' ')} over ${VISITS} visits`);
  t.ok(lostLastMessages > 0, `${lostLastMessages} station batches with crumbs or a lost last message retired by receipts`);
  t.comment(`worst sector erased ${Math.max(...erases)} times`);
});
