// KEYS group cross-checked against a reference: what the module seals, the test opens with the
// plaintext keys the batch carried (the station's view), and the other way; no key is used twice.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { injectBatch } from '../../../host-tools/link/inject.js';
import { decodeServiceHeader, encodeServiceHeader, otpOpen, sessionOpen, sessionSeal, splitOtpKey } from '../../../firmware/crypto/service.js';
import type { AeadSuite, KeyRange } from '../../../firmware/crypto/service.js';
import { AEAD_SUITES } from '../../../firmware/crypto/service.js';
import { Group, KeysCmd } from '../../../firmware/link/groups.js';
import { Rc } from '../../../firmware/link/errors.js';
import { findWindows, makeBatch, poolOf, startRig } from '../../../host-tools/test-support/module-rig.js';
import type { Rig, TestBatch } from '../../../host-tools/test-support/module-rig.js';

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
const linkError = (rc: number) => ({ name: 'LinkError', rc });

/** The station's side: key ids are (batch id, bit offset), so it finds the bytes without asking. */
class Station {
  /** Byte ranges used so far, per batch (hex id): to prove no key serves twice. */
  readonly used = new Map<string, Array<[number, number]>>();
  constructor(readonly batches: TestBatch[]) {}

  key(r: KeyRange): Uint8Array {
    const b = this.batches.find((x) => same(x.batchId, r.batchId));
    if (!b) throw new Error('unknown batch id in a key range');
    const id = Buffer.from(r.batchId).toString('hex');
    const start = r.bitOffset / 8;
    const end = start + r.bits / 8;
    const list = this.used.get(id) ?? [];
    for (const [s, e] of list) if (start < e && s < end) throw new Error(`key bytes ${start}..${end} of batch ${id.slice(0, 8)} used twice`);
    list.push([start, end]);
    this.used.set(id, list);
    return b.keys.subarray(start, end);
  }

  bitsUsed(): number {
    let n = 0;
    for (const l of this.used.values()) for (const [s, e] of l) n += (e - s) * 8;
    return n;
  }
}

async function rigWith(batches: Array<{ bits: number; purpose: 'enc' | 'auth' | 'any' }>, o: Parameters<typeof startRig>[0] = {}): Promise<{ rig: Rig; batches: TestBatch[] }> {
  const rig = await startRig(o);
  const made: TestBatch[] = [];
  for (const b of batches) {
    const m = makeBatch(rig.deviceKey, { ...b, chunkSize: 1024 });
    await injectBatch(rig.client, rig.params, m.sealed);
    made.push(m);
  }
  return { rig, batches: made };
}

t.test('OTP uplinks open with the reference otpOpen under the keys their headers name', async (t) => {
  const { rig, batches } = await rigWith([
    { bits: 64 * 1024, purpose: 'enc' },
    { bits: 16 * 1024, purpose: 'auth' },
  ]);
  t.teardown(() => rig.close());
  const [enc, auth] = batches as [TestBatch, TestBatch];
  const station = new Station(batches);
  const neg = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' });
  t.match(neg, { s: Number, mode: 'otp', enc: 'enc', auth: 'auth' });

  let counter = 0;
  for (const n of [1, 0, 16, 333, 4096, 7]) {
    const plain = new Uint8Array(randomBytes(n));
    const r = await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: neg['s'], d: plain });
    const m = r['m'] as Uint8Array;
    const { header, length } = decodeServiceHeader(m);
    t.equal(header.mode, 'otp');
    t.equal(header.counter, counter++, 'message counter counts up');
    const [mac, pad] = header.keyIds;
    t.ok(same(mac!.batchId, auth.batchId) && mac!.bits === 256, 'the MAC key comes from the auth sub-pool');
    if (n > 0) t.ok(same(pad!.batchId, enc.batchId) && pad!.bits === n * 8, 'the pad comes from the enc sub-pool, as long as the message');
    else t.equal(header.keyIds.length, 1, 'an empty message takes only a MAC key');
    t.equal(r['keyBits'], 256 + n * 8);
    const material = Buffer.concat(header.keyIds.map((k) => station.key(k)));
    const { macKey32, keyStream } = splitOtpKey(material);
    t.ok(same(otpOpen(keyStream, m.subarray(length), macKey32, m.subarray(0, length)), plain), `${n}-byte message opens under the reference`);
    const forged = Uint8Array.from(m);
    forged[forged.length - 1]! ^= 1;
    t.throws(() => otpOpen(keyStream, forged.subarray(length), macKey32, forged.subarray(0, length)), 'a flipped bit does not verify');
  }
  // Keys are taken in pool order: each sub-pool's ranges are contiguous from bit 0.
  for (const [id, list] of station.used) {
    let at = 0;
    for (const [s, e] of list) {
      t.equal(s, at, `batch ${id.slice(0, 8)}: next key starts where the last ended`);
      at = e;
    }
  }
  t.equal(poolOf(rig.terminal)['consumedKeyBits'], station.bitsUsed(), 'the pool counts exactly the bits the messages name');

  // A used key is gone from the flash (zeroized); an unused one is still there.
  const image = rig.flash.snapshot();
  for (const [id, list] of station.used) {
    const b = batches.find((x) => Buffer.from(x.batchId).toString('hex') === id)!;
    for (const [s, e] of list) if (e - s >= 8) t.same(findWindows(image, b.keys.subarray(s, e)), [], `used key bytes ${s}..${e} are zeroized in flash`);
  }
  t.not(findWindows(image, enc.keys.subarray(enc.keys.length - 64)).length, 0, 'unused keys are still in flash');

  // OTP serves uplinks only.
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s: neg['s'], m: rig.sent[0]! }), { name: 'LinkError' });
});

