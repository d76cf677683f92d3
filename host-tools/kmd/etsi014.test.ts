// Conformance suite for the KMD's ETSI GS QKD 014 API over mutual TLS: every Status / Key container
// field, GET and POST forms, delivery semantics, and each error status the spec defines.
import t, { type Test } from 'tap';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isLoopbackHost, startEtsi014Server, type Etsi014Server } from './etsi014.js';
import { createCa, hasSaeCert, issueSaeCert, issueServerCert, readServerTls } from './pki.js';
import { SaeStore, type SaeStoreOptions } from './sae-store.js';
import { FixedRateSupply, type KeySupply } from './supply.js';

interface Identity {
  cert: string;
  key: string;
}
interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

interface Env {
  dir: string;
  ca: string;
  server: Etsi014Server;
  store: SaeStore;
  sae: Record<'A' | 'B' | 'C', Identity>;
  clock: { now: number };
  logs: string[];
  call(who: Identity | null, method: string, path: string, body?: unknown): Promise<Reply>;
}

function identity(dir: string, paths: { keyPath: string; certPath: string }): Identity {
  return { cert: readFileSync(paths.certPath, 'utf8'), key: readFileSync(paths.keyPath, 'utf8') };
}

/** A KMD home with a CA, a server cert, SAEs A, B, C, a fast supply on a fake clock, and the server. */
async function setup(t: Test, o: { rate?: number; capacityBits?: number; store?: Partial<SaeStoreOptions>; supply?: KeySupply } = {}): Promise<Env> {
  const dir = t.testdir();
  await createCa(dir);
  await issueServerCert(dir, ['localhost', '127.0.0.1']);
  const sae = {
    A: identity(dir, await issueSaeCert(dir, 'SAE_A')),
    B: identity(dir, await issueSaeCert(dir, 'SAE_B')),
    C: identity(dir, await issueSaeCert(dir, 'SAE_C')),
  };
  const clock = { now: 1_000 }; // one second after the link started
  const supplyPath = join(dir, 'supply.json');
  FixedRateSupply.create(supplyPath, { rateBitsPerSecond: o.rate ?? 10_000_000, startedAtMs: 0, capacityBits: o.capacityBits ?? 2 ** 24 });
  const supply = o.supply ?? new FixedRateSupply(supplyPath, () => clock.now);
  const store = new SaeStore({ path: join(dir, 'sae-keys.json'), supply, capacityBits: o.capacityBits ?? 2 ** 24, knownSae: (id) => hasSaeCert(dir, id), ...o.store });
  const logs: string[] = [];
  const server = await startEtsi014Server({ host: '127.0.0.1', port: 0, store, kmeId: 'KME_1', tls: readServerTls(dir), log: (l) => logs.push(l) });
  t.teardown(() => server.close());
  const ca = readFileSync(join(dir, 'ca.crt'), 'utf8');
  const call = (who: Identity | null, method: string, path: string, body?: unknown) => send(server.url, { ca, ...(who ?? {}) }, method, path, body);
  return { dir, ca, server, store, sae, clock, logs, call };
}

function send(base: string, tls: { ca?: string; cert?: string; key?: string }, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const u = new URL(path, base);
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const opts = {
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method,
      agent: false as const,
      headers: { ...(data !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}), ...headers },
      ...tls,
    };
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

function keyBytes(k: { key: string }): Buffer {
  return Buffer.from(k.key, 'base64');
}

const STATUS_FIELDS = [
  'source_KME_ID',
  'target_KME_ID',
  'master_SAE_ID',
  'slave_SAE_ID',
  'key_size',
  'stored_key_count',
  'max_key_count',
  'max_key_per_request',
  'max_key_size',
  'min_key_size',
  'max_SAE_ID_count',
];

