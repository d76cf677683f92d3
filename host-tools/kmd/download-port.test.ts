// The KMD download port against a hostile client (docs/protocol.md 3.11.7, 3.11.9): an
// unauthenticated SYSTEM STATUS tells nothing of the outbox; silent sockets, sockets that never log
// in and idle ones are closed; with every slot taken a flood of sockets that never log in cannot
// keep a real carrier out, and a newcomer beyond busy carriers is answered DENIED and closed.
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { join } from 'node:path';
import { DownloadCmd, Group, SystemCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { connectTcp, socketTransport } from '../transports/tcp.js';
import { LinkClient } from '../link/client.js';
import { KmdHome } from './home.js';
import { enrollTerminal } from './enroll.js';
import { exportBatches } from './export.js';
import { enrollCarrier, readCarrierKey } from './carriers.js';
import { authenticate } from './download-client.js';
import { listenDownloadPort } from './download-port.js';
import type { DownloadPort, DownloadPortOptions } from './download-port.js';

async function setup(t: Test, o: DownloadPortOptions = {}) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  enrollCarrier(home, 'car1', join(dir, 'car1'));
  exportBatches(home, ['T1'], 4096);
  const log: string[] = [];
  const port = await listenDownloadPort(home, '127.0.0.1', 0, { log: (l) => log.push(l), ...o });
  t.teardown(() => port.listener.close());
  return { home, port, log, key: () => readCarrierKey(join(dir, 'car1')) };
}

async function client(t: Test, port: DownloadPort): Promise<LinkClient & { gone: Promise<void> }> {
  const tr = await connectTcp('127.0.0.1', port.listener.address.port);
  const closed = new Promise<void>((r) => tr.onClose(() => r()));
  const c = new LinkClient(tr, { baseTimeoutMs: 3000, retries: 0 });
  t.teardown(() => c.close());
  return Object.assign(c, { gone: closed });
}

/** A raw socket that connects and sends nothing (or one valid PARAMS frame); resolves once connected. */
function stranger(port: DownloadPort, sendParams = false, localAddress?: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.listener.address.port, ...(localAddress ? { localAddress } : {}) });
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('error', () => undefined);
    socket.resume(); // reads (and drops) what the KMD sends, so its FIN is seen
    socket.once('connect', () => {
      if (sendParams) socket.write(encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: 1, payload: { versions: [1] } }));
      resolve({ socket, closed });
    });
    socket.once('error', reject);
  });
}

