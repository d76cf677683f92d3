// ADMIN group: zeroize and factory reset need a fresh KMD token; replays and forgeries count
// against a retry counter kept in flash, which locks the commands out for good at the limit.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { injectBatch } from '../../../host-tools/link/inject.js';
import { makeAdminToken } from '../../../firmware/crypto/token.js';
import type { AdminCommand } from '../../../firmware/crypto/token.js';
import { enrollFlash } from '../../../firmware/secure/enroll.js';
import { AdminCmd, Group, KeysCmd, SystemCmd } from '../../../firmware/link/groups.js';
import { Rc } from '../../../firmware/link/errors.js';
import { findWindows, makeBatch, poolOf, poolRegion, startRig } from '../../../host-tools/test-support/module-rig.js';
import type { Rig } from '../../../host-tools/test-support/module-rig.js';
import { MAX_FAILED_AUTH } from '../../../firmware/commands/admin.js';

const linkError = (rc: number, more: object = {}) => ({ name: 'LinkError', rc, ...more });
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

const token = (rig: Rig, command: AdminCommand, counter: number, o: { key?: Uint8Array; terminalId?: string } = {}) =>
  makeAdminToken(o.key ?? rig.deviceKey, { terminalId: o.terminalId ?? rig.terminalId, command, counter });
const zeroize = (rig: Rig, tok: Uint8Array) => rig.client.request(Group.ADMIN, AdminCmd.ZEROIZE, { token: tok });
const reset = (rig: Rig, tok: Uint8Array) => rig.client.request(Group.ADMIN, AdminCmd.FACTORY_RESET, { token: tok });

t.test('zeroize with a valid token empties the pool and keeps the anti-rollback seq; its replay is refused', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const a = makeBatch(rig.deviceKey, { bits: 32 * 1024 });
  const b = makeBatch(rig.deviceKey, { bits: 16 * 1024 });
  for (const x of [a, b]) await injectBatch(rig.client, rig.params, x.sealed);
  t.equal(MAX_FAILED_AUTH, 5);

  t.same(await zeroize(rig, token(rig, 'zeroize', 1)), { zeroized: true });
  t.match(poolOf(rig.terminal), { storedKeyBits: 0, batches: [], staging: null, lastSeq: b.seq });
  const image = rig.flash.snapshot();
  t.same(findWindows(image, a.keys), [], 'no byte of batch a left in flash');
  t.same(findWindows(image, b.keys), [], 'no byte of batch b left in flash');

  const raw = poolRegion(rig.flash);
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 1)), linkError(Rc.BAD_TOKEN, { reason: 'token replayed', details: { left: 4 } }), 'the same token again');
  t.ok(same(poolRegion(rig.flash), raw), 'a refused zeroize touches no pool byte');
  await t.rejects(injectBatch(rig.client, rig.params, a.sealed), linkError(Rc.STALE_BATCH), 'the zeroized batches cannot come back');
  const c = makeBatch(rig.deviceKey, { bits: 8192 });
  await injectBatch(rig.client, rig.params, c.sealed);
  t.match(poolOf(rig.terminal), { storedKeyBits: 8192, lastSeq: c.seq }, 'a newer batch is accepted');

  // A newer token works and resets the bad-token count.
  t.same(await zeroize(rig, token(rig, 'zeroize', 7)), { zeroized: true });
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 6)), linkError(Rc.BAD_TOKEN, { details: { left: 4 } }), 'an older counter is a replay; the count started again');
});