t.test('§5.2 Get status: every §6.1 field, with its type', async (t) => {
  const env = await setup(t);
  const r = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status');
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /^application\/json/);
  t.same(Object.keys(r.body), STATUS_FIELDS, 'exactly the spec fields, in its order');
  t.same(r.body, {
    source_KME_ID: 'KME_1',
    target_KME_ID: 'KME_1',
    master_SAE_ID: 'SAE_A',
    slave_SAE_ID: 'SAE_B',
    key_size: 256,
    stored_key_count: Math.floor(10_000_000 / 256), // one second of a 10 Mbit/s link
    max_key_count: 2 ** 24 / 256,
    max_key_per_request: 128,
    max_key_size: 1024,
    min_key_size: 64,
    max_SAE_ID_count: 0,
  });
  for (const f of STATUS_FIELDS.slice(0, 4)) t.type(r.body[f], 'string', `${f} is a string`);
  for (const f of STATUS_FIELDS.slice(4)) t.ok(Number.isInteger(r.body[f]), `${f} is an integer`);
  env.clock.now = 0;
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status')).body.stored_key_count, 0, 'stored_key_count follows the supply');
});

t.test('§5.3 Get key, GET form: defaults and number/size query parameters', async (t) => {
  const env = await setup(t);
  const r = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys');
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /^application\/json/);
  t.equal(r.headers['cache-control'], 'no-store');
  t.same(Object.keys(r.body), ['keys'], '§6.3 Key container');
  t.equal(r.body.keys.length, 1, 'number defaults to 1');
  const k = r.body.keys[0];
  t.same(Object.keys(k), ['key_ID', 'key']);
  t.match(k.key_ID, UUID, 'key_ID is a UUID');
  t.match(k.key, BASE64);
  t.equal(keyBytes(k).length, 32, 'size defaults to key_size (256 bits)');

  const r2 = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?number=3&size=512');
  t.equal(r2.status, 200);
  t.equal(r2.body.keys.length, 3);
  for (const key of r2.body.keys) t.equal(keyBytes(key).length, 64);
  t.equal(new Set(r2.body.keys.map((x: { key_ID: string }) => x.key_ID)).size, 3, 'distinct key IDs');
  t.equal(new Set(r2.body.keys.map((x: { key: string }) => x.key)).size, 3, 'distinct keys');
  const bounds = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?number=128&size=64');
  t.equal(bounds.body.keys.length, 128, 'max_key_per_request keys of min_key_size');
  const big = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?size=1024');
  t.equal(keyBytes(big.body.keys[0]).length, 128, 'max_key_size');
  t.equal(env.store.pendingCount('SAE_A', 'SAE_B'), 1 + 3 + 128 + 1, 'the slave copies wait for SAE_B');
});

t.test('§5.3 Get key, POST form with a §6.2 Key request', async (t) => {
  const env = await setup(t);
  const r = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { number: 2, size: 128 });
  t.equal(r.status, 200);
  t.equal(r.body.keys.length, 2);
  for (const k of r.body.keys) t.equal(keyBytes(k).length, 16);
  const d = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', {});
  t.equal(d.body.keys.length, 1, 'empty Key request: defaults');
  t.equal(keyBytes(d.body.keys[0]).length, 32);
  const e = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', '');
  t.equal(e.status, 200, 'empty body: defaults');
  const full = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', {
    number: 1,
    size: 256,
    additional_slave_SAE_IDs: [],
    extension_mandatory: [],
    extension_optional: [{ abc_route_type: 'direct' }],
  });
  t.equal(full.status, 200, 'every §6.2 field; unsupported extension_optional is ignored');
});

