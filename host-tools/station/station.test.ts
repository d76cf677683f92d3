// The station checks an uplink before it spends the keys the uplink names: a forged header (OTP
// or a new AEAD session key), however far ahead of the frontier it points, is refused and burns
// nothing; the genuine uplinks then open with the same keys; a replay is refused. AEAD sessions are
// bounded per terminal and end when their batch is voided.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { Group, KeysCmd } from '../../firmware/link/groups.js';
import { decodeServiceHeader, encodeServiceHeader } from '../../firmware/crypto/service.js';
import type { KeyRange } from '../../firmware/crypto/service.js';
import { startRig } from '../test-support/module-rig.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal } from '../kmd/enroll.js';
import { exportBatch } from '../kmd/export.js';
import { injectBatch } from '../link/inject.js';
import { MAX_SESSIONS_PER_TERMINAL, Station } from './station.js';
import { StationStore } from './store.js';

t.test('forged uplinks burn no station key; genuine ones open; a replay is refused', async (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const flash = NorFlash.fromImage(readFileSync(join(dir, 'T1.img')));
  const deviceKey = home.deviceKey('T1');
  const store = new StationStore(home.path('station'));
  const station = new Station(store);
  t.teardown(() => station.close());
  const rig = await startRig({ flash, deviceKey, terminalId: 'T1' });
  t.teardown(() => rig.close());
  const e = exportBatch(home, 'T1', 65536, { station: store });
  await injectBatch(rig.client, rig.params, readFileSync(e.file));
  deviceKey.fill(0);
  const batchId = Buffer.from(e.record.batchId, 'hex');
  const stored = () => store.status('T1').storedKeyBits;
  t.equal(stored(), 65536);

  const forge = (mode: 'otp' | 'aead', bitOffset: number) =>
    Uint8Array.from([...encodeServiceHeader({ mode, keyIds: [{ batchId, bitOffset, bits: 256 }], counter: 0 }), ...randomBytes(48)]);
  t.throws(() => station.openUplink('T1', forge('otp', 65536 - 256)), { name: 'StationError', message: /does not authenticate \(no key spent\)/ });
  t.throws(() => station.openUplink('T1', forge('aead', 65536 - 512)), { name: 'StationError', message: /does not authenticate/ });
  t.equal(stored(), 65536, 'two forged uplinks, one naming the last key: not a bit burned');

  // The genuine uplinks: OTP, then an AEAD session; each opens with the keys it names.
  const otp = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  const m1 = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: otp, d: new Uint8Array(100).fill(1) }))['m'] as Uint8Array;
  t.same(station.openUplink('T1', m1), new Uint8Array(100).fill(1));
  t.throws(() => station.openUplink('T1', m1), 'a replayed OTP uplink is refused (its keys are spent)');
  const aead = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' }))['s'];
  const m2 = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: aead, d: new Uint8Array(40).fill(2) }))['m'] as Uint8Array;
  // A forgery under the session key the genuine message names, sent first: refused, the key not taken.
  const sk = decodeServiceHeader(m2).header.keyIds[0]!;
  const before = stored();
  t.throws(() => station.openUplink('T1', forge('aead', sk.bitOffset)), { name: 'StationError' });
  t.equal(stored(), before, 'a forged first message under a session key takes nothing');
  t.same(station.openUplink('T1', m2), new Uint8Array(40).fill(2));
  t.throws(() => station.openUplink('T1', m2), { name: 'StationError', message: /replayed/ });
  t.equal(store.status('T1').consumedKeyBits, ((await rig.client.request(Group.SYSTEM, 1, {}))['pool'] as { consumedKeyBits: number }).consumedKeyBits, 'station and terminal used the same key bits');
});

