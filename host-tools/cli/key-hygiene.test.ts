// Key hygiene in the CLI (issue 8, docs/cli.md "Key hygiene"): `qkt terminal run` refuses a flash
// image group or others can read unless --allow-shared-image; commands on a KMD home warn on
// stderr (one line, never on stdout) about secret files group or others can read, and go on.
import t from 'tap';
import { chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runQkt, startQkt } from '../../hil/cli.js';
import { cliSkipReason } from '../../hil/e2e-rig.js';

const skip = cliSkipReason() || (process.platform === 'win32' && 'no POSIX modes');
const mode = (p: string): number => statSync(p).mode & 0o777;

t.test('terminal run: refuses a 0644 image, starts on it with --allow-shared-image, starts on a 0600 one', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const img = join(dir, 't1.img');
  t.equal((await runQkt(['kmd', 'init', '--home', home])).code, 0);
  const en = await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', img]);
  t.equal(en.code, 0, en.stderr);
  t.equal(mode(img), 0o600, 'kmd enroll makes the image 0600');

  chmodSync(img, 0o644);
  const r = await runQkt(['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0']);
  t.equal(r.code, 6, 'exit 6 (state on disk)');
  t.equal(r.stdout, '');
  t.equal(r.stderr, `qkt: flash image ${img} holds the device key and group or others can read it; fix: chmod 600 ${img} (or pass --allow-shared-image)\n`, 'one line naming the file and the fix');
  const rj = await runQkt(['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0', '--json']);
  t.equal(rj.code, 6);
  t.match(JSON.parse(rj.stdout), { error: { exitCode: 6, message: /chmod 600/ } });

  const term = await startQkt(['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0', '--allow-shared-image']);
  t.teardown(() => term.stop()); // by pid
  t.match(term.ready, { event: 'ready', terminalId: 'T1', enrolled: true, port: /^tcp:127\.0\.0\.1:\d+$/ });
  t.match(term.stderr(), `group or others can read ${img} (mode 0644)`, 'with the override it still warns, on stderr');
  t.equal(await term.stop(), 0, 'stops cleanly');

  chmodSync(img, 0o600);
  const ok = await startQkt(['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0']);
  t.teardown(() => ok.stop());
  t.match(ok.ready, { event: 'ready', terminalId: 'T1' });
  t.equal(ok.stderr(), '', 'no warning on a 0600 image');
  await ok.stop();

  t.match((await runQkt(['terminal', 'run', '--help'])).stdout, /--allow-shared-image/, 'the option is in the help');
});

t.test('kmd commands warn on stderr about a secret file group or others can read, and go on', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  t.equal((await runQkt(['kmd', 'init', '--home', home])).code, 0);
  const e1 = await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 't1.img'), '--json']);
  t.equal(e1.code, 0);
  t.equal(e1.stderr, '', 'no warning while every secret file is 0600');
  const rec = join(home, 'terminals', 'T1.json');
  t.equal(mode(rec), 0o600);

  chmodSync(rec, 0o644);
  const e2 = await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T2', '--flash', join(dir, 't2.img'), '--json']);
  t.equal(e2.code, 0, 'the command goes on');
  t.match(JSON.parse(e2.stdout), { terminalId: 'T2' }, 'stdout is still exactly one JSON document');
  t.equal(e2.stderr, `qkt: warning: group or others can read ${rec} (mode 0644), which holds secrets; fix: chmod 600 ${rec}\n`, 'one warning line on stderr');

  chmodSync(join(home, 'terminals', 'T2.json'), 0o640);
  const e3 = await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T3', '--flash', join(dir, 't3.img')]);
  t.equal(e3.code, 0);
  t.equal(e3.stderr, `qkt: warning: group or others can read 2 files holding secrets in ${home} (terminals/T1.json, terminals/T2.json); fix: chmod 600 each of them\n`);
  t.match(e3.stdout, /terminal T3 enrolled/);
});
