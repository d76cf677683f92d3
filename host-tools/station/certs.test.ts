// Station certificates: the role a client certificate states (and every near miss that states
// none), the server certificate re-issued only when its names or validity fall short, and client
// issue that never overwrites.
import t from 'tap';
import 'reflect-metadata'; // before @peculiar/x509, as pki.ts does
import * as x509 from '@peculiar/x509';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCa, issueLeaf, issueSaeCert } from '../kmd/pki.js';
import { ensureStationServerCert, isStationServerCert, issueStationClientCert, readClientPems, roleOf, serverNames, StationCertError } from './certs.js';
import { InputError } from '../input-error.js';

const der = (pem: string) => new Uint8Array(x509.PemConverter.decodeFirst(pem));
const CLIENT = '1.3.6.1.5.5.7.3.2';
const SERVER = '1.3.6.1.5.5.7.3.1';

t.test('roleOf: exactly one station URI, CN agreeing, clientAuth', async (t) => {
  const pki = join(t.testdir({}), 'pki');
  await createCa(pki);
  await issueStationClientCert(pki, { kind: 'terminal', id: 'T1' }, join(pki, 'out-t1'));
  await issueStationClientCert(pki, { kind: 'operator', id: 'scada-1' }, join(pki, 'out-ops'));
  t.same(roleOf(der(readClientPems(join(pki, 'out-t1')).certPem)), { kind: 'terminal', id: 'T1' });
  t.same(roleOf(der(readClientPems(join(pki, 'out-ops')).certPem)), { kind: 'operator', id: 'scada-1' });
  const leaf = async (name: string, cn: string, eku: string[], uris: string[]) => {
    const p = await issueLeaf(pki, join(pki, `${name}.key`), join(pki, `${name}.crt`), `CN=${cn}`, {}, [
      new x509.ExtendedKeyUsageExtension(eku),
      ...(uris.length ? [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })))] : []),
    ]);
    return roleOf(der(readFileSync(p.certPath, 'utf8')));
  };
  t.equal(await leaf('cn-mismatch', 'terminal:T2', [CLIENT], ['urn:qkt:station:terminal:T1']), undefined, 'CN naming another terminal');
  t.equal(await leaf('two-uris', 'terminal:T1', [CLIENT], ['urn:qkt:station:terminal:T1', 'urn:qkt:station:operator:x']), undefined, 'two station URIs');
  t.equal(await leaf('server-eku', 'terminal:T1', [SERVER], ['urn:qkt:station:terminal:T1']), undefined, 'no clientAuth');
  t.equal(await leaf('unknown-role', 'admin:root', [CLIENT], ['urn:qkt:station:admin:root']), undefined, 'a role the station does not know');
  t.equal(await leaf('path-id', 'terminal:../x', [CLIENT], ['urn:qkt:station:terminal:../x']), undefined, 'an id that is a path');
  t.equal(await leaf('no-uri', 'T1', [CLIENT], []), undefined, 'no URI (an SAE-like certificate)');
  // A terminal's device generation: `:g<N>`, N from 1; an operator has none.
  await issueStationClientCert(pki, { kind: 'terminal', id: 'T1', generation: 3 }, join(pki, 'out-g3'));
  t.same(roleOf(der(readClientPems(join(pki, 'out-g3')).certPem)), { kind: 'terminal', id: 'T1', generation: 3 }, 'generation 3 read back');
  t.same(await leaf('g12', 'terminal:T1', [CLIENT], ['urn:qkt:station:terminal:T1:g12']), { kind: 'terminal', id: 'T1', generation: 12 });
  t.equal(await leaf('g0', 'terminal:T1', [CLIENT], ['urn:qkt:station:terminal:T1:g0']), undefined, 'generation 0');
  t.equal(await leaf('gx', 'terminal:T1', [CLIENT], ['urn:qkt:station:terminal:T1:gx']), undefined, 'a generation that is no number');
  t.equal(await leaf('op-g', 'operator:x', [CLIENT], ['urn:qkt:station:operator:x:g1']), undefined, 'an operator with a generation');
  await t.rejects(issueStationClientCert(pki, { kind: 'terminal', id: 'T1', generation: 0 }, join(pki, 'out-g0')), { code: 'BAD_ID' }, 'issuing generation 0 is refused');
  const sae = await issueSaeCert(pki, 'T1');
  t.equal(roleOf(der(readFileSync(sae.certPath, 'utf8'))), undefined, 'an SAE certificate named like a terminal');
  t.equal(roleOf(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])), undefined, 'not a certificate');
});

t.test('server certificate: issued when missing, for new names, or near its end', async (t) => {
  const pki = join(t.testdir({}), 'pki');
  await createCa(pki);
  const names = serverNames('127.0.0.1');
  t.same(names, ['localhost', '127.0.0.1', '::1']);
  t.same(serverNames('0.0.0.0', ['station.example']), ['localhost', '127.0.0.1', '::1', 'station.example'], 'a wildcard host adds no name');
  t.throws(() => serverNames('127.0.0.1', ['bad name']), InputError);
  const first = await ensureStationServerCert(pki, names);
  await issueStationClientCert(pki, { kind: 'terminal', id: 'T1' }, join(pki, '..', 'none'));
  t.equal(first.issued, true);
  const again = await ensureStationServerCert(pki, names);
  t.equal(again.issued, false, 'kept when it names every host');
  t.equal(again.pems.certPem, first.pems.certPem);
  const san = new X509Certificate(first.pems.certPem).subjectAltName;
  t.ok(isStationServerCert(san), `it carries the station URI, as node:tls reports it (${san})`);
  t.notOk(isStationServerCert(new X509Certificate(readClientPems(join(pki, '..', 'none')).certPem).subjectAltName), 'a client certificate does not');
  t.equal(statSync(join(pki, 'station', 'server.key')).mode & 0o777, 0o600);
  const wider = await ensureStationServerCert(pki, serverNames('10.1.2.3'));
  t.equal(wider.issued, true, 'a listen host it lacks: re-issued');
  t.match(new x509.X509Certificate(wider.pems.certPem).toString('text'), /10\.1\.2\.3/);
  const late = await ensureStationServerCert(pki, serverNames('10.1.2.3'), { now: () => new Date(Date.now() + 800 * 86_400_000) });
  t.equal(late.issued, true, 'within 30 days of its end: re-issued');
});

t.test('client issue never overwrites and validates the id', async (t) => {
  const dir = t.testdir({});
  const pki = join(dir, 'pki');
  await createCa(pki);
  await t.rejects(issueStationClientCert(pki, { kind: 'terminal', id: '../x' }, join(dir, 'a')), StationCertError);
  writeFileSync(join(dir, 'client.crt'), 'mine');
  await t.rejects(issueStationClientCert(pki, { kind: 'operator', id: 'o' }, dir), { code: 'EXISTS' });
  t.equal(readFileSync(join(dir, 'client.crt'), 'utf8'), 'mine', 'an existing file is left as it was');
  // Two issues into one folder at once: one wins, the other is refused, the key is the winner's.
  const out = join(dir, 'race');
  const results = await Promise.allSettled([issueStationClientCert(pki, { kind: 'terminal', id: 'T1' }, out), issueStationClientCert(pki, { kind: 'terminal', id: 'T2' }, out)]);
  t.same(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  const role = roleOf(der(readClientPems(out).certPem));
  t.ok(role && ['T1', 'T2'].includes(role.id));
});
