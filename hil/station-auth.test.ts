// The master station's authentication (issue 9 item 3, docs/station.md): mutual TLS from the KMD's
// CA, the caller's role from its certificate. Strangers (plain TCP, TLS without a certificate, a
// certificate from another CA, an SAE certificate, another terminal's certificate, an operator) and
// a terminal's own forged or replayed uplinks are all refused, and the station's key accounts
// (operator STATUS, the pool images and state files) are the same bytes before and after.
import t from 'tap';
import type { Test } from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { Group, KeysCmd, StationCmd, SystemCmd } from '../firmware/link/groups.js';
import { LinkError, Rc } from '../firmware/link/errors.js';
import { decodeServiceHeader, encodeServiceHeader } from '../firmware/crypto/service.js';
import { connectTcp } from '../host-tools/transports/tcp.js';
import { connectTls, parseTlsAddress } from '../host-tools/transports/tls.js';
import type { TlsPems } from '../host-tools/transports/tls.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { KmdHome } from '../host-tools/kmd/home.js';
import { ensurePki, pkiDir, startKmdServer } from '../host-tools/kmd/serve.js';
import { createCa } from '../host-tools/kmd/pki.js';
import { startStationServer } from '../host-tools/station/serve.js';
import type { StationServer } from '../host-tools/station/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, roleOf, serverNames } from '../host-tools/station/certs.js';
import { connectStation } from '../host-tools/station/connect.js';
import { cliSkipReason, moduleOn, parseJson, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(180_000);
const skip = cliSkipReason();

async function rc(p: Promise<unknown>): Promise<number | string | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e instanceof LinkError ? e.rc : (e as Error).name;
  }
}

interface Rig {
  dir: string;
  home: string;
  server: StationServer;
  log: string[];
  certs: Record<'t1' | 't2' | 'ops' | 'sae' | 'foreign', TlsPems>;
  module: LinkClient;
}

async function rig(t: Test, o: { handshakeTimeoutMs?: number; maxHandshaking?: number; maxConnections?: number; maxPerIdentity?: number; idleTimeoutMs?: number } = {}): Promise<Rig> {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '4Mbit']);
  for (const id of ['T1', 'T2']) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', join(dir, `${id}.img`)]);
  await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'car'), '--terminal', 'T1', '--terminal', 'T2', '--bits', '1Mbit']);
  // Client certificates, issued as a user would.
  for (const [flag, id, out] of [['--terminal', 'T1', 't1'], ['--terminal', 'T2', 't2'], ['--operator', 'scada-1', 'ops']] as const) {
    await qktJson(t, ['station', 'cert', '--home', home, flag, id, '--out', join(dir, out)]);
  }
  await qktJson(t, ['kmd', 'sae', 'add', '--home', home, '--sae', 'sae1']);
  const sae: TlsPems = {
    caCertPem: readFileSync(join(home, 'pki', 'ca.crt'), 'utf8'),
    certPem: readFileSync(join(home, 'pki', 'sae', 'sae1.crt'), 'utf8'),
    keyPem: readFileSync(join(home, 'pki', 'sae', 'sae1.key'), 'utf8'),
  };
  // Another CA issues a certificate that claims terminal T1 in every other respect.
  await createCa(join(dir, 'other-ca'));
  await issueStationClientCert(join(dir, 'other-ca'), { kind: 'terminal', id: 'T1' }, join(dir, 'foreign'));
  const foreign = { ...readClientPems(join(dir, 'foreign')), caCertPem: sae.caCertPem };

  // The field visit for T1, in process: its module injected from the carrier.
  const { client: module, params } = await moduleOn(t, join(dir, 'T1.img'));
  const carrier = Carrier.open(join(dir, 'car'));
  const r = await injectBatch(module, params, carrier.readBatch(carrier.batchFor('T1')!));
  carrier.recordReceipt('T1', r.batchId, r.receipt);

  const kmd = KmdHome.open(home);
  const cert = await kmd.locked(async () => {
    await ensurePki(kmd);
    return ensureStationServerCert(pkiDir(kmd), serverNames('127.0.0.1'));
  });
  const log: string[] = [];
  const server = await startStationServer({ stationDir: kmd.path('station'), listen: 'tls:127.0.0.1:0', tls: cert.pems, log: (l) => log.push(l), ...o });
  t.teardown(() => server.close());
  return { dir, home, server, log, module, certs: { t1: readClientPems(join(dir, 't1')), t2: readClientPems(join(dir, 't2')), ops: readClientPems(join(dir, 'ops')), sae, foreign } };
}

