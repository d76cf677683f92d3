// The SQL station store (SQLite and PostgreSQL) under a SIGKILL mid-load: a child process takes
// keys as fast as its groups commit and prints each key's offset once its group committed (its
// answer); it is killed mid-way. Every key it answered is used for good after the kill, the
// frontier is past the last one, and the store serves on from there.
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { KEY_CHUNK, SqlStationStore } from '../host-tools/station/sql-store.js';
import { pgSkipReason, tempDatabase } from '../host-tools/test-support/pg.js';
import { assertFreshBuild } from './build-check.js';

const batchId = (n: number) => new Uint8Array(16).fill(n);
const keysOf = (n: number, bytes: number) => Uint8Array.from({ length: bytes }, (_, i) => (n * 37 + i * 7 + (i >> 8)) & 0xff);
const meta = (n: number, bytes = 4 * KEY_CHUNK) => ({ batchId: batchId(n), seq: n, purpose: 'enc' as const, bits: bytes * 8 });

for (const kind of ['sqlite', 'postgres'] as const) {
  const skip = kind === 'postgres' ? pgSkipReason() : false;
  function sqlStore(kind: 'sqlite' | 'postgres', dir: string): { open: () => SqlStationStore; url?: string } {
    if (kind === 'sqlite') return { open: () => new SqlStationStore(dir, { create: true }) };
    const db = tempDatabase();
    t.teardown(() => db.drop());
    return { open: () => new SqlStationStore(dir, { url: db.url }), url: db.url };
  }
  t.test(`a ${kind} station store killed (SIGKILL) mid-load: every answered take is durable, nothing is served twice`, { skip }, async (t) => {
    assertFreshBuild();
    const BUILT = pathToFileURL(fileURLToPath(new URL('../dist/host-tools/station/sql-store.js', import.meta.url))).href;
    const dir = join(t.testdir({}), 'st');
    const store = sqlStore(kind, dir);
    const s = store.open();
    s.addBatch('T1', meta(1, 64 * KEY_CHUNK), keysOf(1, 64 * KEY_CHUNK));
    s.activate('T1', Buffer.from(batchId(1)).toString('hex'), 'receipt');
    s.close();
    const script = join(dir, '..', 'child.mjs');
    // The child takes 16-byte keys as fast as it can, in groups of up to 8 per turn, and prints
    // each key's offset once its group committed (an answer); the parent kills it mid-way.
    writeFileSync(
      script,
      `import { SqlStationStore } from ${JSON.stringify(BUILT)};
  const s = new SqlStationStore(${JSON.stringify(dir)}, ${JSON.stringify(store.url ? { url: store.url } : {})});
  const id = new Uint8Array(16).fill(1);
  let off = 0;
  for (;;) {
    const batch = [];
    for (let i = 0; i < 8 && off < 60 * 1024 * 8; i++, off += 128) { const o = off; batch.push(s.grouped(() => s.takeById('T1', id, o, 16)).then(() => o)); }
    if (batch.length === 0) break;
    for (const o of await Promise.all(batch)) process.stdout.write(o + '\\n');
  }
  `,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let killed = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (!killed && out.split('\n').length > 300) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    const end = await new Promise<string | number>((r) => child.on('exit', (code, sig) => r(sig ?? code ?? -1)));
    t.equal(end, 'SIGKILL', 'killed mid-load');
    const answered = out.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
    t.ok(answered.length >= 300, `${answered.length} keys answered before the kill`);
    const after = store.open();
    t.teardown(() => after.close());
    const refused = answered.filter((o) => {
      try {
        after.peekById('T1', batchId(1), o, 16);
        return false;
      } catch (e) {
        return (e as { code?: string }).code === 'ALREADY_CONSUMED';
      }
    });
    t.equal(refused.length, answered.length, 'every key answered before the kill is used for good');
    const st = after.status('T1');
    t.ok(st.consumedKeyBits >= (Math.max(...answered) + 128), 'the frontier is past the last answered key');
    const next = await after.grouped(() => after.takeById('T1', batchId(1), st.consumedKeyBits, 16));
    t.equal(next.keyId.bitOffset, st.consumedKeyBits, 'and the store serves on from there');
  });
}
