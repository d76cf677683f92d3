// TLS transport: the shared suite on a loopback mutual-TLS 1.3 connection (127.0.0.1, port 0),
// address parsing, and a client without a certificate never reaching the server's handler.
import t from 'tap';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Transport } from '../../firmware/link/transport.js';
import { createCa, issueServerCert, issueSaeCert, readServerTls } from '../kmd/pki.js';
import { connectTls, isTlsAddress, listenTls, parseTlsAddress } from './tls.js';
import type { TlsPems } from './tls.js';
import { transportSuite } from './transport.suite.js';
import { InputError } from '../input-error.js';

async function pems(dir: string): Promise<{ server: TlsPems; client: TlsPems }> {
  await createCa(dir);
  await issueServerCert(dir, ['127.0.0.1']);
  const c = await issueSaeCert(dir, 'client1');
  const server = readServerTls(dir);
  return { server, client: { caCertPem: server.caCertPem, certPem: readFileSync(c.certPath, 'utf8'), keyPem: readFileSync(c.keyPath, 'utf8') } };
}

/** Ten connections of the real client, one after another: how many succeeded, and why the others failed. */
async function tenRealClients(port: number, client: Parameters<typeof connectTls>[2]): Promise<{ ok: number; failures: string[] }> {
  let ok = 0;
  const failures: string[] = [];
  for (let i = 0; i < 10; i++) {
    try {
      const c = await connectTls('127.0.0.1', port, { ...client, timeoutMs: 5000 });
      ok++;
      await c.close();
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
  return { ok, failures };
}

t.test('transport suite over loopback mutual TLS', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  transportSuite(
    t,
    async () => {
      let accepted: (tr: Transport) => void = () => {};
      const server = new Promise<Transport>((r) => (accepted = r));
      const listener = await listenTls('127.0.0.1', 0, p.server, (tr) => accepted(tr));
      const a = await connectTls('127.0.0.1', listener.address.port, p.client);
      const b = await server;
      return { a, b, cleanup: () => listener.close() };
    },
    { closePropagates: true, pull: ({ b }) => b.close() },
  );
});

t.test('a client without a certificate fails the handshake and is never handed over', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  const reasons: string[] = [];
  let handed = 0;
  const listener = await listenTls('127.0.0.1', 0, { ...p.server, onHandshakeError: (r) => reasons.push(r) }, () => handed++);
  t.teardown(() => listener.close());
  const a = await connectTls('127.0.0.1', listener.address.port, { caCertPem: p.client.caCertPem }).catch((e: Error) => e);
  if (!(a instanceof Error)) {
    // TLS 1.3: the server's refusal arrives after the client's handshake finished.
    const ended = await new Promise<Error | undefined>((r) => a.onClose(r));
    t.ok(ended, `the connection ends with an error (${ended?.message})`);
  } else t.pass(`refused at the handshake: ${a.message}`);
  for (let i = 0; i < 100 && reasons.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(reasons.length, 1, `the server reports one failed handshake (${reasons.join(', ')})`);
  t.equal(handed, 0, 'and hands nothing to the link');
});

t.test('the client checks the server: its name, and its CA', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  const other = await pems(join(t.testdir({}), 'other'));
  const listener = await listenTls('127.0.0.1', 0, p.server, () => undefined);
  t.teardown(() => listener.close());
  await t.rejects(connectTls('127.0.0.1', listener.address.port, { ...p.client, servername: 'station.example' }), /does not match|altnames/, 'a name the certificate does not carry');
  await t.rejects(connectTls('127.0.0.1', listener.address.port, { ...p.client, caCertPem: other.client.caCertPem }), /self.signed|unable to verify|certificate/i, 'a server of another CA');
  const ok = await connectTls('127.0.0.1', listener.address.port, p.client);
  await ok.close();
});

/** Hold `n` idle plain-TCP sockets open from `localAddress`, reopening each one the server closes, until stop(). */
function flood(port: number, n: number, localAddress = '127.0.0.1', hello = false): { stop: () => void; opened: () => number } {
  let stopped = false;
  let opened = 0;
  const open = () => {
    if (stopped) return;
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    opened++;
    socks.add(s);
    s.on('error', () => undefined);
    // Three bytes of a TLS record header: the socket is no longer "silent".
    if (hello) s.once('connect', () => s.write(Buffer.from([0x16, 0x03, 0x01])));
    s.once('close', () => {
      socks.delete(s);
      setImmediate(open);
    });
  };
  const socks = new Set<net.Socket>();
  for (let i = 0; i < n; i++) open();
  return {
    stop: () => {
      stopped = true;
      for (const s of socks) s.destroy();
    },
    opened: () => opened,
  };
}