t.test('OTP: the MAC sub-pool runs out, and nothing more is consumed', async (t) => {
  const { rig } = await rigWith([
    { bits: 8 * 1024, purpose: 'enc' },
    { bits: 512, purpose: 'auth' }, // two MAC keys
  ]);
  t.teardown(() => rig.close());
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }))['s'];
  for (let i = 0; i < 2; i++) await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(10) });
  const before = poolOf(rig.terminal);
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(10) }), linkError(Rc.KEYS_EXHAUSTED));
  t.same(poolOf(rig.terminal), before, 'the refused seal took no key');
});

t.test('AEAD: uplinks open with sessionOpen, downlinks sealed by the test open in the module, replays refused', async (t) => {
  let now = 1_800_000_000_000;
  const { rig, batches } = await rigWith([{ bits: 16 * 1024, purpose: 'enc' }], { terminal: { clock: () => now } });
  t.teardown(() => rig.close());
  const station = new Station(batches);
  const neg = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', rekeyMessages: 3, rekeyMs: 60_000 });
  const s = neg['s'];

  // Uplinks: three under the first session key, the fourth after a rekey by count.
  const keys: Uint8Array[] = [];
  let current: KeyRange | undefined;
  for (let i = 0; i < 4; i++) {
    const plain = new Uint8Array(randomBytes(50 + i));
    const r = await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: plain });
    const m = r['m'] as Uint8Array;
    const { header, length } = decodeServiceHeader(m);
    t.equal(header.mode, 'aead');
    t.equal(r['rekeyed'], i === 3, `message ${i}: rekeyed ${i === 3}`);
    const range = header.keyIds[0]!;
    if (!current || range.bitOffset !== current.bitOffset) {
      keys.push(station.key(range)); // a new session key: fresh pool bits, never used before
      current = range;
    }
    t.equal(header.counter, i === 3 ? 0 : i, 'the counter restarts under a new key');
    t.ok(same(sessionOpen(keys.at(-1)!, header.counter, m.subarray(length), m.subarray(0, length), 'up'), plain), `uplink ${i} opens with sessionOpen(up)`);
    t.throws(() => sessionOpen(keys.at(-1)!, header.counter, m.subarray(length), m.subarray(0, length), 'down'), 'not in the other direction');
  }
  t.equal(keys.length, 2, 'two session keys so far');

  // Downlinks under the current session key, sealed by the test (the station).
  const down = (counter: number, plain: Uint8Array, o: { key?: Uint8Array; range?: KeyRange; dir?: 'up' | 'down' } = {}) => {
    const head = encodeServiceHeader({ mode: 'aead', keyIds: [o.range ?? current!], counter });
    return Buffer.concat([head, sessionSeal(o.key ?? keys.at(-1)!, counter, plain, head, o.dir ?? 'down')]);
  };
  // Receive counters of a session key are below its message limit (rekeyMessages = 3): 0..2.
  const p1 = new Uint8Array(randomBytes(300));
  const m1 = down(1, p1);
  t.ok(same((await rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: m1 }))['d'] as Uint8Array, p1), 'downlink opens in the module');
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: m1 }), linkError(Rc.AUTH_FAILED), 'the same downlink again: replay');
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(0, p1) }), linkError(Rc.AUTH_FAILED), 'an older counter: replay');
  // Forgeries carrying the next counter must not use it up: the station's genuine message follows.
  const tampered = down(2, p1);
  tampered[tampered.length - 20]! ^= 4;
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: tampered }), linkError(Rc.AUTH_FAILED), 'tampered');
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(2, p1, { dir: 'up' }) }), linkError(Rc.AUTH_FAILED), 'sealed in the uplink direction');
  const old = { ...current!, bitOffset: current!.bitOffset - 256 };
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(2, p1, { key: keys[0]!, range: old }) }), linkError(Rc.KEY_NOT_AVAILABLE), 'the retired session key');
  const p2 = new Uint8Array(randomBytes(12));
  t.ok(same((await rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(2, p2) }))['d'] as Uint8Array, p2), 'the genuine counter-2 message still opens after the forgeries');
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(3, p2) }), linkError(Rc.AUTH_FAILED), 'past the key\'s message limit');

  // Rekey by age.
  now += 61_000;
  const r = await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(1) });
  t.equal(r['rekeyed'], true, 'rekeyed after rekeyMs');
  station.key(decodeServiceHeader(r['m'] as Uint8Array).header.keyIds[0]!);

  // An OTP session alongside: its keys never overlap the session keys (Station.key throws if so).
  const otp = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  const o = await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: otp, d: new Uint8Array(randomBytes(64)) });
  for (const k of decodeServiceHeader(o['m'] as Uint8Array).header.keyIds) station.key(k);
  t.equal(poolOf(rig.terminal)['consumedKeyBits'], station.bitsUsed(), 'every consumed bit is accounted for, none twice');

  await rig.client.request(Group.KEYS, KeysCmd.CLOSE, { s });
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(1) }), linkError(Rc.NO_TRANSFER), 'a closed session is gone');
});

