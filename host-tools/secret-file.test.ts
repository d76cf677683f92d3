// Key hygiene (issue 8): every file holding a secret is created 0600 (folders 0700) even under
// umask 000, and the check that finds secret files group or others can read.
import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './fs-atomic.js';
import { mkdirSecret, readableByOthers, sharedSecretsWarning } from './secret-file.js';
import { KmdHome } from './kmd/home.js';
import { enrollTerminal } from './kmd/enroll.js';
import { exportBatch } from './kmd/export.js';
import { enrollCarrier, CARRIER_KEY_FILE } from './kmd/carriers.js';
import { issueToken, TOKEN_DIR } from './kmd/tokens.js';
import { createCa, issueSaeCert } from './kmd/pki.js';

const mode = (p: string): number => statSync(p).mode & 0o777;
const posix = process.platform !== 'win32';

/** Run the test body under umask 000, restored after. */
function umask000(t: Test): void {
  const old = process.umask(0o000);
  t.teardown(() => void process.umask(old));
}

t.test('writeFileAtomic: 0600 under umask 000, also over a 0644 file and a stale 0644 temp file', { skip: !posix && 'no POSIX modes' }, async (t) => {
  umask000(t);
  const dir = t.testdir({});
  const f = join(dir, 'secret.json');
  writeFileAtomic(f, '{}');
  t.equal(mode(f), 0o600);
  writeFileSync(f, 'old', { mode: 0o644 });
  chmodSync(f, 0o644);
  // a temp file a crash left behind (same pid), group/world readable
  const tmp = join(dir, `.secret.json.tmp-${process.pid}`);
  writeFileSync(tmp, 'stale', { mode: 0o666 });
  chmodSync(tmp, 0o666);
  writeFileAtomic(f, '{"new":1}');
  t.equal(mode(f), 0o600, 'rewritten file is 0600 again');
  t.notOk(existsSync(tmp));
  writeFileAtomic(join(dir, 'ca.crt'), 'cert', 0o644);
  t.equal(mode(join(dir, 'ca.crt')), 0o644, 'an explicit mode is kept exactly');
});

t.test('mkdirSecret: every folder it creates is 0700 under umask 000; existing ones untouched', { skip: !posix && 'no POSIX modes' }, async (t) => {
  umask000(t);
  const dir = t.testdir({});
  mkdirSync(join(dir, 'open'), { mode: 0o755 });
  chmodSync(join(dir, 'open'), 0o755);
  mkdirSecret(join(dir, 'open', 'a', 'b'));
  t.equal(mode(join(dir, 'open')), 0o755);
  t.equal(mode(join(dir, 'open', 'a')), 0o700);
  t.equal(mode(join(dir, 'open', 'a', 'b')), 0o700);
  mkdirSecret(join(dir, 'open', 'a', 'b')); // exists: no-op
  t.equal(mode(join(dir, 'open', 'a', 'b')), 0o700);
});

t.test('KMD home, flash images, station pools, outbox, carrier key, tokens, PKI keys: 0600 in 0700 folders under umask 000', { skip: !posix && 'no POSIX modes' }, async (t) => {
  umask000(t);
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 1 << 20 });
  for (const d of ['', 'terminals', 'carriers', 'outbox', 'station']) t.equal(mode(home.path(d)), 0o700, `${d || 'home'}/ is 0700`);
  for (const f of ['kmd.json', 'supply.json']) t.equal(mode(home.path(f)), 0o600, `${f} is 0600`);

  const img = join(dir, 't1.img');
  enrollTerminal(home, 'T1', img);
  t.equal(mode(img), 0o600, 'the enrolled flash image is 0600');
  t.equal(mode(home.path('terminals', 'T1.json')), 0o600, 'the terminal record (device key) is 0600');

  const e = exportBatch(home, 'T1', 8192);
  t.equal(mode(e.file), 0o600, 'the sealed batch in the outbox is 0600');
  t.equal(mode(home.path('station', 'T1')), 0o700, 'station/T1/ is 0700');
  t.equal(mode(home.path('station', 'T1', 'pool.img')), 0o600, "the station's pool image is 0600");
  t.equal(mode(home.path('station', 'T1', 'state.json')), 0o600);
  t.equal(mode(home.path('supply.json')), 0o600, 'supply.json rewritten 0600');

  const car = join(dir, 'car1');
  enrollCarrier(home, 'car1', car);
  t.equal(mode(join(car, CARRIER_KEY_FILE)), 0o600, "the carrier's auth.key is 0600");
  t.equal(mode(home.path('carriers', 'car1.json')), 0o600, "the KMD's carrier record is 0600");
  const tok = issueToken(home, 'T1', 'zeroize', car);
  t.equal(mode(tok.file), 0o600, 'the token is 0600');
  t.equal(mode(join(car, TOKEN_DIR)), 0o700, 'tokens/ is 0700');

  const pki = home.path('pki');
  const ca = await createCa(pki);
  const sae = await issueSaeCert(pki, 'sae-1');
  t.equal(mode(pki), 0o700);
  t.equal(mode(join(pki, 'sae')), 0o700);
  t.equal(mode(ca.keyPath), 0o600, 'the CA key is 0600');
  t.equal(mode(sae.keyPath), 0o600, 'the SAE key is 0600');
  t.equal(mode(ca.certPath), 0o644, 'certificates stay public');

  t.same(
    home.secretFiles().map((f) => f.slice(home.dir.length + 1)).sort(),
    ['carriers/car1.json', `outbox/${e.file.split('/').pop()}`, 'pki/ca.key', 'pki/sae/sae-1.key', 'station/T1/pool.img', 'terminals/T1.json'].sort(),
    'secretFiles() lists the files that hold secrets',
  );
  t.same(home.secretFiles().filter(readableByOthers), [], 'none readable by group or others');
});

t.test('readableByOthers and the one-line warning', { skip: !posix && 'no POSIX modes' }, async (t) => {
  const dir = t.testdir({ a: 'x', b: 'x', c: 'x', d: 'x', e: 'x' });
  const p = (n: string) => join(dir, n);
  for (const n of ['a', 'b', 'c', 'd', 'e']) chmodSync(p(n), 0o600);
  t.notOk(readableByOthers(p('a')));
  t.notOk(readableByOthers(p('missing')), 'a missing file is not shared');
  t.equal(sharedSecretsWarning([p('a'), p('missing')]), undefined);
  chmodSync(p('a'), 0o644);
  t.ok(readableByOthers(p('a')));
  chmodSync(p('b'), 0o640);
  t.ok(readableByOthers(p('b')), 'group-readable counts');
  chmodSync(p('c'), 0o604);
  t.ok(readableByOthers(p('c')), 'world-readable counts');
  chmodSync(p('d'), 0o620);
  t.notOk(readableByOthers(p('d')), 'only reading counts');
  t.equal(sharedSecretsWarning([p('a')]), `warning: group or others can read ${p('a')} (mode 0644), which holds secrets; fix: chmod 600 ${p('a')}`);
  chmodSync(p('e'), 0o666);
  const w = sharedSecretsWarning(['a', 'b', 'c', 'd', 'e'].map(p), dir)!;
  t.equal(w, `warning: group or others can read 4 files holding secrets in ${dir} (a, b, c, ... (1 more)); fix: chmod 600 each of them`);
  t.notMatch(w, /\n/, 'one line');
});