t.test('AEAD sessions: at most MAX_SESSIONS_PER_TERMINAL per terminal (the oldest goes); a voided batch ends its sessions', async (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const flash = NorFlash.fromImage(readFileSync(join(dir, 'T1.img')));
  const deviceKey = home.deviceKey('T1');
  const store = new StationStore(home.path('station'));
  const station = new Station(store);
  t.teardown(() => station.close());
  const rig = await startRig({ flash, deviceKey, terminalId: 'T1' });
  t.teardown(() => rig.close());
  const e = exportBatch(home, 'T1', 65536, { station: store });
  await injectBatch(rig.client, rig.params, readFileSync(e.file));
  deviceKey.fill(0);
  // One session more than the cap, each opened at the station by its first uplink.
  const keys: KeyRange[] = [];
  for (let i = 0; i <= MAX_SESSIONS_PER_TERMINAL; i++) {
    const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' }))['s'];
    const m = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(8).fill(i) }))['m'] as Uint8Array;
    t.same(station.openUplink('T1', m), new Uint8Array(8).fill(i));
    keys.push(decodeServiceHeader(m).header.keyIds[0]!);
  }
  t.throws(() => station.sealDownlink('T1', keys[0]!, new Uint8Array(4)), { name: 'StationError', message: /no AEAD session/ }, 'the oldest session was dropped');
  for (const k of keys.slice(1)) t.ok(station.sealDownlink('T1', k, new Uint8Array(4)).length > 0);
  // The KMD voids the batch (another process would do the same through the store's files).
  const other = new StationStore(home.path('station'));
  other.voidBatch('T1', e.record.batchId);
  other.close();
  t.throws(() => station.sealDownlink('T1', keys[1]!, new Uint8Array(4)), { name: 'StationStoreError', message: /session ended: batch [0-9a-f]{8} of T1 is void at the station/ });
  t.throws(() => station.sealDownlink('T1', keys[1]!, new Uint8Array(4)), { name: 'StationError', message: /no AEAD session/ }, 'and it stays dropped');
});

t.test('AEAD suites: the station opens with the suite the header names, seals downlinks with it, and keeps one suite per key', async (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const flash = NorFlash.fromImage(readFileSync(join(dir, 'T1.img')));
  const deviceKey = home.deviceKey('T1');
  const store = new StationStore(home.path('station'));
  const station = new Station(store);
  t.teardown(() => station.close());
  const rig = await startRig({ flash, deviceKey, terminalId: 'T1' });
  t.teardown(() => rig.close());
  const e = exportBatch(home, 'T1', 65536, { station: store });
  await injectBatch(rig.client, rig.params, readFileSync(e.file));
  deviceKey.fill(0);
  for (const suite of ['chacha20-poly1305', 'sm4-ctr-hmac-sm3'] as const) {
    const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any', suite }))['s'];
    const m = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(40).fill(3) }))['m'] as Uint8Array;
    const h = decodeServiceHeader(m).header;
    // The same message relabelled as another suite, before and after the genuine one: refused, nothing taken.
    const before = store.status('T1').storedKeyBits;
    const relabelled = Uint8Array.from(m);
    relabelled[1] = suite === 'sm4-ctr-hmac-sm3' ? 3 : 4;
    t.throws(() => station.openUplink('T1', relabelled), { name: 'StationError', message: /does not authenticate/ }, `${suite}: a relabelled first message`);
    t.equal(store.status('T1').storedKeyBits, before, `${suite}: nothing taken`);
    t.same(station.openUplink('T1', m), new Uint8Array(40).fill(3), `${suite}: genuine uplink opens`);
    const m2 = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(5).fill(4) }))['m'] as Uint8Array;
    const other = Uint8Array.from(m2);
    other[1] = 2;
    t.throws(() => station.openUplink('T1', other), { name: 'StationError', message: /names suite aes-256-gcm, its session key is/ }, `${suite}: another suite under an open session's key`);
    t.same(station.openUplink('T1', m2), new Uint8Array(5).fill(4), `${suite}: the genuine second message still opens`);
    const down = station.sealDownlink('T1', h.keyIds[0]!, new Uint8Array(9).fill(5));
    t.equal(decodeServiceHeader(down).header.suite, suite, `${suite}: the downlink names the session's suite`);
    t.same((await rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down }))['d'], new Uint8Array(9).fill(5), `${suite}: the terminal opens the station's downlink`);
  }
});
