// The KMD's download interface on an in-process cable: the session binding (download-session.ts,
// docs/protocol.md 3.11.2) against the frozen vector in fixtures/download/, and a connection taken
// over after AUTH: frames without a MAC, with a wrong one, replayed, moved to another command or
// counter are refused, and the outbox is unchanged; the real carrier's session still works.
import t from 'tap';
import type { Test } from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DownloadCmd, Group } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { encodePayload } from '../../firmware/link/codec.js';
import type { Payload } from '../../firmware/link/codec.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatches, outbox } from './export.js';
import { enrollCarrier, carrierProof, readCarrierKey } from './carriers.js';
import { serveDownload } from './download.js';
import { authenticate } from './download-client.js';
import { REPLAY_WINDOW, ReplayWindow, TO_CARRIER, TO_KMD, open, seal, sessionKey } from './download-session.js';

interface Vector {
  input: { carrierKey: string; kmdId: string; carrierId: string; challenge: string; nonce: string };
  proof: string;
  sessionKey: string;
  messages: Array<{ name: string; direction: number; command: number; c: number; m: string; t: string; payload: string }>;
}
const h = (x: string) => new Uint8Array(Buffer.from(x, 'hex'));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

t.test('session key, tags and sealed payloads reproduce fixtures/download/session.json', async (t) => {
  const v = JSON.parse(readFileSync(new URL('../../fixtures/download/session.json', import.meta.url), 'utf8')) as Vector;
  const i = v.input;
  t.equal(hex(carrierProof(h(i.carrierKey), i.kmdId, i.carrierId, h(i.challenge))), v.proof);
  const k = sessionKey(h(i.carrierKey), i.kmdId, i.carrierId, h(i.challenge), h(i.nonce));
  t.equal(hex(k), v.sessionKey);
  for (const m of v.messages) {
    const opened = open(k, m.direction, m.command, { c: m.c, m: h(m.m), t: h(m.t) });
    t.equal(opened.counter, m.c);
    const p = seal(k, m.direction, m.command, m.c, opened.inner);
    t.equal(hex(p['t'] as Uint8Array), m.t, `${m.name}: tag`);
    t.equal(hex(encodePayload(p)), m.payload, `${m.name}: payload bytes`);
    // Bound to direction, command and counter: any other value fails.
    t.throws(() => open(k, m.direction ^ 3, m.command, p), { name: 'LinkError', rc: Rc.AUTH_FAILED }, `${m.name}: other direction`);
    t.throws(() => open(k, m.direction, m.command ^ 1, p), { name: 'LinkError', rc: Rc.AUTH_FAILED }, `${m.name}: other command`);
    t.throws(() => open(k, m.direction, m.command, { ...p, c: m.c + 1 }), { name: 'LinkError', rc: Rc.AUTH_FAILED }, `${m.name}: other counter`);
  }
  t.throws(() => sessionKey(h(i.carrierKey), i.kmdId, i.carrierId, h(i.challenge), new Uint8Array(31)), RangeError);
});

t.test('the replay window takes each counter once, out of order only within the window', async (t) => {
  const w = new ReplayWindow();
  t.notOk(w.take(0), 'counter 0 is the AUTH reply, never a request');
  t.ok(w.take(1));
  t.notOk(w.take(1), 'replay');
  t.ok(w.take(3));
  t.ok(w.take(2), 'late, within the window');
  t.notOk(w.take(2));
  t.ok(w.take(3 + REPLAY_WINDOW)); // the window is now 4 .. 67
  t.notOk(w.take(3), 'too old: outside the window');
  t.ok(w.take(4), 'the oldest counter inside the window, unseen');
  t.notOk(w.take(4));
  t.ok(w.take(10_000));
  t.notOk(w.take(10_000 - REPLAY_WINDOW));
  t.ok(w.take(10_000 - REPLAY_WINDOW + 1));
  // A decade: a million in order, one bigint of 64 bits all along.
  const big = new ReplayWindow();
  for (let c = 1; c <= 1_000_000; c++) if (!big.take(c)) t.fail(`counter ${c} refused`);
  t.notOk(big.take(1_000_000));
});

