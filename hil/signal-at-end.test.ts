// A SIGINT that lands while a command does its last synchronous work (here `carrier load` under
// the KMD home's lock) is dispatched after the command finished and printed its result. It must
// not then kill the process by the default action (a shell saw exit 130 after "added", and a
// script that trusts the exit code loads a second batch): the exit code is the command's own.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { QKT_BIN } from './cli.js';
import { cliSkipReason, qktJson } from './e2e-rig.js';
import { assertFreshBuild } from './build-check.js';

t.setTimeout(120_000);

t.test('a signal during the last synchronous work: the result and exit 0, or stopped with 130; never killed after the result', { skip: cliSkipReason() }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s', '--stock', '100Mbit']);
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 't1.img')]);
  assertFreshBuild();
  let killedAfterResult = 0;
  for (let i = 0; i < 8; i++) {
    const child = spawn(process.execPath, [QKT_BIN, 'carrier', 'load', '--home', home, '--carrier', join(dir, 'car'), '--terminal', 'T1', '--bits', '512kbit', '--init'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
    // The home's lock is held for the whole (synchronous) load: signal the moment it appears.
    const lock = join(home, 'kmd.lock');
    for (let n = 0; !existsSync(lock) && n < 200_000; n++) await new Promise((r) => setImmediate(r));
    child.kill('SIGINT');
    const { code, signal } = await exited;
    const added = /sealed \(batch [0-9a-f]{8}, seq \d+\) added/.test(out);
    if (added && (signal !== null || code !== 0)) killedAfterResult++;
    t.ok(added ? code === 0 && signal === null : code === 130, `run ${i + 1}: ${added ? 'added' : 'stopped'}, exit ${code ?? signal}`);
  }
  t.equal(killedAfterResult, 0, 'never a failure exit after the result was printed');
});
