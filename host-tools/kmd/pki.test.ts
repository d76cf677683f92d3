// Tests for the KMD's tiny CA: file layout and modes, certificate fields, chain, ID validation.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createCa, hasSaeCert, issueSaeCert, issueServerCert, readServerTls, validateSaeId } from './pki.js';
import { InputError } from '../input-error.js';

t.test('CA, server and SAE certificates', async (t) => {
  const dir = t.testdir();
  const ca = await createCa(dir);
  t.equal(ca.keyPath, join(dir, 'ca.key'));
  t.equal(ca.certPath, join(dir, 'ca.crt'));
  t.equal(statSync(ca.keyPath).mode & 0o777, 0o600, 'CA key is 0600');
  const caCert = new X509Certificate(readFileSync(ca.certPath));
  t.ok(caCert.ca, 'CA certificate has basicConstraints cA');
  t.ok(caCert.verify(caCert.publicKey), 'self-signed');
  t.equal(caCert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'EC P-256');
  await t.rejects(createCa(dir), /already exists/, 'never overwrites a CA');

  const srv = await issueServerCert(dir, ['localhost', '127.0.0.1']);
  const srvCert = new X509Certificate(readFileSync(srv.certPath));
  t.equal(srvCert.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1');
  t.ok(srvCert.checkIssued(caCert) && srvCert.verify(caCert.publicKey), 'server cert signed by the CA');
  t.notOk(srvCert.ca);
  t.same(srvCert.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'serverAuth only');
  t.equal(statSync(srv.keyPath).mode & 0o777, 0o600);

  const sae = await issueSaeCert(dir, 'SAE_A-1.x');
  t.equal(sae.keyPath, join(dir, 'sae', 'SAE_A-1.x.key'));
  t.equal(sae.certPath, join(dir, 'sae', 'SAE_A-1.x.crt'));
  t.equal(statSync(sae.keyPath).mode & 0o777, 0o600, 'SAE key is 0600');
  const saeCert = new X509Certificate(readFileSync(sae.certPath));
  t.equal(saeCert.subject, 'CN=SAE_A-1.x');
  t.same(saeCert.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'clientAuth only');
  t.ok(saeCert.checkIssued(caCert) && saeCert.verify(caCert.publicKey), 'SAE cert signed by the CA');
  t.ok(saeCert.checkPrivateKey((await import('node:crypto')).createPrivateKey(readFileSync(sae.keyPath))), 'key matches cert');
  t.not(saeCert.serialNumber, srvCert.serialNumber);
  await t.rejects(issueSaeCert(dir, 'SAE_A-1.x'), /already has a certificate/);
  t.ok(hasSaeCert(dir, 'SAE_A-1.x'));
  t.notOk(hasSaeCert(dir, 'SAE_B'));
  t.notOk(hasSaeCert(dir, '../ca'));

  const tls = readServerTls(dir);
  t.match(tls.caCertPem, /BEGIN CERTIFICATE/);
  t.match(tls.keyPem, /BEGIN PRIVATE KEY/);
});

t.test('validity window and clock', async (t) => {
  const dir = t.testdir();
  const now = new Date('2030-01-01T00:00:00Z');
  await createCa(dir, { now: () => now, validDays: 10 });
  const c = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
  t.equal(new Date(c.validTo).getTime(), now.getTime() + 10 * 86_400_000);
  t.ok(new Date(c.validFrom).getTime() < now.getTime(), 'backdated a little for clock skew');
  await t.rejects(issueSaeCert(dir, 'x', { validDays: 0 }), RangeError);
});

t.test('SAE ID and host name validation', async (t) => {
  const dir = t.testdir();
  await createCa(dir);
  for (const bad of ['', 'a/b', '..', '.', 'a b', 'é', 'x'.repeat(65), 'CN=x,O=y']) {
    await t.rejects(issueSaeCert(dir, bad), InputError, `rejects ${JSON.stringify(bad)}`);
  }
  t.throws(() => validateSaeId(42), TypeError);
  t.equal(validateSaeId('x'.repeat(64)), 'x'.repeat(64));
  await t.rejects(issueServerCert(dir, []), InputError);
  await t.rejects(issueServerCert(dir, ['bad host']), InputError);
  const empty = join(dir, 'empty');
  await t.rejects(issueSaeCert(empty, 'nocadir'), /ENOENT/, 'needs a CA');
  t.notOk(existsSync(join(empty, 'sae')), 'nothing written without a CA');
});