async function client(t: Test, r: Rig, pems: TlsPems | Partial<TlsPems>): Promise<LinkClient> {
  const { host, port } = parseTlsAddress(r.server.address);
  const c = new LinkClient(await connectTls(host, port, { caCertPem: r.certs.t1.caCertPem, ...pems }), { baseTimeoutMs: 5000, retries: 1 });
  t.teardown(() => c.close());
  return c;
}

/** The station's key accounts as bytes: operator STATUS, and every file of every pool. */
async function accounts(t: Test, r: Rig): Promise<string> {
  const ops = await client(t, r, r.certs.ops);
  const status = JSON.stringify(await ops.request(Group.STATION, StationCmd.STATUS, {}));
  await ops.close();
  const st = join(r.home, 'station');
  const files = readdirSync(st)
    .filter((d) => existsSync(join(st, d, 'pool.img')))
    .sort()
    .flatMap((d) => ['pool.img', 'state.json', 'pool.gen'].map((f) => join(d, f)))
    .map((f) => `${f} ${existsSync(join(st, f)) ? createHash('sha256').update(readFileSync(join(st, f))).digest('hex') : '-'}`);
  const inbox = existsSync(join(st, 'inbox.jsonl')) ? readFileSync(join(st, 'inbox.jsonl'), 'utf8').length : 0;
  return [status, ...files, `inbox ${inbox}`].join('\n');
}

async function otpUplink(m: LinkClient, bytes = 12): Promise<Uint8Array> {
  const s = (await m.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  return (await m.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(bytes).fill(0x5a) }))['m'] as Uint8Array;
}

