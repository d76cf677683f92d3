// A device on the port that lies in what it says rather than who it is (hostile-device.test.ts):
// terminal ids, firmware versions and refusal reasons full of escape sequences, and numbers past
// 2^53. The CLI prints the device's text with its control characters escaped (never raw to the
// engineer's terminal), refuses a reply with an out-of-range number as a protocol error (exit 4,
// one line; under --json a valid error document), and keeps --json valid JSON throughout.
// Beside it, over the same real CLI: a hostile drive's file names, a --flash in a missing folder,
// and a value a library refuses (a usage error with the right form).
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Dispatcher } from '../firmware/link/dispatch.js';
import { DeviceLink } from '../firmware/link/device-link.js';
import { LinkError, Rc } from '../firmware/link/errors.js';
import { systemGroup } from '../firmware/commands/system.js';
import { DEFAULT_LIMITS, CHUNK_OVERHEAD } from '../firmware/terminal.js';
import { listenTcp } from '../host-tools/transports/tcp.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { Exit } from '../host-tools/cli/command.js';
import { cliSkipReason, runQkt } from './e2e-rig.js';
import type { Payload } from '../firmware/link/codec.js';
import { Group, InjectCmd } from '../firmware/link/groups.js';
import { sealBatch } from '../firmware/crypto/batch.js';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { QKT_BIN } from './cli.js';

/** Control characters of every kind a terminal acts on: CSI clear, OSC title, BEL, C1 CSI, CR. */
const EVIL = '\u001b[2J\u001b]0;owned\u0007\u009b31m\r';
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

async function liar(t: Test, status: () => Payload): Promise<string> {
  const server = await listenTcp('127.0.0.1', 0, (transport) => {
    const d = new Dispatcher();
    d.register(
      systemGroup({
        params: () => ({ maxFrame: DEFAULT_LIMITS.maxBody, window: DEFAULT_LIMITS.window, maxChunk: DEFAULT_LIMITS.maxBody - CHUNK_OVERHEAD, firmware: `liar${EVIL}` }),
        status,
      }),
    );
    new DeviceLink(transport, d, DEFAULT_LIMITS);
  });
  t.teardown(() => server.close());
  return `tcp:127.0.0.1:${server.address.port}`;
}

const pool = { storedKeyBits: 0, maxKeyBits: 8388608, consumedKeyBits: 0, batches: [] };

t.test('qkt status shows a device\'s escape sequences escaped; --json keeps them as data', { skip: cliSkipReason() }, async (t) => {
  const port = await liar(t, () => ({ terminalId: `T1${EVIL}`, enrolled: true, firmware: `fw${EVIL}`, state: `odd${EVIL}`, pool }));
  const r = await runQkt(['status', '--port', port]);
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stdout, CONTROLS, 'no control character reaches the terminal');
  t.match(r.stdout, /terminal +T1\\x1b\[2J\\x1b\]0;owned\\x07\\x9b31m\\x0d/);
  t.match(r.stdout, /firmware +fw\\x1b/);
  const j = await runQkt(['status', '--port', port, '--json']);
  t.equal(j.code, 0, j.stderr);
  t.equal((JSON.parse(j.stdout) as { terminalId: string }).terminalId, `T1${EVIL}`, '--json: the exact value, as JSON');
});

