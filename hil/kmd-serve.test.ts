// `qkt kmd serve` as an operator runs it: SAE certificates from `qkt kmd sae add`, the ETSI GS
// QKD 014 API over mutual TLS on 127.0.0.1, used with those certificates as an SAE would (status,
// enc_keys, dec_keys, errors). The API itself is checked in depth by host-tools/kmd/etsi014.test.ts;
// this checks the CLI wiring: home, PKI folder, key store, supply, listen address, stop.
import t from 'tap';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { background, cliSkipReason, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(90_000);

interface SaeFiles {
  sae: string;
  cert: string;
  key: string;
  ca: string;
}
interface Reply {
  status: number;
  body: Record<string, unknown>;
}
interface KeyContainer {
  keys: Array<{ key_ID: string; key: string }>;
}

/** One HTTPS request with an SAE's client certificate (or none), trusting the KMD's CA. */
function call(base: string, path: string, o: { ca: string; sae?: { cert: string; key: string }; method?: string; body?: unknown }): Promise<Reply> {
  const url = new URL(path, base);
  const body = o.body === undefined ? undefined : JSON.stringify(o.body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: o.method ?? (body ? 'POST' : 'GET'),
        ca: readFileSync(o.ca),
        ...(o.sae ? { cert: readFileSync(o.sae.cert), key: readFileSync(o.sae.key) } : {}),
        agent: false,
        headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {},
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
          } catch {
            reject(new Error(`HTTP ${res.statusCode}: not JSON: ${text}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

t.test('kmd serve: ETSI GS QKD 014 over mutual TLS with kmd sae add certificates', { skip: cliSkipReason() }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const strange = join(dir, 'other-kmd');
  const init = await qktJson<{ kmdId: string }>(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await qktJson(t, ['kmd', 'init', '--home', strange]);

  // Certificates: two SAEs that share keys, a third that must not get them, one from another KMD.
  const [A, B, C] = await Promise.all(['SAE_A', 'SAE_B', 'SAE_C'].map((sae) => qktJson<SaeFiles>(t, ['kmd', 'sae', 'add', '--home', home, '--sae', sae])));
  const X = await qktJson<SaeFiles>(t, ['kmd', 'sae', 'add', '--home', strange, '--sae', 'SAE_A']);
  for (const s of [A!, B!, C!]) {
    t.match(s, { cert: join(home, 'pki', 'sae', `${s.sae}.crt`), key: join(home, 'pki', 'sae', `${s.sae}.key`), ca: join(home, 'pki', 'ca.crt') }, `${s.sae}: paths in the KMD's pki folder`);
  }
  const again = await runQkt(['kmd', 'sae', 'add', '--home', home, '--sae', 'SAE_A']);
  t.equal(again.code, 6, 'a second certificate for the same SAE is refused (exit 6)');
  t.match(again.stderr, /SAE SAE_A already has a certificate/);

  const serve = await background(t, ['kmd', 'serve', '--home', home, '--listen', '127.0.0.1:0']);
  t.match(serve.ready, { event: 'ready', kmdId: init.kmdId, etsi014: /^https:\/\/127\.0\.0\.1:\d+$/, download: null });
  const base = serve.ready['etsi014'] as string;
  const ca = A!.ca;
  const as = (s: SaeFiles) => ({ ca, sae: s });

  const st = await call(base, '/api/v1/keys/SAE_B/status', as(A!));
  t.equal(st.status, 200);
  t.match(st.body, {
    source_KME_ID: init.kmdId,
    target_KME_ID: init.kmdId,
    master_SAE_ID: 'SAE_A',
    slave_SAE_ID: 'SAE_B',
    key_size: 256,
    stored_key_count: Number,
    max_key_count: Number,
    max_key_per_request: 128,
    max_key_size: 1024,
    min_key_size: 64,
    max_SAE_ID_count: 0,
  });
  t.ok((st.body['stored_key_count'] as number) > 0, 'the supply has keys');

  // enc_keys, both forms, by the master SAE A for slave B.
  const enc = await call(base, '/api/v1/keys/SAE_B/enc_keys?number=2&size=256', as(A!));
  t.equal(enc.status, 200, JSON.stringify(enc.body));
  const encKeys = (enc.body as unknown as KeyContainer).keys;
  t.equal(encKeys.length, 2);
  for (const k of encKeys) {
    t.match(k.key_ID, UUID);
    t.equal(Buffer.from(k.key, 'base64').length, 32, '256-bit key');
  }
  t.not(encKeys[0]!.key, encKeys[1]!.key, 'two different keys');
  const post = await call(base, '/api/v1/keys/SAE_B/enc_keys', { ...as(A!), body: { number: 1, size: 128 } });
  t.equal(post.status, 200, JSON.stringify(post.body));
  const postKey = (post.body as unknown as KeyContainer).keys[0]!;
  t.equal(Buffer.from(postKey.key, 'base64').length, 16, '128-bit key');

  // 401: an SAE the keys were not issued to (C) gets none of them, and nothing is spent.
  const wrong = await call(base, '/api/v1/keys/SAE_A/dec_keys', { ...as(C!), body: { key_IDs: [{ key_ID: encKeys[0]!.key_ID }] } });
  t.equal(wrong.status, 401);
  t.match(wrong.body, { message: 'unauthorized' });

  // dec_keys by the slave B: the same key bytes A got, in the order asked.
  const dec = await call(base, '/api/v1/keys/SAE_A/dec_keys', { ...as(B!), body: { key_IDs: [{ key_ID: encKeys[1]!.key_ID }, { key_ID: encKeys[0]!.key_ID }] } });
  t.equal(dec.status, 200, JSON.stringify(dec.body));
  t.same((dec.body as unknown as KeyContainer).keys, [encKeys[1], encKeys[0]], 'B gets the same key bytes as A');
  const again2 = await call(base, '/api/v1/keys/SAE_A/dec_keys', { ...as(B!), body: { key_IDs: [{ key_ID: encKeys[0]!.key_ID }] } });
  t.equal(again2.status, 400, 'a key is delivered to the slave once');
  t.match(again2.body, { message: 'one or more keys specified are not found on KME', details: [{ key_ID: encKeys[0]!.key_ID }] });

  // 400 for a size that is not a multiple of 8 (the spec's words).
  const odd = await call(base, '/api/v1/keys/SAE_B/enc_keys?number=1&size=100', as(A!));
  t.equal(odd.status, 400);
  t.match(odd.body, { message: 'size shall be a multiple of 8' });

  // Refused handshakes: no client certificate; a certificate from another KMD's CA. No HTTP answer.
  const refused = (o: Parameters<typeof call>[2]) => call(base, '/api/v1/keys/SAE_B/status', o).then((r) => `HTTP ${r.status}`, (e: NodeJS.ErrnoException) => e.code ?? e.message);
  t.match(await refused({ ca }), /CERTIFICATE_REQUIRED|ECONNRESET|EPIPE/, 'a client without a certificate is refused in the handshake');
  t.match(await refused({ ca, sae: X! }), /UNKNOWN_CA|BAD_CERTIFICATE|DECRYPT_ERROR|ECONNRESET|EPIPE/, "a certificate from another KMD's CA is refused in the handshake");

  // The slave's copy is on disk in the KMD home: after a restart, B still gets the POSTed key.
  t.equal(await serve.stop(), 0, 'kmd serve stops cleanly on SIGTERM');
  const serve2 = await background(t, ['kmd', 'serve', '--home', home, '--listen', '127.0.0.1:0']);
  const base2 = serve2.ready['etsi014'] as string;
  const later = await call(base2, `/api/v1/keys/SAE_A/dec_keys?key_ID=${postKey.key_ID}`, as(B!));
  t.equal(later.status, 200, JSON.stringify(later.body));
  t.same((later.body as unknown as KeyContainer).keys, [postKey], 'same key after a restart of kmd serve');
  t.equal(await serve2.stop(), 0);
});

t.test('kmd serve --plain-http on loopback (test mode): caller from X-SAE-ID', { skip: cliSkipReason() }, async (t) => {
  const home = join(t.testdir({}), 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1Mbit/s']);
  await Promise.all(['A', 'B'].map((sae) => qktJson(t, ['kmd', 'sae', 'add', '--home', home, '--sae', sae])));
  const serve = await background(t, ['kmd', 'serve', '--home', home, '--listen', '127.0.0.1:0', '--plain-http']);
  const base = serve.ready['etsi014'] as string;
  t.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
  const get = (sae?: string) =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest(new URL('/api/v1/keys/B/status', base), { agent: false, headers: sae ? { 'x-sae-id': sae } : {} }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  t.equal(await get('A'), 200);
  t.equal(await get(), 401, 'no X-SAE-ID: unauthorized');
});
