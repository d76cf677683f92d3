// The station store's generation token (pool.gen): a process killed in the middle of an operation,
// after its flash writes and before the token it writes after them, still leaves a new token, so
// another store that has the pool mounted (a running `station run`) remounts instead of serving,
// and later writing over, its stale image. The writer is a real process (the built module) that
// SIGKILLs itself.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { poolBatchId } from '../../firmware/commands/inject.js';
import { StationStore } from './store.js';
import { assertFreshBuild } from '../../hil/build-check.js';

const BUILT = fileURLToPath(new URL('../../dist/host-tools/station/store.js', import.meta.url));
// The child imports the built module: a missing or stale build fails here, never skips.
assertFreshBuild();

const meta = (n: number) => ({ batchId: new Uint8Array(16).fill(n), seq: n, purpose: 'enc' as const, bits: 8192 });

t.test('a writer SIGKILLed between its writes and its last token: another store remounts', async (t) => {
  const dir = join(t.testdir({}), 'station');
  const running = new StationStore(dir);
  t.teardown(() => running.close());
  running.addBatch('T1', meta(1), new Uint8Array(1024).fill(1));
  t.equal(running.status('T1').staging, null, 'mounted, nothing staged');
  const gen = readFileSync(join(dir, 'T1', 'pool.gen'), 'utf8');

  // The child reserves batch 2 (the staging goes to flash) and dies where it would name it in
  // state.json, before the token written after the operation.
  const script = join(dir, '..', 'child.mjs');
  writeFileSync(
    script,
    `import { StationStore } from ${JSON.stringify(pathToFileURL(BUILT).href)};
const s = new StationStore(${JSON.stringify(dir)});
s.saveState = () => process.kill(process.pid, 'SIGKILL');
s.reserve('T1', { batchId: new Uint8Array(16).fill(2), seq: 2, purpose: 'enc', bits: 8192 });
console.log('not killed');\n`,
  );
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const end = await new Promise<string | number>((r) => child.on('exit', (code, sig) => r(sig ?? code ?? -1)));
  t.equal(end, 'SIGKILL', `the writer died mid-operation ${out}`);
  t.ok(existsSync(join(dir, 'T1', 'pool.img.lock')), 'leaving its lock');
  t.not(readFileSync(join(dir, 'T1', 'pool.gen'), 'utf8'), gen, 'and a token the running store has not seen');

  const st = running.status('T1');
  t.equal(st.staging?.batchId, poolBatchId(meta(2).batchId), 'the running store remounted: it sees the dead writer\'s reservation');
  // Its next operation builds on the image as the dead writer left it (the reservation is dropped
  // as an unfinished export's), never on its stale copy.
  running.addBatch('T1', meta(3), new Uint8Array(1024).fill(3));
  const fresh = new StationStore(dir);
  t.teardown(() => fresh.close());
  const s = fresh.status('T1');
  t.equal(s.staging, null, 'no reservation left');
  t.same(s.inactive.sort(), [Buffer.from(meta(1).batchId).toString('hex'), Buffer.from(meta(3).batchId).toString('hex')].sort(), 'batches 1 and 3, consistent image and names');
});

t.test('terminalsPage: pages in id order at a stat a row, only folders with a pool, and it sees a terminal added between pages', async (t) => {
  const dir = t.testdir({});
  const store = new StationStore(dir);
  t.teardown(() => store.close());
  const make = (id: string, pool = true) => {
    mkdirSync(join(dir, id), { recursive: true });
    if (pool) writeFileSync(join(dir, id, 'pool.img'), '');
  };
  for (let i = 0; i < 40; i++) make(`T${String(i).padStart(3, '0')}`);
  make('T005x', false); // a folder with no pool: no terminal
  make('not an id', true); // not a terminal id (a space)
  const all: string[] = [];
  let after: string | undefined;
  for (let pages = 0; pages < 10; pages++) {
    const p = store.terminalsPage(after, 16);
    all.push(...p.ids);
    if (!p.more) break;
    after = p.ids[p.ids.length - 1];
    if (pages === 0) make('T0155'); // added between the first and second page: it sorts after T015
  }
  t.same(all, [...store.terminals()], 'the same terminals as a full listing, in order');
  t.ok(all.includes('T0155') && !all.includes('T005x'), 'the one added between pages is there; a folder without a pool is not');
  t.same(store.terminalsPage('T039', 16), { ids: [], more: false }, 'past the end');
  t.same(store.terminalsPage(undefined, 3), { ids: ['T000', 'T001', 'T002'], more: true });
  t.equal(store.hasTerminal('T001'), true);
  t.equal(store.hasTerminal('T005x'), false);
  t.equal(store.hasTerminal('../T001'), false);
});