t.test('sessions: bad negotiation refused, the oldest of too many sessions dropped', async (t) => {
  const { rig } = await rigWith([{ bits: 16 * 1024, purpose: 'any' }]);
  t.teardown(() => rig.close());
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'rot13' }), linkError(Rc.BAD_REQUEST));
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', rekeyMessages: 0 }), linkError(Rc.BAD_REQUEST));
  const ids: unknown[] = [];
  for (let i = 0; i < 5; i++) ids.push((await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s']);
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: ids[0], d: new Uint8Array(1) }), linkError(Rc.NO_TRANSFER));
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: ids[4], d: new Uint8Array(1) });
});

t.test('AEAD suites: negotiated by `suite`, named in every header, downlinks of another suite refused', async (t) => {
  for (const suite of AEAD_SUITES) {
    const { rig, batches } = await rigWith([{ bits: 8 * 1024, purpose: 'enc' }]);
    t.teardown(() => rig.close());
    const station = new Station(batches);
    const neg = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', suite });
    t.same(neg, { s: neg['s'], mode: 'aead', enc: 'enc', auth: 'auth', suite }, `${suite}: echoed`);
    const s = neg['s'];
    const plain = new Uint8Array(randomBytes(77));
    const m = (await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: plain }))['m'] as Uint8Array;
    t.equal(m.length, 31 + 77 + 16, `${suite}: same message size as GCM`);
    const { header, length } = decodeServiceHeader(m);
    t.equal(header.suite, suite === 'aes-256-gcm' ? undefined : suite, `${suite}: the header names it`);
    const key = station.key(header.keyIds[0]!);
    t.ok(same(sessionOpen(key, header.counter, m.subarray(length), m.subarray(0, length), 'up', suite), plain), `${suite}: uplink opens under the suite`);
    for (const other of AEAD_SUITES.filter((x) => x !== suite)) {
      t.throws(() => sessionOpen(key, header.counter, m.subarray(length), m.subarray(0, length), 'up', other), `${suite}: not as ${other}`);
    }
    const down = (as: AeadSuite, counter: number, d: Uint8Array) => {
      const head = encodeServiceHeader({ mode: 'aead', ...(as === 'aes-256-gcm' ? {} : { suite: as }), keyIds: [header.keyIds[0]!], counter });
      return Buffer.concat([head, sessionSeal(key, counter, d, head, 'down', as)]);
    };
    for (const other of AEAD_SUITES.filter((x) => x !== suite)) {
      await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(other, 0, plain) }), { ...linkError(Rc.DENIED), message: /suite/ }, `${suite}: a ${other} downlink is refused`);
    }
    // A message whose suite byte was changed on the way fails too: the byte is in the AAD.
    const moved = down(suite, 0, plain);
    moved[1] = suite === 'aes-256-gcm' ? 3 : 2;
    await t.rejects(rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: moved }), { name: 'LinkError' }, `${suite}: suite byte changed in transit`);
    t.ok(same((await rig.client.request(Group.KEYS, KeysCmd.OPEN, { s, m: down(suite, 0, plain) }))['d'] as Uint8Array, plain), `${suite}: its own downlink opens`);
  }
});

t.test('AEAD suites: an unknown suite, or a suite on an OTP session, is refused and consumes nothing', async (t) => {
  const { rig } = await rigWith([{ bits: 8 * 1024, purpose: 'any' }]);
  t.teardown(() => rig.close());
  const before = poolOf(rig.terminal)['consumedKeyBits'];
  const older = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  for (const suite of ['sm4-cbc', 'AES-256-GCM', '', 7]) {
    await t.rejects(rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any', suite }), { ...linkError(Rc.BAD_REQUEST), message: /suite/ }, `suite ${JSON.stringify(suite)}`);
  }
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', suite: 'sm4-ctr-hmac-sm3' }), { ...linkError(Rc.BAD_REQUEST), message: /aead/ });
  t.equal(poolOf(rig.terminal)['consumedKeyBits'], before, 'no key taken');
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: older, d: new Uint8Array(1) });
  t.pass('and no session closed');
  const plain = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' });
  t.same(Object.keys(plain).sort(), ['auth', 'enc', 'mode', 's'], 'without `suite` the reply is what it always was');
});