t.test('idle strangers flooding the handshake budget do not lock a real client out (oldest idle evicted)', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  const reasons: string[] = [];
  let handed = 0;
  const listener = await listenTls('127.0.0.1', 0, { ...p.server, maxHandshaking: 64, maxHandshakingPerAddress: 1000, onHandshakeError: (r) => reasons.push(r) }, (tr) => {
    handed++;
    void tr.close();
  });
  t.teardown(() => listener.close());
  // 80 idle sockets, more than the budget, each reopened as soon as the server drops it.
  const f = flood(listener.address.port, 80);
  t.teardown(() => f.stop());
  await new Promise((r) => setTimeout(r, 300));
  const { ok, failures } = await tenRealClients(listener.address.port, p.client);
  f.stop();
  t.equal(ok, 10, `all 10 connections of the real client succeed while 80 idle sockets flood (${failures.join('; ')})`);
  t.equal(handed, 10, 'and each is handed over');
  t.ok(f.opened() > 80, `the flood was evicted and kept reconnecting (${f.opened()} sockets opened)`);
  t.ok(reasons.includes('evicted: too many handshakes in progress'), 'evictions are reported');
});

t.test('strangers on several addresses sending a few bytes and reconnecting fast never evict a real client from another address', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  const reasons: string[] = [];
  const listener = await listenTls('127.0.0.1', 0, { ...p.server, maxHandshaking: 64, maxHandshakingPerAddress: 16, onHandshakeError: (r) => reasons.push(r) }, (tr) => void tr.close());
  t.teardown(() => listener.close());
  // 4 addresses x 40 sockets: the whole budget, each socket past its address's 16 evicting that address's own.
  const floods = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((a) => flood(listener.address.port, 40, a, true));
  t.teardown(() => floods.forEach((f) => f.stop()));
  await new Promise((r) => setTimeout(r, 300));
  const { ok, failures } = await tenRealClients(listener.address.port, p.client);
  floods.forEach((f) => f.stop());
  t.equal(ok, 10, `all 10 connections of the real client succeed (${failures.join('; ')})`);
  t.ok(floods.every((f) => f.opened() > 40), 'every flood was evicted and kept reconnecting');
  t.ok(reasons.some((r) => r.startsWith('evicted: too many handshakes in progress')), 'evictions are reported');
});

t.test('one address holds at most maxHandshakingPerAddress handshakes; its oldest go first', async (t) => {
  const p = await pems(join(t.testdir({}), 'pki'));
  const reasons: string[] = [];
  const listener = await listenTls('127.0.0.1', 0, { ...p.server, maxHandshaking: 64, maxHandshakingPerAddress: 4, onHandshakeError: (r, peer) => reasons.push(`${r} ${peer}`) }, (tr) => void tr.close());
  t.teardown(() => listener.close());
  // Six idle sockets from 127.0.0.2 (still loopback): two of them are evicted, the newest four stay.
  const socks: net.Socket[] = [];
  const closed: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    const s = net.connect({ host: '127.0.0.1', port: listener.address.port, localAddress: '127.0.0.2' });
    s.on('error', () => undefined);
    closed.push(false);
    s.once('close', () => (closed[i] = true));
    socks.push(s);
    await new Promise((r) => s.once('connect', r));
    await new Promise((r) => setTimeout(r, 20)); // accepted in this order
  }
  t.teardown(() => socks.forEach((s) => s.destroy()));
  for (let i = 0; i < 100 && closed.filter(Boolean).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  t.same(closed, [true, true, false, false, false, false], 'the two oldest of that address were evicted, the four newest kept');
  t.equal(reasons.filter((r) => r.startsWith('evicted: too many handshakes in progress from its address 127.0.0.2:')).length, 2, 'each eviction reported once, with the peer');
  // Another address is not held back by them.
  const c = await connectTls('127.0.0.1', listener.address.port, p.client);
  await c.close();
  t.pass('a client from 127.0.0.1 connects');
});

t.test('parseTlsAddress', async (t) => {
  t.same(parseTlsAddress('tls:127.0.0.1:7200'), { host: '127.0.0.1', port: 7200 });
  t.same(parseTlsAddress('localhost:0'), { host: 'localhost', port: 0 });
  t.same(parseTlsAddress('tls:[::1]:65535'), { host: '::1', port: 65535 });
  t.throws(() => parseTlsAddress('tcp:127.0.0.1:7200'), { message: /speaks TLS only/ });
  for (const bad of ['tls:', 'tls:host', 'tls:host:70000', '/dev/ttyUSB0']) t.throws(() => parseTlsAddress(bad), InputError, bad);
  t.ok(isTlsAddress('tls:1.2.3.4:5'));
  t.notOk(isTlsAddress('tcp:1.2.3.4:5'));
});