/** Resolves once `cond` holds (the port accepts and closes a turn after the client sees it). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

t.setTimeout(60_000);

t.test('SYSTEM STATUS tells the pending count only inside an authenticated session', async (t) => {
  const { home, port, key } = await setup(t);
  const c = await client(t, port);
  await c.negotiate();
  const before = await c.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.same(Object.keys(before).sort(), ['firmware', 'kmdId'], 'a stranger learns the id and firmware only');
  const s = await authenticate(c, key(), 'car1', home.config.kmdId);
  t.match(await c.request(Group.SYSTEM, SystemCmd.STATUS, {}), { kmdId: home.config.kmdId, pending: 1 }, 'an authenticated carrier sees the count');
  // HELLO ends the session: the count is hidden again.
  await c.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: 'car1' });
  t.notOk('pending' in (await c.request(Group.SYSTEM, SystemCmd.STATUS, {})), 'hidden again once the session ended');
  s.end();
});

t.test('silent sockets, sockets that never log in, and idle sessions are closed', async (t) => {
  const { home, port, key, log } = await setup(t, { firstFrameMs: 200, authMs: 600, idleMs: 900 });
  const silent = await stranger(port);
  const chatty = await stranger(port, true);
  await silent.closed;
  t.equal(port.counters.noFrame, 1, 'the silent socket was closed for sending no frame');
  await chatty.closed;
  t.equal(port.counters.noAuth, 1, 'the socket that sent PARAMS but never logged in was closed');
  // A carrier that logs in and then goes quiet is closed for idleness, not for the login deadline.
  const c = await client(t, port);
  await c.negotiate();
  const s = await authenticate(c, key(), 'car1', home.config.kmdId);
  await c.gone;
  t.equal(port.counters.idle, 1, 'the idle session was closed');
  t.equal(port.counters.noAuth, 1, 'not for the login deadline');
  t.match(log.join('\n'), /closed: no valid frame within 0\.2 s/);
  await until(() => port.open === 0);
  t.pass('no connection holds a slot');
  s.end();
});

t.test('a flood of sockets that never log in does not keep a carrier out', async (t) => {
  const { home, port, key } = await setup(t, { maxConnections: 4 });
  // Many strangers, half silent, half with one valid frame: never more than 4 hold a slot.
  const strangers = [];
  for (let i = 0; i < 60; i++) {
    strangers.push(await stranger(port, i % 2 === 1));
    t.ok(port.open <= 4, `at most 4 slots held (${port.open})`);
  }
  await until(() => port.counters.evicted >= 56);
  t.equal(port.open, 4);
  // A real carrier comes: it evicts a stranger, logs in and reads the notification.
  const c = await client(t, port);
  await c.negotiate();
  const s = await authenticate(c, key(), 'car1', home.config.kmdId);
  t.equal(((await s.request(DownloadCmd.NOTIFY, {}))['pending'] as unknown[]).length, 1, 'the carrier got in');
  // More strangers come: they evict each other, never the authenticated carrier.
  for (let i = 0; i < 20; i++) strangers.push(await stranger(port, true));
  await until(() => port.counters.evicted >= 77);
  t.equal(((await s.request(DownloadCmd.NOTIFY, {}))['pending'] as unknown[]).length, 1, 'the carrier is still served');
  t.equal(port.counters.refused, 0, 'no newcomer was refused: strangers were evicted');
  for (const x of strangers) x.socket.destroy();
  s.end();
});

t.test('a flood from one address evicts its own strangers, never a carrier logging in from another', async (t) => {
  const { home, port, key } = await setup(t, { maxConnections: 4 });
  const flood = [];
  for (let i = 0; i < 4; i++) flood.push(await stranger(port, true, '127.0.0.2'));
  await until(() => port.open === 4 && port.counters.accepted === 4);
  // The carrier's socket is open and has not sent its PARAMS yet (the moment after connect) when
  // more of the flood arrives: the flood's own connections make room, not the carrier's.
  const carrier = await stranger(port, false, '127.0.0.1');
  let carrierClosed = false;
  void carrier.closed.then(() => (carrierClosed = true));
  await until(() => port.counters.accepted === 5);
  for (let i = 0; i < 8; i++) flood.push(await stranger(port, true, '127.0.0.2'));
  await until(() => port.counters.accepted === 13);
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(carrierClosed, 'the silent carrier socket kept its slot');
  // It logs in on that socket while the flood goes on, and is served.
  const c = new LinkClient(socketTransport(carrier.socket), { baseTimeoutMs: 3000, retries: 0 });
  t.teardown(() => c.close());
  await c.negotiate();
  for (let i = 0; i < 8; i++) flood.push(await stranger(port, true, '127.0.0.2'));
  const s = await authenticate(c, key(), 'car1', home.config.kmdId);
  t.equal(((await s.request(DownloadCmd.NOTIFY, {}))['pending'] as unknown[]).length, 1, 'the carrier got in');
  t.notOk(carrierClosed);
  for (const x of flood) x.socket.destroy();
  s.end();
});

t.test('with every slot held by busy carriers, a newcomer is answered DENIED and closed', async (t) => {
  const { home, port, key } = await setup(t, { maxConnections: 2 });
  const sessions = [];
  for (let i = 0; i < 2; i++) {
    const c = await client(t, port);
    await c.negotiate();
    sessions.push(await authenticate(c, key(), 'car1', home.config.kmdId));
  }
  const late = await client(t, port);
  const e = await late.negotiate().then(
    () => undefined,
    (x: unknown) => x,
  );
  t.ok(e instanceof LinkError && e.rc === Rc.DENIED, 'PARAMS answered DENIED');
  t.match((e as LinkError).reason, /KMD download port serves 2 connections at once; try again later/);
  await late.gone;
  t.equal(port.counters.refused, 1);
  for (const s of sessions) t.equal(((await s.request(DownloadCmd.NOTIFY, {}))['pending'] as unknown[]).length, 1, 'the carriers are still served');
  for (const s of sessions) s.end();
});
