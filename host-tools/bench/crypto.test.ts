// bench crypto: `qkt bench crypto --bytes N --json` runs every case on the same data, checks each
// opened what it sealed, and reports MB/s and ratios (positive; no wall-clock limits asserted).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { qktBin } from './start.js';
import { formatCryptoBench } from './crypto.js';
import type { CryptoBenchResult } from './crypto.js';

t.setTimeout(120_000);

t.test('qkt bench crypto --bytes 65536 --json --out DIR: shape, every suite, positive ratios, files written', async (t) => {
  const dir = t.testdir({});
  const p = spawnSync(process.execPath, [qktBin(), 'bench', 'crypto', '--bytes', '65536', '--json', '--out', dir], { encoding: 'utf8' });
  t.equal(p.status, 0, p.stderr);
  const doc = JSON.parse(p.stdout) as { results: Array<{ name: string; result: CryptoBenchResult }> };
  t.same(doc.results.map((r) => r.name), ['crypto']);
  const r = doc.results[0]!.result;
  t.equal(r.bench, 'crypto');
  t.equal(r.bytes, 65536);
  t.same(r.sizes.map((s) => s.messageBytes), [4096, 256]);
  for (const s of r.sizes) {
    t.same(
      s.cases.map((c) => `${c.kind} ${c.algorithm} ${c.provider}`),
      [
        'raw aes-256-gcm node:crypto',
        'raw chacha20-poly1305 node:crypto',
        'raw sm4-ctr-hmac-sm3 node:crypto',
        'service otp reference',
        'service aes-256-gcm node',
        'service chacha20-poly1305 node',
        'service sm4-ctr-hmac-sm3 node',
        'service aes-256-gcm reference',
        'service chacha20-poly1305 reference',
        'service sm4-ctr-hmac-sm3 reference',
      ],
      `${s.messageBytes}: every case, baseline first`,
    );
    for (const c of s.cases) t.ok(c.mbPerSecond > 0 && c.ratioToNodeAesGcm > 0 && c.bytes > 0, `${s.messageBytes} ${c.name}: positive`);
    t.equal(s.cases[0]!.ratioToNodeAesGcm, 1, 'the baseline is 1x itself');
    for (const c of s.cases.filter((x) => x.kind === 'service' && x.provider === 'node')) t.ok(c.ratioToOwnRaw! > 0, `${c.name}: ratio to its raw primitives`);
  }
  t.same(Object.keys(r.target.suites), ['aes-256-gcm', 'chacha20-poly1305', 'sm4-ctr-hmac-sm3']);
  for (const v of Object.values(r.target.suites)) t.equal(v.met, v.ratio >= 0.8);
  t.same(JSON.parse(readFileSync(join(dir, 'crypto.json'), 'utf8')), r, '--out wrote the same result');
  t.equal(readFileSync(join(dir, 'crypto.md'), 'utf8'), formatCryptoBench(r) + '\n');
  t.notMatch(p.stdout, /"key"|sessionKey/, 'no key material in the JSON');
});