t.test('bad tokens count down and lock out after 5, across a reboot', async (t) => {
  let rig = await startRig();
  const kept = makeBatch(rig.deviceKey, { bits: 8192 });
  await injectBatch(rig.client, rig.params, kept.sealed);
  const pool = poolOf(rig.terminal);
  const bad = [
    token(rig, 'zeroize', 1, { key: new Uint8Array(randomBytes(32)) }), // forged MAC
    token(rig, 'factory-reset', 1), // another command
    token(rig, 'zeroize', 1, { terminalId: 'T2' }), // another terminal
    new Uint8Array(randomBytes(80)), // garbage
  ];
  for (let i = 0; i < bad.length; i++) {
    await t.rejects(zeroize(rig, bad[i]!), linkError(Rc.BAD_TOKEN, { details: { left: MAX_FAILED_AUTH - 1 - i } }), `bad token ${i + 1}`);
  }
  await t.rejects(reset(rig, token(rig, 'zeroize', 1)), linkError(Rc.LOCKED_OUT), 'the fifth, on either command, locks out');
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 1)), linkError(Rc.LOCKED_OUT), 'then even a valid token is refused');
  t.same(poolOf(rig.terminal), pool, 'nothing was wiped');
  const log = await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, {});
  const types = (log['events'] as Array<{ type: string }>).map((e) => e.type);
  t.equal(types.filter((x) => x === 'auth-failed').length, 4);
  t.equal(types.filter((x) => x === 'lockout').length, 1);

  // The lockout is in flash: a power cycle does not clear it.
  await rig.close();
  rig = await startRig({ flash: rig.flash, deviceKey: rig.deviceKey });
  t.teardown(() => rig.close());
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 2)), linkError(Rc.LOCKED_OUT), 'still locked out after a reboot');
  await t.rejects(reset(rig, token(rig, 'factory-reset', 3)), linkError(Rc.LOCKED_OUT));
  t.same(poolOf(rig.terminal), pool);
});

t.test('the retry count survives a reboot too, and a good token clears it', async (t) => {
  let rig = await startRig();
  for (let i = 0; i < 3; i++) await t.rejects(zeroize(rig, token(rig, 'zeroize', 1, { terminalId: 'X' })), linkError(Rc.BAD_TOKEN));
  await rig.close();
  rig = await startRig({ flash: rig.flash, deviceKey: rig.deviceKey });
  t.teardown(() => rig.close());
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 1, { terminalId: 'X' })), linkError(Rc.BAD_TOKEN, { details: { left: 1 } }), 'the fourth, after the reboot: one left');
  await zeroize(rig, token(rig, 'zeroize', 1));
  for (let i = 0; i < 4; i++) await t.rejects(zeroize(rig, token(rig, 'zeroize', 1)), linkError(Rc.BAD_TOKEN), `replay ${i + 1} after a good token`);
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 1)), linkError(Rc.LOCKED_OUT));
});

t.test('factory reset returns the module to unenrolled: identity, keys and device key gone', async (t) => {
  let rig = await startRig();
  const a = makeBatch(rig.deviceKey, { bits: 16 * 1024 });
  await injectBatch(rig.client, rig.params, a.sealed);
  await t.rejects(reset(rig, token(rig, 'zeroize', 1)), linkError(Rc.BAD_TOKEN), 'a zeroize token does not reset');
  t.same(await reset(rig, token(rig, 'factory-reset', 1)), { reset: true });
  t.match(rig.terminal.status(), { state: 'unenrolled', enrolled: false, terminalId: null, pool: { storedKeyBits: 0 } });
  await t.rejects(injectBatch(rig.client, rig.params, a.sealed), linkError(Rc.NOT_ENROLLED));
  await t.rejects(zeroize(rig, token(rig, 'zeroize', 2)), linkError(Rc.NOT_ENROLLED));
  const image = rig.flash.snapshot();
  t.same(findWindows(image, rig.deviceKey), [], 'the device key is gone from flash');
  t.same(findWindows(image, a.keys), [], 'the keys are gone from flash');

  // After a power cycle it is still a blank module, ready for the factory.
  await rig.close();
  const { flash } = rig;
  rig = await startRig({ flash });
  t.match(rig.terminal.status(), { state: 'unenrolled', enrolled: false });
  await rig.close();
  const deviceKey = new Uint8Array(randomBytes(32));
  enrollFlash(flash, { terminalId: 'T7', deviceKey });
  rig = await startRig({ flash, deviceKey, terminalId: 'T7' });
  t.teardown(() => rig.close());
  t.match(rig.terminal.status(), { state: 'ready', terminalId: 'T7', pool: { storedKeyBits: 0, batches: [] } });
  await injectBatch(rig.client, rig.params, makeBatch(deviceKey, { terminalId: 'T7', bits: 8192, seq: 1 }).sealed);
  t.match(poolOf(rig.terminal), { storedKeyBits: 8192 }, 're-enrolled, it takes batches again');
});

t.test('zeroize also ends open key sessions: none keeps sealing with a key held in RAM', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 32 * 1024 }).sealed);
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' }))['s'];
  await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array([1, 2, 3]) });
  await zeroize(rig, token(rig, 'zeroize', 1));
  await t.rejects(rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array([4]) }), linkError(Rc.NO_TRANSFER), 'the session is gone');
});