t.test('strangers get nothing and change nothing', { skip }, async (t) => {
  const r = await rig(t);
  const m = await otpUplink(r.module);
  const before = await accounts(t, r);
  t.match(before, /"terminalId":"T1".*"terminalId":"T2"/s, 'the operator sees both terminals');

  const connections = r.server.counters.connections;
  const denied = r.server.counters.denied;
  // Plain TCP: no TLS handshake, no link.
  const { host, port } = parseTlsAddress(r.server.address);
  const plain = new LinkClient(await connectTcp(host, port), { baseTimeoutMs: 5000, retries: 1 });
  t.teardown(() => plain.close());
  t.not(await rc(plain.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m })), undefined, 'plain TCP: refused');
  // TLS without a client certificate, and with one from another CA claiming T1.
  for (const [what, pems] of [['no client certificate', {}], ['another CA', r.certs.foreign]] as const) {
    const failures = r.server.counters.handshakeFailures;
    const c = await client(t, r, pems).catch((e: Error) => e);
    if (c instanceof LinkClient) t.not(await rc(c.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m })), undefined, `${what}: refused`);
    else t.pass(`${what}: refused at the handshake (${c.message})`);
    await waitFor(() => r.server.counters.handshakeFailures > failures);
    t.ok(r.server.counters.handshakeFailures > failures, `${what}: counted as a failed handshake`);
  }
  t.equal(r.server.counters.connections, connections, 'none of them reached the link');

  // Verified by the KMD CA, but no station role: an SAE certificate of the ETSI 014 API. It may
  // do nothing here, so its connection is closed right after the handshake.
  const noRole = r.server.counters.noRole;
  const sae = await client(t, r, r.certs.sae);
  t.not(await rc(sae.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m })), undefined, 'SAE certificate: refused');
  t.equal(r.server.counters.noRole, noRole + 1, 'SAE certificate: its connection closed at once, counted');
  t.ok(r.log.some((l) => /^station: tls tls:127\.0\.0\.1:\d+: certificate names no station role; connection closed/.test(l)), 'and logged');
  // Another terminal's certificate: T2 acts for T1.
  const t2 = await client(t, r, r.certs.t2);
  t.equal(await rc(t2.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m })), Rc.DENIED, 'T2 certificate: UPLINK for T1 DENIED (a genuine T1 message)');
  t.equal(await rc(t2.request(Group.STATION, StationCmd.DOWNLINK, { t: 'T1', b: decodeServiceHeader(m).header.keyIds[0]!.batchId, o: 0, d: new Uint8Array(4) })), Rc.DENIED, 'T2 certificate: DOWNLINK for T1 DENIED');
  t.equal(await rc(t2.request(Group.STATION, StationCmd.UPLINK, { t: 'T9', m })), Rc.DENIED, 'T2 certificate: an unknown terminal is DENIED too (who has keys is not told)');
  t.match(await t2.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T2' }] }, 'T2 certificate: STATUS shows T2 only');
  t.equal(((await t2.request(Group.STATION, StationCmd.STATUS, {}))['terminals'] as unknown[]).length, 1);
  // An operator reads the accounts but uses no terminal's keys.
  const ops = await client(t, r, r.certs.ops);
  t.equal(await rc(ops.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m })), Rc.DENIED, 'operator: UPLINK DENIED');
  t.equal(await rc(ops.request(Group.STATION, StationCmd.DOWNLINK, { t: 'T1', b: new Uint8Array(16), o: 0, d: new Uint8Array(4) })), Rc.DENIED, 'operator: DOWNLINK DENIED');
  t.equal(r.server.counters.denied - denied, 5, 'the station counted the 5 requests it DENIED');

  t.equal(await accounts(t, r), before, 'key accounts, pool images and state unchanged byte for byte');
  // And the genuine message still opens for its own terminal: nothing above spent it.
  const t1 = await client(t, r, r.certs.t1);
  t.same(await t1.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m }), { n: 12, keyBits: 256 + 96 }, 'T1 certificate: the same uplink opens');
  t.ok(r.log.some((l) => /^station: TLS handshake from 127\.0\.0\.1:\d+ refused: \S+/.test(l)), 'refused handshakes are logged');
  t.notOk(r.log.some((l) => /PRIVATE KEY|CERTIFICATE/.test(l)), 'the log holds no certificate or key');
});

t.test("a terminal's own forged and replayed uplinks burn nothing", { skip }, async (t) => {
  const r = await rig(t);
  const t1 = await client(t, r, r.certs.t1);
  const genuine = await otpUplink(r.module);
  const { keyIds } = decodeServiceHeader(genuine).header;
  const batchId = keyIds[0]!.batchId;
  const before = await accounts(t, r);
  // Forged headers far ahead of the frontier in T1's batch (1 Mbit), and past its end.
  for (const bitOffset of [1_048_576 - 4096, 512 * 1024, 1_048_576 + 8192]) {
    const head = encodeServiceHeader({ mode: 'otp', keyIds: [{ batchId, bitOffset, bits: 256 + 96 }], counter: 0 });
    const forged = new Uint8Array(head.length + 12 + 16);
    forged.set(head);
    const got = await rc(t1.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: forged }));
    t.ok(got === Rc.AUTH_FAILED || got === Rc.KEY_NOT_AVAILABLE, `forged OTP header at bit ${bitOffset}: refused (rc ${String(got)})`);
  }
  const aead = encodeServiceHeader({ mode: 'aead', keyIds: [{ batchId, bitOffset: 900_000, bits: 256 }], counter: 7 });
  t.equal(await rc(t1.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: Uint8Array.from([...aead, ...new Uint8Array(40)]) })), Rc.AUTH_FAILED, 'forged AEAD session key far ahead: refused');
  t.equal(await accounts(t, r), before, 'nothing burned: accounts and pool images unchanged byte for byte');

  t.same(await t1.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: genuine }), { n: 12, keyBits: 256 + 96 }, 'the genuine uplink opens');
  const after = await accounts(t, r);
  t.not(after, before, 'and spends its keys');
  t.equal(await rc(t1.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: genuine })), Rc.KEY_NOT_AVAILABLE, 'replayed on the same connection: refused');
  const again = await client(t, r, r.certs.t1);
  t.equal(await rc(again.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: genuine })), Rc.KEY_NOT_AVAILABLE, 'replayed on a new connection: refused');
  t.equal(await accounts(t, r), after, 'replays change nothing');
  // The station and the module agree on the key bits used.
  const pool = (await r.module.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number };
  t.match(await t1.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T1', consumedKeyBits: pool.consumedKeyBits }] });
});

