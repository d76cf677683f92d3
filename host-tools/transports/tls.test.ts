// TLS transport: the shared suite on a loopback mutual-TLS 1.3 connection (127.0.0.1, port 0),
// address parsing, and a client without a certificate never reaching the server's handler.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Transport } from '../../firmware/link/transport.js';
import { createCa, issueServerCert, issueSaeCert, readServerTls } from '../kmd/pki.js';
import { connectTls, isTlsAddress, listenTls, parseTlsAddress } from './tls.js';
import type { TlsPems } from './tls.js';
import { transportSuite } from './transport.suite.js';

async function pems(dir: string): Promise<{ server: TlsPems; client: TlsPems }> {
  await createCa(dir);
  await issueServerCert(dir, ['127.0.0.1']);
  const c = await issueSaeCert(dir, 'client1');
  const server = readServerTls(dir);
  return { server, client: { caCertPem: server.caCertPem, certPem: readFileSync(c.certPath, 'utf8'), keyPem: readFileSync(c.keyPath, 'utf8') } };
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

t.test('parseTlsAddress', async (t) => {
  t.same(parseTlsAddress('tls:127.0.0.1:7200'), { host: '127.0.0.1', port: 7200 });
  t.same(parseTlsAddress('localhost:0'), { host: 'localhost', port: 0 });
  t.same(parseTlsAddress('tls:[::1]:65535'), { host: '::1', port: 65535 });
  t.throws(() => parseTlsAddress('tcp:127.0.0.1:7200'), { message: /speaks TLS only/ });
  for (const bad of ['tls:', 'tls:host', 'tls:host:70000', '/dev/ttyUSB0']) t.throws(() => parseTlsAddress(bad), RangeError, bad);
  t.ok(isTlsAddress('tls:1.2.3.4:5'));
  t.notOk(isTlsAddress('tcp:1.2.3.4:5'));
});
