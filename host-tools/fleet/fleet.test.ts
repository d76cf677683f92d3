// A fleet in one process (fleet.ts): a dozen emulated modules on compact images, enrolled, loaded
// through a carrier and collected, each sending its class's traffic to one station; every class
// of the default mix present, every message opened, both sides' key accounts equal.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { KeyPool } from '../../firmware/keypool/key-pool.js';
import { POOL_OPTIONS } from '../../firmware/secure/enroll.js';
import { SECURE_SECTORS } from '../../firmware/secure/secure-area.js';
import { InputError } from '../input-error.js';
import { compactGeometry } from './image.js';
import { assignClasses, bitsFor, CLASS_IDS, parseMix, runFleet } from './fleet.js';
import { CLASSES, otpKeyBitsPerSecond } from '../station/traffic.js';

t.test('the compact image is the smallest that takes its batch', async (t) => {
  const g = compactGeometry(131_072);
  t.same({ size: g.size, sectorSize: g.sectorSize }, { size: 20 * 4096, sectorSize: 4096 }, '128 kbit: 20 sectors of 4 KiB');
  const opts = { ...POOL_OPTIONS, maxKeyBits: g.maxKeyBits };
  const pool = KeyPool.format(NorFlash.memory(g), opts);
  t.equal(pool.status().maxKeyBits, 131_072);
  // The pool takes a whole batch of that size.
  const s = pool.stage({ batchId: 1, seq: 1, purpose: 'any', bits: 131_072 });
  s.write(0, new Uint8Array(16_384).fill(7));
  s.commit();
  t.equal(pool.status().storedKeyBits, 131_072, 'a whole batch stored');
  t.throws(() => KeyPool.format(NorFlash.memory({ ...g, size: g.size - g.sectorSize }), opts), { code: 'GEOMETRY_MISMATCH' }, 'one sector fewer is refused');
  t.ok(compactGeometry(3 * 2 ** 20).size < 2 * 2 ** 20, '3 Mbit still fits below the 2 MiB chip');
  t.ok(g.size / g.sectorSize > SECURE_SECTORS + 8);
});

t.test('the mix: parsed strictly, dealt in proportion, seeded', async (t) => {
  t.same(parseMix('A:1,B:1,C:1,D:1,E:1'), { A: 1, B: 1, C: 1, D: 1, E: 1 });
  t.same(parseMix('E:3, A:1'), { A: 1, B: 0, C: 0, D: 0, E: 3 });
  for (const bad of ['', 'A', 'A:x', 'F:1', 'A:1,A:2', 'A:0,B:0', 'a:1', 'A:-1', 'A:99999999']) t.throws(() => parseMix(bad), InputError, JSON.stringify(bad));
  const even = assignClasses(10, parseMix('A:1,B:1,C:1,D:1,E:1'), 1);
  t.same(CLASS_IDS.map((c) => even.filter((x) => x === c).length), [2, 2, 2, 2, 2], '10 terminals: 2 of each class');
  t.same(assignClasses(10, parseMix('A:1,B:1,C:1,D:1,E:1'), 1), even, 'the same seed, the same deal');
  const skew = assignClasses(7, parseMix('A:3,E:1'), 5);
  t.same([skew.filter((x) => x === 'A').length, skew.filter((x) => x === 'E').length], [5, 2], 'largest remainder: 5.25 and 1.75 make 5 and 2');
});

t.test('a dozen terminals: every class, every message opened, the keys agree', async (t) => {
  const r = await runFleet({ terminals: 12, seconds: 2, tMs: 20_000, seed: 3, station: 'inline' });
  t.equal(r.terminals, 12);
  t.same(r.classes.map((c) => c.class), ['A', 'B', 'C', 'D', 'E'], 'every class of the default mix present');
  t.equal(r.classes.reduce((s, c) => s + c.terminals, 0), 12);
  t.ok(r.overall.messages > 100, `${r.overall.messages} messages`);
  t.equal(r.overall.delivered + r.overall.late, r.overall.messages, 'every message opened');
  t.equal(r.overall.failed, 0);
  t.same(r.failures, {});
  t.equal(r.keysAgree, true, 'module and station consumed the same key bits, terminal by terminal');
  t.equal(r.keyMismatches, 0);
  t.ok(r.overall.accessDelayMs && r.overall.accessDelayMs.p99 >= r.overall.accessDelayMs.median);
  t.ok(r.overall.keyBitsPerSecondPerTerminal > 0 && r.overall.cipherBitsPerSecondPerTerminal > 0);
  t.ok(r.rss.perTerminalBytes > 0 && r.rss.afterSetupBytes > 0, `RSS ${r.rss.perTerminalBytes} bytes a terminal`);
  t.ok(r.setupSeconds > 0);
  t.same(r.images, { where: 'memory', bytes: 20 * 4096, sectors: 20, sectorSize: 4096 });
  t.equal(r.home, undefined);
  t.notOk(JSON.stringify(r).match(/[0-9a-f]{64}/), 'no key material in the result');
});

t.test('--home keeps everything, images as files; a folder holding something is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-fleet-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const home = join(dir, 'fleet');
  const r = await runFleet({ terminals: 2, seconds: 0.5, tMs: 6_000, home, mix: parseMix('D:1'), station: 'inline' });
  t.equal(r.home, home);
  t.equal(r.images.where, 'files');
  t.same(readdirSync(join(home, 'images')).filter((f) => f.endsWith('.img')).sort(), ['T00001.img', 'T00002.img']);
  t.equal(statSync(join(home, 'images', 'T00001.img')).size, 20 * 4096);
  t.equal(r.keysAgree, true);
  await t.rejects(runFleet({ terminals: 1, seconds: 0.5, home }), InputError, 'not empty');
  await t.rejects(runFleet({ terminals: 0, seconds: 1 }), InputError);
  await t.rejects(runFleet({ terminals: 1, seconds: 30, bits: 131_072 }), /--bits 128 kbit lasts class A about \d+ s/, 'a batch too small for the run is refused before anything is set up');
});

t.test('the batch: 128 kbit, or what the run needs', async (t) => {
  const even = parseMix('A:1,B:1,C:1,D:1,E:1');
  t.equal(bitsFor({ seconds: 5, tMs: 60_000, mix: even }), 131_072, 'a short run: 128 kbit');
  const b = bitsFor({ seconds: 30, tMs: 60_000, mix: even });
  t.ok(b >= 1.25 * 30 * otpKeyBitsPerSecond(CLASSES.A) && b % 65_536 === 0, `30 s of class A: ${b} bits`);
  t.equal(bitsFor({ seconds: 30, tMs: 60_000, mix: parseMix('E:1') }) < b, true, 'an E-only fleet needs less');
});