t.test('certificates are not confused: station certificates fail at the ETSI 014 API, its server is not the station', { skip }, async (t) => {
  const r = await rig(t);
  const kmd = await startKmdServer(KmdHome.open(r.home), { listen: '127.0.0.1:0' });
  t.teardown(() => kmd.close());
  const get = (pems: TlsPems) =>
    new Promise<number>((resolve, reject) => {
      const req = httpsRequest(`${kmd.etsi014Url}/api/v1/keys/sae1/status`, { ca: pems.caCertPem, cert: pems.certPem, key: pems.keyPem }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
  t.equal(await get(r.certs.t1), 401, 'a terminal station certificate is no SAE at the ETSI 014 API');
  t.equal(await get(r.certs.ops), 401, 'an operator station certificate neither');
  t.not(await get(r.certs.sae), 401, 'the SAE certificate is (control)');
  t.equal(roleOf(pemDer(r.certs.sae.certPem)), undefined, 'and names no station role');
  t.same(roleOf(pemDer(r.certs.t1.certPem)), { kind: 'terminal', id: 'T1', generation: 1 });
  // The client checks the server: the KMD's ETSI server has a certificate of the same CA.
  const etsi = new URL(kmd.etsi014Url);
  const e = await connectStation(`tls:${etsi.hostname}:${etsi.port}`, r.certs.t1).catch((err: Error) => err);
  t.match(e, { message: /is not a qkt station/ }, 'connectStation refuses a server that is not the station');
  const ok = await connectStation(r.server.address, r.certs.t1);
  await ok.close();
  t.pass('connectStation accepts the station');
});

t.test('strangers cost nothing lasting: handshake timeout, handshake and connection limits', { skip }, async (t) => {
  const r = await rig(t, { handshakeTimeoutMs: 300, maxHandshaking: 3, maxConnections: 5 });
  const { host, port } = parseTlsAddress(r.server.address);
  // Three silent TCP connections fill the handshake budget: a terminal connecting evicts the
  // oldest of them (it sent no byte) and is served.
  const silent = await Promise.all([0, 1, 2].map(() => rawConnect(host, port)));
  const closed = silent.map((s) => new Promise<void>((res) => s.once('close', () => res())));
  const first = await client(t, r, r.certs.t1);
  t.match(await first.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, 'a terminal gets in while three strangers hold the handshake budget');
  await first.close();
  // The silent ones are dropped (one evicted, two at the handshake timeout), each counted once.
  await Promise.all(closed);
  t.pass('the server dropped the silent connections');
  await waitFor(() => r.server.counters.handshakeFailures >= 3);
  await waitFor(() => false, 200);
  t.equal(r.server.counters.handshakeFailures, 3, 'one evicted and two timeouts, each counted once');
  t.ok(r.log.some((l) => /^station: TLS handshake from 127\.0\.0\.1:\d+ refused: evicted: too many handshakes in progress$/.test(l)), 'the first is logged (the rest within the second are only counted)');
  // Authenticated connections are bounded too: five held, a sixth is turned away, one closed frees a slot.
  const held: LinkClient[] = [];
  for (let i = 0; i < 5; i++) {
    const c = await client(t, r, r.certs.t1);
    t.match(await c.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, `connection ${i + 1} served`);
    held.push(c);
  }
  const sixth = await client(t, r, r.certs.t1).then(
    (c) => rc(c.request(Group.SYSTEM, SystemCmd.STATUS, {})),
    (e: Error) => e.name,
  );
  t.not(sixth, undefined, `a sixth connection is refused at the limit (${String(sixth)})`);
  await held.pop()!.close();
  await waitFor(() => false, 200);
  const next = await client(t, r, r.certs.t1);
  t.match(await next.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, 'after one closes, a terminal is served again');
});

t.test('connections per certificate identity are capped (the newest evicts the oldest); idle ones are closed', { skip }, async (t) => {
  const r = await rig(t, { maxPerIdentity: 2, idleTimeoutMs: 1500 });
  const a = await client(t, r, r.certs.t1);
  const b = await client(t, r, r.certs.t1);
  const ops = await client(t, r, r.certs.ops);
  for (const c of [a, b, ops]) t.match(await c.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / });
  // A third T1 connection (a terminal back after a network blip): T1's oldest is closed, not the newcomer.
  const c = await client(t, r, r.certs.t1);
  t.match(await c.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T1' }] }, 'the third T1 connection is served');
  await waitFor(() => r.server.counters.evicted >= 1);
  t.equal(r.server.counters.evicted, 1, "T1's oldest connection was closed");
  t.not(await rc(a.request(Group.SYSTEM, SystemCmd.STATUS, {})), undefined, 'the oldest is gone');
  t.match(await b.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, 'the second still served');
  t.match(await ops.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, 'another identity untouched');
  t.ok(r.log.some((l) => /^station: terminal T1 opened more than 2 connections; closed its oldest, tls tls:127\.0\.0\.1:\d+/.test(l)), 'the eviction is logged');
  // Idle: no byte either way for 1.5 s closes a connection; one kept busy stays open.
  const idleBefore = r.server.counters.idleClosed;
  for (let i = 0; i < 12; i++) {
    await new Promise((res) => setTimeout(res, 250));
    await c.request(Group.SYSTEM, SystemCmd.STATUS, {});
  }
  await waitFor(() => r.server.counters.idleClosed >= idleBefore + 2);
  t.equal(r.server.counters.idleClosed, idleBefore + 2, 'the two idle connections were closed');
  t.not(await rc(b.request(Group.SYSTEM, SystemCmd.STATUS, {})), undefined, 'an idle terminal connection is gone');
  t.not(await rc(ops.request(Group.SYSTEM, SystemCmd.STATUS, {})), undefined, 'an idle operator connection is gone');
  t.match(await c.request(Group.SYSTEM, SystemCmd.STATUS, {}), { firmware: /^qkt-station / }, 'the busy one is still served');
});

t.test("a terminal certificate holds for its device generation only: kmd enroll --again retires it", { skip }, async (t) => {
  const r = await rig(t);
  // T2's module is replaced (a new image): generation 2.
  await qktJson(t, ['kmd', 'enroll', '--home', r.home, '--terminal', 'T2', '--flash', join(r.dir, 'T2-new.img'), '--again']);
  const old = await client(t, r, r.certs.t2);
  const denied = r.server.counters.denied;
  const e = await old.request(Group.STATION, StationCmd.STATUS, {}).then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(e, { rc: Rc.DENIED, message: /cert generation 1 retired \(now 2\): qkt station cert --terminal T2$/ }, 'the old module\'s certificate is DENIED');
  t.equal(await rc(old.request(Group.STATION, StationCmd.UPLINK, { t: 'T2', m: new Uint8Array(40) })), Rc.DENIED, 'UPLINK too, before any key is read');
  t.equal(r.server.counters.denied, denied + 2);
  t.ok(r.log.some((l) => l === 'station: DENIED a certificate for terminal T2 generation 1; the terminal is at generation 2 (enrolled again)'), 'and logged');
  // A new certificate names generation 2 and is served.
  const made = await qktJson<{ uri: string; generation: number }>(t, ['station', 'cert', '--home', r.home, '--terminal', 'T2', '--out', join(r.dir, 't2-new')]);
  t.match(made, { uri: 'urn:qkt:station:terminal:T2:g2', generation: 2 });
  const fresh = await client(t, r, readClientPems(join(r.dir, 't2-new')));
  t.match(await fresh.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T2' }] }, 'the new certificate is served');
  // T1 (generation 1) is unaffected.
  const t1 = await client(t, r, r.certs.t1);
  t.match(await t1.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T1' }] });
  // A damaged record at the KMD: the generation cannot be checked, so the certificate is DENIED, by name.
  const recordFile = join(r.home, 'terminals', 'T1.json');
  const record = readFileSync(recordFile);
  writeFileSync(recordFile, '{"trunc');
  const de = await t1.request(Group.STATION, StationCmd.STATUS, {}).then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(de, { rc: Rc.DENIED, message: /the KMD's record of T1 is damaged; see qkt kmd status$/ }, 'a damaged record: DENIED with the reason, not INTERNAL');
  writeFileSync(recordFile, record);
  t.match(await t1.request(Group.STATION, StationCmd.STATUS, {}), { terminals: [{ terminalId: 'T1' }] }, 'served again once the record is whole');
  // A certificate from before generations (no `:g` marker) is refused, naming the fix.
  await issueStationClientCert(pkiDir(KmdHome.open(r.home)), { kind: 'terminal', id: 'T1' }, join(r.dir, 't1-old-format'));
  const pre = await client(t, r, readClientPems(join(r.dir, 't1-old-format')));
  const pe = await pre.request(Group.STATION, StationCmd.STATUS, {}).then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(pe, { rc: Rc.DENIED, message: /cert names no generation: qkt station cert --terminal T1$/ }, 'an old-format certificate is DENIED, naming qkt station cert');
});

t.test('qkt station cert: refuses to overwrite, unknown terminals, both or neither role', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home]);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'T1.img')]);
  const made = await qktJson<{ role: string; id: string; uri: string; key: string; cert: string; ca: string }>(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 'c')]);
  t.match(made, { role: 'terminal', id: 'T1', generation: 1, uri: 'urn:qkt:station:terminal:T1:g1', key: join(dir, 'c', 'client.key') });
  const { statSync } = await import('node:fs');
  t.equal(statSync(made.key).mode & 0o777, 0o600, 'the key is 0600');
  const keyBefore = readFileSync(made.key, 'utf8');
  const again = await runQkt(['station', 'cert', '--home', home, '--operator', 'ops', '--out', join(dir, 'c')]);
  t.equal(again.code, 6, 'a second issue into the same folder is refused');
  t.match(again.stderr, /^qkt: .*client\.key exists; give an empty --out folder\n$/);
  t.equal(readFileSync(made.key, 'utf8'), keyBefore, 'and the key is untouched');
  const unknown = await runQkt(['station', 'cert', '--home', home, '--terminal', 'T7', '--out', join(dir, 'd'), '--json']);
  t.match(parseJson(unknown), { error: { message: /terminal "T7" is not enrolled at this KMD; enrol it with qkt kmd enroll/ } });
  t.notOk(existsSync(join(dir, 'd')), 'nothing written for an unknown terminal');
  for (const args of [['--terminal', 'T1', '--operator', 'x'], []]) {
    const bad = await runQkt(['station', 'cert', '--home', home, ...args, '--out', join(dir, 'e')]);
    t.equal(bad.code, 2, `usage error for ${JSON.stringify(args)}`);
  }
  const badId = await runQkt(['station', 'cert', '--home', home, '--operator', '../x', '--out', join(dir, 'f')]);
  t.equal(badId.code, 2, 'an operator name is an id, never a path');
  // `station run` refuses a plain-TCP listen address rather than appear to serve one.
  const tcp = await runQkt(['station', 'run', '--home', home, '--listen', 'tcp:127.0.0.1:0']);
  t.equal(tcp.code, 2);
  t.match(tcp.stderr, /speaks TLS only/);
});

function pemDer(pem: string): Uint8Array {
  return new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'));
}

function rawConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => resolve(s));
    s.once('error', reject);
    s.on('error', () => undefined);
  });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  for (let waited = 0; !cond() && waited < ms; waited += 20) await new Promise((r) => setTimeout(r, 20));
}
