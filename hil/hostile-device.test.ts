// A device on the port that lies about who it is: its STATUS names a terminal id such as `../x`
// (or an empty, 200-char, NUL-bearing or dots-only one). `qkt inject` and `qkt zeroize` refuse it
// with a clear error before any file is touched: the folder tree (carrier, tokens, files planted
// where a traversal would land) is byte-identical before and after, and no ADMIN command is sent.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, lstatSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Dispatcher } from '../firmware/link/dispatch.js';
import { DeviceLink } from '../firmware/link/device-link.js';
import { AdminCmd, Group } from '../firmware/link/groups.js';
import { systemGroup } from '../firmware/commands/system.js';
import { DEFAULT_LIMITS, CHUNK_OVERHEAD } from '../firmware/terminal.js';
import { listenTcp } from '../host-tools/transports/tcp.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { Exit } from '../host-tools/cli/command.js';
import { cliSkipReason, runQkt } from './e2e-rig.js';

/** Every file and folder under `dir` with a digest of its bytes. */
function tree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) out.push(`${prefix}${name}/`, ...tree(p, `${prefix}${name}/`));
    else out.push(`${prefix}${name} ${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`);
  }
  return out;
}

const HOSTILE = ['../x', '../../victim', '..', '.', '', 'x'.repeat(200), 'T\u00001', 'T1/../../victim'];

t.test('a module reporting a hostile terminal id is refused before any file is touched', { skip: cliSkipReason() }, async (t) => {
  const dir = t.testdir({});
  let id = '';
  let adminCalls = 0;
  const server = await listenTcp('127.0.0.1', 0, (transport) => {
    const d = new Dispatcher();
    d.register(
      systemGroup({
        params: () => ({ maxFrame: DEFAULT_LIMITS.maxBody, window: DEFAULT_LIMITS.window, maxChunk: DEFAULT_LIMITS.maxBody - CHUNK_OVERHEAD, firmware: 'liar 1.0' }),
        status: () => ({ terminalId: id, firmware: 'liar 1.0', state: 'ready', pool: { storedKeyBits: 0, maxKeyBits: 0, consumedKeyBits: 0, batches: [] } }),
      }),
    );
    // Answers every admin command "done": were a token read and sent, the CLI would go on to delete it.
    d.register({ id: Group.ADMIN, name: 'admin', commands: { [AdminCmd.ZEROIZE]: () => (adminCalls++, { zeroized: true }), [AdminCmd.FACTORY_RESET]: () => (adminCalls++, { reset: true }) } });
    new DeviceLink(transport, d, DEFAULT_LIMITS);
  });
  t.teardown(() => server.close());
  const port = `tcp:127.0.0.1:${server.address.port}`;

  const car = join(dir, 'car');
  Carrier.init(car, { carrierId: 'car1', kmdId: 'kmd-1' });
  mkdirSync(join(car, 'tokens'));
  writeFileSync(join(car, 'tokens', 'T1-zeroize.qkt'), 'a real token');
  // Where `tokens/<id>-zeroize.qkt` lands for `../x` and `../../victim`.
  writeFileSync(join(car, 'x-zeroize.qkt'), 'not a token of this carrier');
  writeFileSync(join(dir, 'victim-zeroize.qkt'), 'a file outside the carrier');
  const before = tree(dir);

  for (const bad of HOSTILE) {
    id = bad;
    for (const args of [['inject', '--carrier', car, '--port', port], ['zeroize', '--carrier', car, '--port', port]]) {
      const r = await runQkt(args);
      t.equal(r.code, Exit.REFUSED, `${args[0]} with ${JSON.stringify(bad).slice(0, 20)}: exit ${Exit.REFUSED}`);
      t.match(r.stderr, /reports a malformed terminal id .*; refusing to use it/, `${args[0]}: a clear reason`);
      t.equal(r.stderr.trim().split('\n').length, 1, `${args[0]}: one line`);
      t.same(tree(dir), before, `${args[0]} with ${JSON.stringify(bad).slice(0, 20)}: nothing touched`);
    }
  }
  t.equal(adminCalls, 0, 'no token was ever sent');

  // The same rig with an honest id: zeroize runs, so the refusals above were about the id.
  id = 'T1';
  const ok = await runQkt(['zeroize', '--carrier', car, '--port', port, '--json']);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(adminCalls, 1);
  t.same(readdirSync(join(car, 'tokens')), [], 'the spent token is removed');
  t.same(readFileSync(join(dir, 'victim-zeroize.qkt'), 'utf8'), 'a file outside the carrier');
});