t.test('a refusal reason full of escapes is printed escaped, one line, exit 4', { skip: cliSkipReason() }, async (t) => {
  const port = await liar(t, () => {
    throw new LinkError(Rc.DENIED, `no${EVIL}\nqkt: all good`);
  });
  for (const json of [false, true]) {
    const r = await runQkt(['status', '--port', port, ...(json ? ['--json'] : [])]);
    t.equal(r.code, Exit.REFUSED, r.stderr);
    t.match(r.stderr, /^qkt: terminal refused: it refused by policy \(DENIED: no\\x1b\[2J.*\\x0aqkt: all good\)\n$/);
    t.notMatch(r.stderr, CONTROLS);
    t.equal(r.stderr.split('\n').length, 2, 'one line');
    if (json) t.match(JSON.parse(r.stdout), { error: { exitCode: Exit.REFUSED, message: /^terminal refused: / } });
  }
});

t.test('a number past 2^53 in a reply is a protocol error (exit 4), not a crash, with or without --json', { skip: cliSkipReason() }, async (t) => {
  const port = await liar(t, () => ({ terminalId: 'T1', enrolled: true, firmware: 'fw', state: 'ready', pool: { ...pool, storedKeyBits: 2n ** 64n - 1n } }));
  for (const json of [false, true]) {
    const r = await runQkt(['status', '--port', port, ...(json ? ['--json'] : [])]);
    t.equal(r.code, Exit.REFUSED, `exit 4${json ? ' under --json' : ''}: ${r.stderr}`);
    t.match(r.stderr, /^qkt: the terminal sent an out-of-range number in its answer to the status request \(group 0 command 1\), field pool\.storedKeyBits; it is not a genuine qkt device or it is damaged\n$/);
    if (json) t.match(JSON.parse(r.stdout), { error: { exitCode: Exit.REFUSED } }, 'one valid JSON document');
  }
});

t.test('kmd enroll --flash in a missing folder: a clear message, exit 6, nothing created', { skip: cliSkipReason() }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  t.equal((await runQkt(['kmd', 'init', '--home', home])).code, 0);
  mkdirSync(join(dir, 'img'));
  t.equal((await runQkt(['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 'img', 't1.img')])).code, 0);
  for (const again of [[], ['--again']]) {
    const flash = join(dir, 'nodir', 'x.img');
    const r = await runQkt(['kmd', 'enroll', '--home', home, '--terminal', again.length ? 'T1' : 'T2', '--flash', flash, ...again]);
    t.equal(r.code, Exit.STATE, `${again.join(' ') || 'first enrolment'}: exit 6 (${r.stderr.trim()})`);
    t.equal(r.stderr, `qkt: --flash ${flash}: the folder ${join(dir, 'nodir')} does not exist; create it or give another path (nothing was changed)\n`);
    t.notOk(existsSync(join(dir, 'nodir')), 'no folder made');
  }
});

t.test('terminal run --create-image with --flash in a missing folder: a clear message, exit 6, nothing created', { skip: cliSkipReason() }, async (t) => {
  const dir = t.testdir({});
  const flash = join(dir, 'nodir', 'x.img');
  const r = await runQkt(['terminal', 'run', '--flash', flash, '--create-image', '--listen', 'tcp:127.0.0.1:0']);
  t.equal(r.code, Exit.STATE, r.stderr);
  t.equal(r.stderr, `qkt: --flash ${flash}: the folder ${join(dir, 'nodir')} does not exist; create it or give another path (nothing was created)\n`);
  t.notOk(existsSync(join(dir, 'nodir')), 'no folder made');
});

t.test('a carrier drive whose file names hold escape sequences: carrier status shows them escaped', { skip: cliSkipReason() }, async (t) => {
  const car = join(t.testdir({}), 'car');
  Carrier.init(car, { carrierId: 'c1', kmdId: 'k1' });
  writeFileSync(join(car, 'batches', `T1-${EVIL}.qkb`), 'junk');
  const r = await runQkt(['carrier', 'status', '--carrier', car]);
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stdout, CONTROLS);
  t.match(r.stdout, /damaged \(never offered\): 1\n {2}.*T1-\\x1b\[2J\\x1b\]0;owned\\x07\\x9b31m\\x0d\.qkb/);
});

t.test('a value a library refuses (a malformed address) is a usage error with the right form', { skip: cliSkipReason() }, async (t) => {
  const r = await runQkt(['status', '--port', 'tcp:nope']);
  t.equal(r.code, Exit.USAGE);
  t.match(r.stderr, /^qkt: address must look like tcp:HOST:PORT, got "tcp:nope"; usage: qkt status --port /);
});

t.test('qkt inject: a terminal whose inject answers are malformed is refused (exit 4, one line), no receipt stored', { skip: cliSkipReason() }, async (t) => {
  const BITS = 64 * 1024 * 8;
  const sealed = sealBatch({
    deviceKey: new Uint8Array(randomBytes(32)),
    header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'T1', seq: 1, purpose: 'any', bits: BITS, chunkSize: 4096, createdAt: 1_700_000_000_000 },
    keys: new Uint8Array(randomBytes(BITS / 8)),
  });
  const cases: Array<[string, Payload | undefined, Payload | undefined, RegExp]> = [
    ['a negative offset', { t: 1, c: -8192 }, undefined, /inject start request \(group 2 command 0\): transfer 1 at offset -8192 of \d+; it is not a genuine qkt device/],
    ['an offset past the end', { t: 1, c: 1e9 }, undefined, /inject start request .*offset 1000000000 of \d+;/],
    ['no offset at all', { t: 'x' }, undefined, /inject start request .*transfer "x" at offset undefined of \d+;/],
    ['"already accepted" with no receipt', { done: true, bits: BITS }, undefined, /inject start request .*: no receipt \(missing\);/],
    ['a commit with no receipt', { t: 1, c: 0 }, {}, /inject commit request \(group 2 command 2\): no receipt \(missing\);/],
    ['a receipt that is no receipt', { done: true, bits: BITS, receipt: new Uint8Array(40) }, undefined, /terminal T1 sent a receipt that is not one for its batch [0-9a-f]{8} \(.*truncated\); nothing was stored: it is not a genuine qkt device or it is damaged/],
  ];
  for (const [what, begin, commit, message] of cases) {
    const server = await listenTcp('127.0.0.1', 0, (transport) => {
      const d = new Dispatcher();
      d.register(
        systemGroup({
          params: () => ({ maxFrame: DEFAULT_LIMITS.maxBody, window: DEFAULT_LIMITS.window, maxChunk: DEFAULT_LIMITS.maxBody - CHUNK_OVERHEAD, firmware: 'liar' }),
          status: () => ({ terminalId: 'T1', enrolled: true, firmware: 'liar', state: 'ready', pool }),
        }),
      );
      d.register({
        id: Group.INJECT,
        name: 'inject',
        commands: {
          [InjectCmd.BEGIN]: () => begin!,
          [InjectCmd.CHUNK]: (p) => ({ c: (p['o'] as number) + (p['d'] as Uint8Array).length }),
          [InjectCmd.COMMIT]: () => commit!,
        },
      });
      new DeviceLink(transport, d, DEFAULT_LIMITS);
    });
    const car = join(t.testdir({}), 'car');
    Carrier.init(car, { carrierId: 'c1', kmdId: 'k1' }).addBatch(sealed);
    const r = await runQkt(['inject', '--carrier', car, '--port', `tcp:127.0.0.1:${server.address.port}`]);
    await server.close();
    t.equal(r.code, Exit.REFUSED, `${what}: exit 4 (${r.stderr.trim()})`);
    t.match(r.stderr.trimEnd().split('\n').at(-1), message, what);
    t.notMatch(r.stderr, /internal error|NaN/, `${what}: not a fault of qkt, no NaN`);
    t.same(readdirSync(join(car, 'receipts')), [], `${what}: no receipt stored`);
  }
});

t.test('qkt inject stopped while the terminal has not answered yet: says nothing was sent and the command to run again', { skip: cliSkipReason() }, async (t) => {
  // Accepts the connection and never answers: inject waits for the STATUS reply.
  const server = createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const BITS = 64 * 1024 * 8;
  const car = join(t.testdir({}), 'my car');
  Carrier.init(car, { carrierId: 'c1', kmdId: 'k1' }).addBatch(
    sealBatch({
      deviceKey: new Uint8Array(randomBytes(32)),
      header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'T1', seq: 1, purpose: 'any', bits: BITS, chunkSize: 4096, createdAt: 1_700_000_000_000 },
      keys: new Uint8Array(randomBytes(BITS / 8)),
    }),
  );
  const port = `tcp:127.0.0.1:${(server.address() as { port: number }).port}`;
  const child = spawn(process.execPath, [QKT_BIN, 'inject', '--carrier', car, '--port', port], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await new Promise((r) => setTimeout(r, 1200)); // started, connected, waiting for STATUS
  child.kill('SIGINT');
  t.equal(await exited, 130, err);
  t.equal(err, `qkt: stopped before anything was sent to the terminal; run the same command again: qkt inject --carrier '${car}' --port ${port}\n`);
});
