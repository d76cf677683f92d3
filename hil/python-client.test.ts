// Proves docs/protocol.md is enough to write a client from: a stdlib-only Python client
// (fixtures/client-py/qkt_client.py) talks to the emulated module over TCP.
import t from 'tap';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createTerminal } from '../firmware/terminal.js';
import { listenTcp } from '../host-tools/transports/tcp.js';
import { Rc } from '../firmware/link/errors.js';
import { pythonSkipReason } from './python.js';

const run = promisify(execFile);
const client = fileURLToPath(new URL('../fixtures/client-py/qkt_client.py', import.meta.url));
const frames = fileURLToPath(new URL('../fixtures/frames/frames.json', import.meta.url));
// Skips only outside CI: under CI=true a missing python3 fails the test.
const skip = pythonSkipReason();

/** "STEP {json}" lines -> map of step -> parsed value. */
function steps(stdout: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const line of stdout.split('\n')) {
    const m = /^([A-Z_]+)(?: (.*))?$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2] === undefined ? true : (JSON.parse(m[2]) as unknown));
  }
  return out;
}

t.test('the Python client reproduces every frozen frame byte for byte', { skip }, async (t) => {
  const { stdout } = await run('python3', [client, '--self-test', frames], { timeout: 30_000 });
  t.notMatch(stdout, /BAD/);
  t.equal(stdout.match(/^FRAME ok /gm)?.length, 6, 'all six frames');
  t.match(stdout, /^DONE$/m);
});

t.test('the Python client negotiates, asks status, echoes and transfers over TCP', { skip }, async (t) => {
  const terminal = createTerminal({});
  const listener = await listenTcp('127.0.0.1', 0, (transport) => terminal.attach(transport));
  t.teardown(() => listener.close());

  const { stdout } = await run('python3', [client, '127.0.0.1', String(listener.address.port)], { timeout: 60_000 });
  const s = steps(stdout);
  t.ok(s.has('DONE'), `client finished (output: ${stdout.trim().split('\n').pop()})`);

  const params = s.get('PARAMS') as Record<string, unknown>;
  t.same(params['versions'], [1]);
  t.equal(params['maxFrame'], terminal.link.limits.maxBody);
  t.equal(params['window'], terminal.link.limits.window);
  t.type(params['maxChunk'], 'number');

  t.match(s.get('STATUS'), { enrolled: false, terminalId: null, pool: { storedKeyBits: Number, maxKeyBits: Number } });
  t.same(s.get('ECHO'), { bytes: 522, same: true });
  t.match(s.get('TOO_LARGE'), { rc: Rc.TOO_LARGE });

  const retry = s.get('RETRY') as { first: unknown; again: unknown };
  t.same(retry.first, retry.again, 'a retry gets the same answer');

  const bulk = s.get('BULK') as { bytes: number; crc: number };
  t.equal(bulk.bytes, 3 * (params['maxChunk'] as number) + 1000);
  t.type(bulk.crc, 'number', 'the client checked the device CRC against its own data');

  const link = s.get('LINK') as Record<string, number>;
  t.equal(link['corrupt'], 0, 'no corrupt frames');
  t.equal(link['busy'], 0, 'never overran the window');
  t.ok(link['duplicates']! >= 1, 'the retry was counted as a duplicate, not executed twice');
  t.equal(terminal.link.stats.duplicates, link['duplicates'], 'the device agrees');
});
