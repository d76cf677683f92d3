// Unit tests for the SAE key store: limits, persistence across restarts, and rollback when the
// store file cannot be written (the HTTP behaviour is covered by etsi014.test.ts).
import t from 'tap';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isSaeId, KeyDeliveryError, SaeStore } from './sae-store.js';
import { FixedRateSupply } from './supply.js';

function caught(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

function supplyIn(dir: string, rate = 1_000_000): FixedRateSupply {
  const p = join(dir, 'supply.json');
  FixedRateSupply.create(p, { rateBitsPerSecond: rate, startedAtMs: 0 });
  return new FixedRateSupply(p, () => 1000);
}

t.test('limits and options are validated once, at construction', async (t) => {
  const dir = t.testdir();
  const supply = supplyIn(dir, 1000);
  const path = join(dir, 'k.json');
  t.throws(() => new SaeStore({ path, supply, limits: { keySize: 100 } }), RangeError);
  t.throws(() => new SaeStore({ path, supply, limits: { minKeySize: 512 } }), RangeError);
  t.throws(() => new SaeStore({ path, supply, limits: { maxKeySize: 0 } }), RangeError);
  t.throws(() => new SaeStore({ path, supply, limits: { maxKeyPerRequest: 0 } }), RangeError);
  t.throws(() => new SaeStore({ path, supply, limits: { maxKeyPerRequest: 1.5 } }), RangeError);
  t.throws(() => new SaeStore({ path, supply, capacityBits: -1 }), RangeError);
  const s = new SaeStore({ path, supply, limits: { keySize: 128, maxKeyPerRequest: 4 }, capacityBits: 1024 });
  t.same(s.status('A', 'B'), { key_size: 128, stored_key_count: 7, max_key_count: 8, max_key_per_request: 4, max_key_size: 1024, min_key_size: 64, max_SAE_ID_count: 0 });
  t.match(caught(() => s.status('a/b', 'B')), { name: 'KeyDeliveryError', status: 401 });
  t.match(caught(() => s.status('A', '..')), { status: 400 });
  t.match(caught(() => s.issue('A', 'B', { number: 5 })), { status: 400 });
  t.match(caught(() => s.deliver('B', 'A', ['x'])), { status: 400, message: 'one or more keys specified are not found on KME' });
  t.ok(isSaeId('a.b-c_D9') && !isSaeId('.') && !isSaeId(7) && !isSaeId(''));
});

t.test('knownSae: unknown caller 401, unknown peer 400', async (t) => {
  const dir = t.testdir();
  const s = new SaeStore({ path: join(dir, 'k.json'), supply: supplyIn(dir), knownSae: (id) => id === 'A' || id === 'B' });
  t.equal(s.issue('A', 'B').length, 1);
  t.match(caught(() => s.issue('X', 'B')), { status: 401 });
  t.match(caught(() => s.issue('A', 'X')), { status: 400, message: 'unknown SAE ID: X' });
});

t.test('a failed write issues nothing and delivers nothing', async (t) => {
  const dir = t.testdir();
  mkdirSync(join(dir, 'home'));
  const path = join(dir, 'home', 'sae-keys.json');
  const supply = supplyIn(dir);
  const s = new SaeStore({ path, supply });
  const [k] = s.issue('A', 'B');
  renameSync(join(dir, 'home'), join(dir, 'gone')); // the store file can no longer be written
  const before = supply.availableBits();
  t.throws(() => s.issue('A', 'B'), /ENOENT/);
  t.equal(s.pendingCount(), 1, 'the failed issue left no key behind');
  t.ok(supply.availableBits() < before, 'its supply bits stay spent: never handed out twice');
  t.throws(() => s.deliver('B', 'A', [k!.keyId]), /ENOENT/);
  t.equal(s.pendingCount('A', 'B'), 1, 'still pending after a failed delivery');
  renameSync(join(dir, 'gone'), join(dir, 'home'));
  t.same(s.deliver('B', 'A', [k!.keyId]), [k], 'delivered once the file is writable again');
  t.equal(s.pendingCount(), 0);
});

t.test('the store file is checked when loaded', async (t) => {
  const dir = t.testdir();
  const supply = supplyIn(dir);
  const path = join(dir, 'k.json');
  writeFileSync(path, JSON.stringify({ version: 2, pending: [] }));
  t.throws(() => new SaeStore({ path, supply }), /not a version 1 SAE key store/);
  writeFileSync(path, JSON.stringify({ version: 1, pending: [{ keyId: '../x', key: '' }] }));
  t.throws(() => new SaeStore({ path, supply }), /bad key_ID/);
  t.ok(new KeyDeliveryError(503, 'x') instanceof Error);
});