t.test('§5.4 Get key with key IDs: the slave gets the same bytes, once', async (t) => {
  const env = await setup(t);
  const enc = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { number: 3 });
  const [k1, k2, k3] = enc.body.keys as { key_ID: string; key: string }[];
  const storeText = readFileSync(join(env.dir, 'sae-keys.json'), 'utf8');
  t.match(storeText, k1!.key_ID, 'pending slave copy persisted');

  const post = await env.call(env.sae.B, 'POST', '/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: k2!.key_ID }, { key_ID: k1!.key_ID }] });
  t.equal(post.status, 200);
  t.match(post.headers['content-type'], /^application\/json/);
  t.same(post.body, { keys: [k2, k1] }, 'same IDs and key bytes as the master got, in request order');

  const get = await env.call(env.sae.B, 'GET', `/api/v1/keys/SAE_A/dec_keys?key_ID=${k3!.key_ID}`);
  t.equal(get.status, 200);
  t.same(get.body, { keys: [k3] }, 'GET form, one key_ID');

  // Removed from the pool on both sides after delivery.
  t.equal(env.store.pendingCount(), 0);
  const again = await env.call(env.sae.B, 'GET', `/api/v1/keys/SAE_A/dec_keys?key_ID=${k1!.key_ID}`);
  t.equal(again.status, 400);
  t.same(again.body, { message: 'one or more keys specified are not found on KME', details: [{ key_ID: k1!.key_ID }] });
  const file = readFileSync(join(env.dir, 'sae-keys.json'), 'utf8');
  for (const k of [k1, k2, k3]) {
    t.notMatch(file, k!.key_ID, 'gone from the store file');
    t.notMatch(file, k!.key, 'no key bytes left in the store file');
  }
});