/** A KMD with T1 enrolled and one batch in its outbox, carrier car1 enrolled, served on an in-process cable. */
async function setup(t: Test) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  enrollCarrier(home, 'car1', join(dir, 'car1'));
  exportBatches(home, ['T1'], 4096);
  const [host, device] = createInProcessPair({ names: ['carrier', 'kmd'] });
  serveDownload(home, device);
  const client = new LinkClient(host, { baseTimeoutMs: 2000 });
  const params = await client.negotiate();
  t.teardown(() => host.close());
  const outboxFiles = () => readdirSync(home.path('outbox')).sort();
  return { dir, home, client, params, key: () => readCarrierKey(join(dir, 'car1')), outboxFiles };
}

async function refused(t: Test, p: Promise<unknown>, rc: number, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: answered`);
  } catch (e) {
    t.ok(e instanceof LinkError && e.rc === rc, `${what}: refused with ${rc}`, { got: e });
  }
}

t.test('AUTH: a nonce is required, a wrong key fails, nothing answers before it', async (t) => {
  const { home, client } = await setup(t);
  await refused(t, client.request(Group.DOWNLOAD, DownloadCmd.NOTIFY, {}), Rc.DENIED, 'NOTIFY before AUTH');
  const hello = await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: 'car1' });
  const key = readCarrierKey(join(t.testdirName, 'car1'));
  const mac = carrierProof(key, home.config.kmdId, 'car1', hello['challenge'] as Uint8Array);
  await refused(t, client.request(Group.DOWNLOAD, DownloadCmd.AUTH, { mac }), Rc.BAD_REQUEST, 'AUTH without a nonce (the unbound v1 form)');
  const hello2 = await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: 'car1' });
  const wrong = carrierProof(new Uint8Array(32), home.config.kmdId, 'car1', hello2['challenge'] as Uint8Array);
  await refused(t, client.request(Group.DOWNLOAD, DownloadCmd.AUTH, { mac: wrong, nonce: new Uint8Array(32) }), Rc.AUTH_FAILED, 'AUTH with a wrong key');
  await refused(t, client.request(Group.DOWNLOAD, DownloadCmd.NOTIFY, {}), Rc.DENIED, 'NOTIFY after a failed AUTH');
  // The right key: a session whose AUTH reply the carrier checked.
  const s = await authenticate(client, key, 'car1', home.config.kmdId);
  t.equal(((await s.request(DownloadCmd.NOTIFY, {}))['pending'] as unknown[]).length, 1);
  s.end();
});

t.test('a connection taken over after AUTH gets nothing and deletes nothing', async (t) => {
  const { home, client, params, key, outboxFiles } = await setup(t);
  const before = outboxFiles();
  t.equal(before.length, 1);
  const s = await authenticate(client, key(), 'car1', home.config.kmdId);
  const b = outbox(home)[0]!.record.batchId;
  // The attacker shares the link (same connection, frames injected after AUTH) but not the key.
  const raw = (cmd: number, p: Payload) => client.request(Group.DOWNLOAD, cmd, p);
  await refused(t, raw(DownloadCmd.TAKEN, { b }), Rc.BAD_REQUEST, 'TAKEN without a MAC');
  await refused(t, raw(DownloadCmd.NOTIFY, {}), Rc.BAD_REQUEST, 'NOTIFY without a MAC');
  await refused(t, raw(DownloadCmd.READ, { b, o: 0, n: 64 }), Rc.BAD_REQUEST, 'READ without a MAC');
  await refused(t, raw(DownloadCmd.TAKEN, { c: 50, m: encodePayload({ b }), t: new Uint8Array(randomBytes(32)) }), Rc.AUTH_FAILED, 'TAKEN with a made-up MAC');
  await refused(t, raw(DownloadCmd.TAKEN, seal(new Uint8Array(32).fill(1), TO_KMD, DownloadCmd.TAKEN, 51, { b })), Rc.AUTH_FAILED, 'TAKEN sealed under another key');
  await refused(t, raw(DownloadCmd.REQUEST, { c: 52, m: encodePayload({ terminals: ['T1'], bits: 4096 }), t: new Uint8Array(32) }), Rc.AUTH_FAILED, 'REQUEST with a zero MAC');

  // Frames the real carrier sent, seen on the wire and sent again or elsewhere.
  const seen: Payload[] = [];
  const origRequest = client.request.bind(client);
  client.request = (g, c, p, o) => {
    seen.push(p);
    return origRequest(g, c, p, o);
  };
  const notify = await s.request(DownloadCmd.NOTIFY, {});
  t.same((notify['pending'] as Array<{ batchId: string }>).map((x) => x.batchId), [b], 'the real carrier still gets its answer');
  const first = await s.request(DownloadCmd.READ, { b, o: 0, n: params.maxChunk });
  t.ok((first['d'] as Uint8Array).length > 0);
  client.request = origRequest;
  const [sealedNotify, sealedRead] = seen;
  await refused(t, raw(DownloadCmd.NOTIFY, sealedNotify!), Rc.AUTH_FAILED, 'NOTIFY replayed (new link seq, same counter)');
  await refused(t, raw(DownloadCmd.READ, sealedRead!), Rc.AUTH_FAILED, 'READ replayed');
  await refused(t, raw(DownloadCmd.TAKEN, sealedRead!), Rc.AUTH_FAILED, 'a sealed READ sent as TAKEN');
  // The KMD's sealed answers are bound to the carrier's direction: no use as requests either.
  const kmdSide = seal(new Uint8Array(32), TO_CARRIER, DownloadCmd.TAKEN, 60, { b });
  await refused(t, raw(DownloadCmd.TAKEN, kmdSide), Rc.AUTH_FAILED, 'a response-direction frame');
  t.same(outboxFiles(), before, 'outbox unchanged');
  t.equal(outbox(home).length, 1);

  // An attacker's HELLO ends the session (the cable's owner can always hang up): nothing gained.
  await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: 'car1' });
  await refused(t, raw(DownloadCmd.TAKEN, seal(new Uint8Array(32), TO_KMD, DownloadCmd.TAKEN, 70, { b })), Rc.DENIED, 'TAKEN after HELLO');
  t.same(outboxFiles(), before, 'outbox still unchanged');

  // The real carrier authenticates again and takes its batch.
  const s2 = await authenticate(client, key(), 'car1', home.config.kmdId);
  t.same(await s2.request(DownloadCmd.TAKEN, { b }), {});
  t.same(outboxFiles(), [], 'taken by the authenticated session');
  s.end();
  s2.end();
});

t.test('the carrier refuses replies that do not carry the session MAC', async (t) => {
  const { home, client, key } = await setup(t);
  const s = await authenticate(client, key(), 'car1', home.config.kmdId);
  // Someone on the line answers in the KMD's place: the reply's MAC (or its counter) is wrong.
  const orig = client.request.bind(client);
  client.request = async () => ({ pending: [] });
  await t.rejects(s.request(DownloadCmd.NOTIFY, {}), /does not authenticate/);
  client.request = async (_g, c) => seal(new Uint8Array(32), TO_CARRIER, c, 2, { pending: [] });
  await t.rejects(s.request(DownloadCmd.NOTIFY, {}), /does not authenticate/);
  client.request = orig;
  const ok = await s.request(DownloadCmd.NOTIFY, {});
  t.equal((ok['pending'] as unknown[]).length, 1, 'the real KMD still answers');
  s.end();
});

t.test('failed authentications flood no log: one line a second across connections, the carrier id escaped', async (t) => {
  const { home } = await setup(t);
  const lines: string[] = [];
  const log = (l: string) => void lines.push(l);
  // Fifty connections, each a HELLO under an id full of escape sequences and a wrong AUTH.
  const start = Date.now();
  for (let i = 0; i < 50; i++) {
    const [host, device] = createInProcessPair({ names: ['attacker', 'kmd'] });
    serveDownload(home, device, log);
    const client = new LinkClient(host, { baseTimeoutMs: 2000 });
    await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: `x\u001b[2J\u009b${i}` });
    await refused(t, client.request(Group.DOWNLOAD, DownloadCmd.AUTH, { mac: new Uint8Array(32), nonce: new Uint8Array(32) }), Rc.AUTH_FAILED, `attempt ${i}`);
    await client.close();
  }
  const seconds = (Date.now() - start) / 1000;
  const failed = lines.filter((l) => l.includes('failed authentication'));
  // At most one a second (plus the first): however slow the machine, never one per failure.
  t.ok(failed.length >= 1 && failed.length <= Math.min(49, Math.floor(seconds) + 1), `${failed.length} line(s) for 50 failures in ${seconds.toFixed(1)} s`);
  t.equal(failed[0], 'download: carrier x\\x1b[2J\\x9b0 failed authentication');
  // eslint-disable-next-line no-control-regex
  t.notOk(lines.some((l) => /[\u0000-\u001f\u007f-\u009f]/.test(l)), 'no control character in the log');
});
