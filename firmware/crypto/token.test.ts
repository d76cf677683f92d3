// Admin tokens: round trip, node:crypto cross-check, binding to terminal and command, tampering,
// wrong device key. Replay (counter) is the module's check; here we only return the counter.
import t from 'tap';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { decodeAdminToken, makeAdminToken, verifyAdminToken } from './token.js';
import { toHex } from '../../fixtures/crypto/load.js';

const rand = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

t.test('layout and MAC match the documented form (node:crypto)', async (t) => {
  const dk = rand(32);
  const tok = makeAdminToken(dk, { terminalId: 'T-7', command: 'factory-reset', counter: 258 });
  const body = '514b544101' + '02' + '00000102' + '03' + Buffer.from('T-7').toString('hex');
  t.equal(toHex(tok.subarray(0, tok.length - 32)), body);
  const key = hkdfSync('sha256', dk, Buffer.from('qkt device key v1'), Buffer.from('qkt/v1 admin token mac\0'), 32);
  t.equal(toHex(tok.subarray(tok.length - 32)), createHmac('sha256', Buffer.from(key)).update(Buffer.from(body, 'hex')).digest('hex'));
  t.same(decodeAdminToken(tok), { terminalId: 'T-7', command: 'factory-reset', counter: 258 });
});

t.test('verify: ok with the counter; bound to terminal, command and device key', async (t) => {
  const dk = rand(32);
  const tok = makeAdminToken(dk, { terminalId: 'T-7', command: 'zeroize', counter: 5 });
  t.same(verifyAdminToken(dk, tok, { terminalId: 'T-7', command: 'zeroize' }), { ok: true, counter: 5 });
  t.same(verifyAdminToken(dk, tok, { terminalId: 'T-8', command: 'zeroize' }).ok, false);
  t.same(verifyAdminToken(dk, tok, { terminalId: 'T-7', command: 'factory-reset' }).ok, false);
  t.same(verifyAdminToken(rand(32), tok, { terminalId: 'T-7', command: 'zeroize' }).ok, false);
  for (let i = 0; i < tok.length; i++) {
    const bad = tok.slice();
    bad[i]! ^= 0x01;
    t.equal(verifyAdminToken(dk, bad, { terminalId: 'T-7', command: 'zeroize' }).ok, false, `byte ${i} flipped`);
  }
  t.equal(verifyAdminToken(dk, tok.subarray(0, 20), { terminalId: 'T-7', command: 'zeroize' }).ok, false, 'truncated');
  // A token for another terminal's key, relabelled, is still refused (MAC covers the id).
  const other = makeAdminToken(dk, { terminalId: 'T-8', command: 'zeroize', counter: 5 });
  t.equal(verifyAdminToken(dk, other, { terminalId: 'T-7', command: 'zeroize' }).ok, false);
});

t.test('validation names the parameter', async (t) => {
  const dk = rand(32);
  t.throws(() => makeAdminToken(dk, { terminalId: 'T-7', command: 'zeroize', counter: 0 }), { name: 'RangeError', message: /counter/ });
  t.throws(() => makeAdminToken(dk, { terminalId: 'T-7', command: 'zeroize', counter: 2 ** 32 }), { name: 'RangeError', message: /counter/ });
  t.throws(() => makeAdminToken(dk, { terminalId: 'T-7', command: 'reboot' as 'zeroize', counter: 1 }), { name: 'RangeError', message: /command/ });
  t.throws(() => makeAdminToken(rand(8), { terminalId: 'T-7', command: 'zeroize', counter: 1 }), { name: 'RangeError', message: /deviceKey/ });
  t.throws(() => verifyAdminToken(dk, new Uint8Array(50), { terminalId: '', command: 'zeroize' }), { name: 'RangeError', message: /expect\.terminalId/ });
});