t.test('§5.4 all or nothing, other master, restart', async (t) => {
  const env = await setup(t);
  const enc = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?number=2');
  const [k1, k2] = enc.body.keys as { key_ID: string; key: string }[];
  const unknown = '00000000-0000-4000-8000-000000000000';
  const mixed = await env.call(env.sae.B, 'POST', '/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: k1!.key_ID }, { key_ID: unknown }] });
  t.equal(mixed.status, 400);
  t.equal(mixed.body.message, 'one or more keys specified are not found on KME');
  t.same(mixed.body.details, [{ key_ID: unknown }]);
  t.equal(env.store.pendingCount(), 2, 'nothing delivered when one key is missing');

  const otherMaster = await env.call(env.sae.B, 'POST', '/api/v1/keys/SAE_C/dec_keys', { key_IDs: [{ key_ID: k1!.key_ID }] });
  t.equal(otherMaster.status, 400, 'keys of SAE_A are not found under master SAE_C');

  // A restarted KMD (new store on the same file) still holds the slave's copies.
  const again = new SaeStore({ path: join(env.dir, 'sae-keys.json'), supply: new FixedRateSupply(join(env.dir, 'supply.json'), () => env.clock.now) });
  const got = again.deliver('SAE_B', 'SAE_A', [k2!.key_ID.toUpperCase(), k1!.key_ID]);
  t.same(
    got.map((k) => ({ key_ID: k.keyId, key: Buffer.from(k.key).toString('base64') })),
    [k2, k1],
    'delivered after a restart (key IDs matched case-insensitively)',
  );
});

t.test('401: the caller is not the SAE the request names', async (t) => {
  const env = await setup(t);
  const enc = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys');
  const id = enc.body.keys[0].key_ID as string;
  const c = await env.call(env.sae.C, 'GET', `/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
  t.equal(c.status, 401, 'SAE_C may not fetch keys issued to SAE_B');
  t.same(c.body, { message: 'unauthorized' });
  const a = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/dec_keys', { key_IDs: [{ key_ID: id }] });
  t.equal(a.status, 401, 'nor may the master fetch the slave copy');
  t.equal(env.store.pendingCount(), 1, 'still pending for SAE_B');
  t.equal((await env.call(env.sae.B, 'GET', `/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`)).status, 200);

  // A certificate of the right CA that is not a client certificate (no clientAuth) names no SAE.
  const server = identity(env.dir, { keyPath: join(env.dir, 'server.key'), certPath: join(env.dir, 'server.crt') });
  await t.rejects(env.call(server, 'GET', '/api/v1/keys/SAE_B/status'), 'server certificate as client certificate: refused');
});

t.test('mutual TLS: no client certificate, or one from another CA, is refused at the handshake', async (t) => {
  const env = await setup(t);
  await t.rejects(env.call(null, 'GET', '/api/v1/keys/SAE_B/status'), 'no client certificate (TLS 1.3)');
  await t.rejects(send(env.server.url, { ca: env.ca, maxVersion: 'TLSv1.2' } as never, 'GET', '/api/v1/keys/SAE_B/status'), 'no client certificate (TLS 1.2)');
  const other = join(env.dir, 'other-ca');
  await createCa(other, { commonName: 'someone else' });
  const stranger = identity(other, await issueSaeCert(other, 'SAE_A'));
  await t.rejects(env.call(stranger, 'GET', '/api/v1/keys/SAE_B/status'), 'SAE_A certificate from another CA');
  await t.rejects(send(env.server.url, { ...env.sae.A }, 'GET', '/api/v1/keys/SAE_B/status'), 'client does not trust a server from an unknown CA');
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status')).status, 200, 'the server still serves good clients');
});

t.test('400: key size and number out of the limits', async (t) => {
  const env = await setup(t);
  const cases: [string, unknown, string | RegExp][] = [
    ['?size=100', undefined, 'size shall be a multiple of 8'],
    ['', { size: 100 }, 'size shall be a multiple of 8'],
    ['?size=56', undefined, 'size shall be between min_key_size (64) and max_key_size (1024)'],
    ['', { size: 1032 }, 'size shall be between min_key_size (64) and max_key_size (1024)'],
    ['?size=0', undefined, /size shall be/],
    ['?number=0', undefined, 'number shall be a positive integer'],
    ['', { number: -1 }, 'number shall be a positive integer'],
    ['?number=129', undefined, 'number shall not exceed max_key_per_request (128)'],
    ['', { number: 129 }, 'number shall not exceed max_key_per_request (128)'],
    ['', { number: 1.5 }, 'number shall be an integer'],
    ['', { number: '2' }, 'number shall be an integer'],
    ['', { size: null }, 'size shall be an integer'],
    ['?number=abc', undefined, 'number shall be an integer'],
    ['?number=1&number=2', undefined, 'number shall be given once'],
    ['?count=2', undefined, 'unknown query parameter "count"'],
  ];
  for (const [query, body, msg] of cases) {
    const r = await env.call(env.sae.A, body === undefined ? 'GET' : 'POST', `/api/v1/keys/SAE_B/enc_keys${query}`, body);
    t.equal(r.status, 400, `${query || JSON.stringify(body)} -> 400`);
    t.match(r.body.message, msg);
    t.same(Object.keys(r.body), ['message'], '§6.5 Error object');
  }
  t.equal(env.store.pendingCount(), 0, 'no key issued by a refused request');
});

t.test('400: additional_slave_SAE_IDs and extension_mandatory are not supported', async (t) => {
  const env = await setup(t);
  const a = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { additional_slave_SAE_IDs: ['SAE_C'] });
  t.equal(a.status, 400);
  t.equal(a.body.message, 'additional_slave_SAE_IDs is not supported by this KME (max_SAE_ID_count is 0)');
  const b = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { additional_slave_SAE_IDs: 'SAE_C' });
  t.equal(b.status, 400);
  t.equal(b.body.message, 'additional_slave_SAE_IDs shall be an array of SAE IDs');
  const m = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { extension_mandatory: [{ abc_route_type: 'direct' }, { abc_transfer_method: 'qkd' }] });
  t.equal(m.status, 400);
  t.same(m.body, { message: 'not all extension_mandatory parameters are supported', details: [{ extension_mandatory_unsupported: ['abc_route_type', 'abc_transfer_method'] }] });
  const o = await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { extension_optional: 'x' });
  t.equal(o.status, 400);
  t.equal(env.store.pendingCount(), 0);
});

t.test('400: malformed requests', async (t) => {
  const env = await setup(t);
  const enc = '/api/v1/keys/SAE_B/enc_keys';
  const dec = '/api/v1/keys/SAE_A/dec_keys';
  const cases: [string, string, unknown, string][] = [
    ['POST', enc, '{"number": 1', 'request body is not valid JSON'],
    ['POST', enc, '[1]', 'Key request shall be a JSON object'],
    ['POST', enc, { key_size: 256 }, 'Key request: unknown field "key_size"'],
    ['POST', dec, 'not json', 'request body is not valid JSON'],
    ['POST', dec, {}, 'key_IDs shall be an array of objects'],
    ['POST', dec, { key_IDs: [] }, 'key_IDs shall name at least one key'],
    ['POST', dec, { key_IDs: ['abc'] }, 'key_IDs shall be an array of objects'],
    ['POST', dec, { key_IDs: [{ key_ID: 5 }] }, 'key_ID shall be a string'],
    ['POST', dec, { key_IDs: [{ keyID: 'x' }] }, 'key_IDs item: unknown field "keyID"'],
    ['POST', dec, { key_IDs: [{ key_ID: 'x' }, { key_ID: 'x' }] }, 'key_IDs shall not repeat a key_ID'],
    ['POST', dec, { key_IDs: Array.from({ length: 129 }, (_, i) => ({ key_ID: `k${i}` })) }, 'key_IDs shall not name more than max_key_per_request (128) keys'],
    ['GET', dec, undefined, 'key_ID shall be given once'],
    ['GET', `${dec}?key_ID=a&key_ID=b`, undefined, 'key_ID shall be given once'],
    ['GET', `${dec}?key_IDs=a`, undefined, 'unknown query parameter "key_IDs"'],
    ['GET', '/api/v1/keys/%E0%A4%A/status', undefined, 'invalid SAE ID in the URL'],
    ['GET', '/api/v1/keys/a%2Fb/status', undefined, 'invalid SAE ID in the URL: "a/b"'],
    ['GET', '/api/v1/keys/SAE_X/status', undefined, 'unknown SAE ID: SAE_X'],
    ['GET', '/api/v1/keys/SAE_A/enc_keys', undefined, 'master and slave SAE IDs shall differ'],
  ];
  for (const [method, path, body, msg] of cases) {
    const r = await env.call(path.startsWith(dec) ? env.sae.B : env.sae.A, method, path, body);
    t.equal(r.status, 400, `${method} ${path} ${typeof body === 'string' ? body : JSON.stringify(body) ?? ''}`.slice(0, 100));
    t.equal(r.body.message, msg);
  }
  const big = await env.call(env.sae.A, 'POST', enc, JSON.stringify({ extension_optional: [{ pad: 'x'.repeat(70_000) }] }));
  t.equal(big.status, 400);
  t.equal(big.body.message, 'request body larger than 65536 bytes');
});

t.test('405 for a wrong method, 404 for an unknown path', async (t) => {
  const env = await setup(t);
  const wrong: [string, string, string][] = [
    ['POST', '/api/v1/keys/SAE_B/status', 'GET'],
    ['PUT', '/api/v1/keys/SAE_B/enc_keys', 'GET, POST'],
    ['DELETE', '/api/v1/keys/SAE_A/dec_keys', 'GET, POST'],
    ['HEAD', '/api/v1/keys/SAE_B/status', 'GET'],
  ];
  for (const [method, path, allow] of wrong) {
    const r = await env.call(env.sae.A, method, path);
    t.equal(r.status, 405, `${method} ${path}`);
    t.equal(r.headers.allow, allow);
    if (method !== 'HEAD') t.match(r.body.message, /method not allowed/);
  }
  for (const path of ['/', '/api/v1/keys', '/api/v1/keys/SAE_B', '/api/v1/keys/SAE_B/other', '/api/v2/keys/SAE_B/status', '/api/v1/keys/SAE_B/status/', '/api/v1/keys//status']) {
    const r = await env.call(env.sae.A, 'GET', path);
    t.equal(r.status, 404, path);
    t.same(r.body, { message: 'not found' });
    t.match(r.headers['content-type'], /^application\/json/);
  }
});

t.test('503: exhausted supply (§5.3 "Error of server side")', async (t) => {
  // 1024 bits/s, one second in: 1024 bits = four 256-bit keys.
  const env = await setup(t, { rate: 1024 });
  const st = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status');
  t.equal(st.body.stored_key_count, 4);
  const five = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?number=5');
  t.equal(five.status, 503);
  t.same(five.body, { message: 'keys are being exhausted: 5 key(s) of 256 bits requested, 4 available' });
  t.equal(env.store.pendingCount(), 0, 'all or nothing');
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys?number=4')).status, 200);
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status')).body.stored_key_count, 0);
  t.equal((await env.call(env.sae.A, 'POST', '/api/v1/keys/SAE_B/enc_keys', { size: 64 })).status, 503);
  env.clock.now += 250; // 256 more bits accrue
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/status')).body.stored_key_count, 1);
  t.equal((await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys')).status, 200);
  t.same(env.logs, [], 'a short supply is not a server fault');
});

t.test('503: a fault inside the KME, logged without key material', async (t) => {
  const supply: KeySupply = {
    availableBits: () => 1 << 20,
    take: () => {
      throw new Error('disk on fire');
    },
  };
  const env = await setup(t, { supply });
  const r = await env.call(env.sae.A, 'GET', '/api/v1/keys/SAE_B/enc_keys');
  t.equal(r.status, 503);
  t.same(r.body, { message: 'error on KME side' });
  t.equal(env.logs.length, 1);
  t.match(env.logs[0], /disk on fire/);
});

t.test('plain HTTP is a loopback-only test mode; the caller is X-SAE-ID', async (t) => {
  const env = await setup(t);
  const base = { port: 0, store: env.store, kmeId: 'KME_1', log: () => {} };
  await t.rejects(startEtsi014Server({ ...base, host: '0.0.0.0', allowPlainHttp: true }), /loopback host only/);
  await t.rejects(startEtsi014Server({ ...base, host: '192.0.2.1', allowPlainHttp: true }), /loopback host only/);
  await t.rejects(startEtsi014Server({ ...base, host: '127.0.0.1' }), /tls is required/);
  await t.rejects(startEtsi014Server({ ...base, host: '127.0.0.1', allowPlainHttp: true, tls: readServerTls(env.dir) }), /either tls or allowPlainHttp/);
  await t.rejects(startEtsi014Server({ ...base, host: '127.0.0.1', kmeId: '', tls: readServerTls(env.dir) }), TypeError);
  t.ok(isLoopbackHost('127.3.2.1') && isLoopbackHost('::1') && isLoopbackHost('localhost'));
  t.notOk(isLoopbackHost('128.0.0.1') || isLoopbackHost('127.example.com') || isLoopbackHost('::'));

  const plain = await startEtsi014Server({ ...base, host: '127.0.0.1', allowPlainHttp: true });
  t.teardown(() => plain.close());
  t.match(plain.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const enc = await send(plain.url, {}, 'GET', '/api/v1/keys/SAE_B/enc_keys', undefined, { 'X-SAE-ID': 'SAE_A' });
  t.equal(enc.status, 200);
  const dec = await send(plain.url, {}, 'POST', '/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] }, { 'X-SAE-ID': 'SAE_B' });
  t.same(dec.body, enc.body);
  t.equal((await send(plain.url, {}, 'GET', '/api/v1/keys/SAE_B/status')).status, 401, 'no X-SAE-ID: unauthorized');
  t.equal((await send(plain.url, {}, 'GET', '/api/v1/keys/SAE_B/status', undefined, { 'X-SAE-ID': 'SAE_Q' })).status, 401, 'unknown caller: unauthorized');
  t.equal((await send(plain.url, {}, 'GET', '/api/v1/keys/SAE_B/status', undefined, { 'X-SAE-ID': 'a b' })).status, 401);
});
