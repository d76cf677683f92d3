// The NOR contract of block-device.ts, asserted on the emulator: erase, program, strictness,
// alignment, endurance, bad sectors, torn operations, power-cut state, file persistence.

import t from 'tap';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from './nor-flash.js';
import { FlashError, PowerCutError } from './errors.js';
import { DEFAULT_GEOMETRY, checkGeometry } from './block-device.js';

const small = { size: 8 * 1024, sectorSize: 1024, pageSize: 64 };

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    if (e instanceof FlashError) return e.code;
    if (e instanceof PowerCutError) return 'POWER';
    throw e;
  }
  return 'OK';
};

t.test('geometry defaults and checks', async (t) => {
  t.same(checkGeometry(), DEFAULT_GEOMETRY);
  t.equal(NorFlash.memory().geometry.size, 2 * 1024 * 1024);
  t.throws(() => checkGeometry({ sectorSize: 1000, pageSize: 256 }), RangeError);
  t.throws(() => checkGeometry({ size: 5000, sectorSize: 4096 }), RangeError);
});

t.test('blank device reads 0xFF; erase sets 0xFF', async (t) => {
  const f = NorFlash.memory(small);
  t.ok(f.read(0, small.size).every((b) => b === 0xff));
  f.program(1024 + 10, Uint8Array.of(0x00, 0x12));
  t.same([...f.read(1024 + 10, 2)], [0x00, 0x12]);
  f.erase(1);
  t.ok(f.read(1024, 1024).every((b) => b === 0xff));
  t.equal(f.eraseCount(1), 1);
  t.equal(f.eraseCount(0), 0);
});

t.test('program only clears bits; strict mode refuses setting one and changes nothing', async (t) => {
  const f = NorFlash.memory(small);
  f.program(0, Uint8Array.of(0b1010_1010));
  f.program(0, Uint8Array.of(0b1000_1000)); // clears more bits: fine
  t.equal(f.read(0, 1)[0], 0b1000_1000);
  f.program(0, Uint8Array.of(0b1000_1000)); // same bytes again: fine
  t.equal(code(() => f.program(0, Uint8Array.of(0b1100_1000))), 'NOT_ERASED');
  t.equal(f.read(0, 1)[0], 0b1000_1000, 'refused program left the cell unchanged');
  f.program(0, Uint8Array.of(0)); // zeroize over anything: fine
  t.equal(f.read(0, 1)[0], 0);

  const loose = NorFlash.memory(small, { strict: false });
  loose.program(0, Uint8Array.of(0x0f));
  loose.program(0, Uint8Array.of(0xf3)); // silicon ANDs
  t.equal(loose.read(0, 1)[0], 0x03);
});

t.test('alignment and range', async (t) => {
  const f = NorFlash.memory(small);
  t.equal(code(() => f.program(60, new Uint8Array(8))), 'ALIGNMENT', 'crosses a page boundary');
  t.equal(code(() => f.program(64, new Uint8Array(0))), 'ALIGNMENT', 'empty');
  t.equal(code(() => f.program(64, new Uint8Array(64).fill(0))), 'OK', 'a whole page');
  t.equal(code(() => f.program(130, new Uint8Array(3).fill(0))), 'OK', 'inside a page, unaligned start');
  t.equal(code(() => f.read(small.size - 1, 2)), 'OUT_OF_RANGE');
  t.equal(code(() => f.program(small.size, Uint8Array.of(0))), 'OUT_OF_RANGE');
  t.equal(code(() => f.erase(8)), 'OUT_OF_RANGE');
  t.equal(code(() => f.erase(-1)), 'OUT_OF_RANGE');
});

t.test('endurance: the erase past the limit fails and the sector stays bad', async (t) => {
  const f = NorFlash.memory(small, { endurance: 3 });
  f.erase(2);
  f.erase(2);
  f.erase(2);
  t.equal(code(() => f.erase(2)), 'WORN_OUT');
  t.equal(f.sectorHealth(2), 'worn');
  t.equal(code(() => f.program(2 * 1024, Uint8Array.of(0))), 'WORN_OUT');
  t.equal(code(() => f.erase(3)), 'OK', 'other sectors unaffected');
  f.markBad(4);
  t.equal(code(() => f.erase(4)), 'BAD_SECTOR');
  t.equal(code(() => f.program(4 * 1024, Uint8Array.of(0))), 'BAD_SECTOR');
  t.equal(f.read(4 * 1024, 1).length, 1, 'bad sectors still read');
});

t.test('power cut: clean, after, and every later operation fails until reboot', async (t) => {
  const f = NorFlash.memory(small);
  f.faults.cutAfter(2, 'clean');
  f.program(0, Uint8Array.of(0x11));
  t.equal(code(() => f.program(1, Uint8Array.of(0x22))), 'POWER');
  t.equal(code(() => f.read(0, 1)), 'POWER');
  t.equal(code(() => f.erase(1)), 'POWER');
  t.equal(code(() => f.sync()), 'POWER');
  f.reboot();
  t.same([...f.read(0, 2)], [0x11, 0xff], 'clean cut: the cut program did not land');

  f.faults.cutAfter(1, 'after');
  t.equal(code(() => f.erase(0)), 'POWER');
  f.reboot();
  t.same([...f.read(0, 2)], [0xff, 0xff], 'after: the cut erase landed');
  t.equal(f.faults.mutations, 3);
});

t.test('torn program: only a subset of the intended bit clears lands, and really a strict subset sometimes', async (t) => {
  let partial = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const f = NorFlash.memory(small);
    f.program(64, new Uint8Array(64).fill(0xf0));
    const data = new Uint8Array(64);
    for (let i = 0; i < 64; i++) data[i] = (i * 37) & 0xf0;
    f.faults.cutAfter(1, 'torn', seed);
    t.equal(code(() => f.program(64, data)), 'POWER');
    f.reboot();
    const got = f.read(64, 64);
    let same = true;
    for (let i = 0; i < 64; i++) {
      const target = 0xf0 & data[i]!;
      if ((got[i]! & ~0xf0) !== 0) t.fail('torn program set a bit');
      if ((target & ~got[i]!) !== 0) t.fail('torn program cleared a bit it should not');
      if (got[i] !== target) same = false;
    }
    if (!same) partial++;
    // completing it with the same bytes is always allowed (resume after a torn write)
    f.program(64, data);
    t.same(f.read(64, 64), Uint8Array.from(data, (b) => b & 0xf0));
  }
  t.ok(partial > 150, `most torn programs are partial (${partial}/200)`);
});

t.test('torn erase leaves a mix of old data and 0xFF', async (t) => {
  let mixed = 0;
  for (let seed = 1; seed <= 100; seed++) {
    const f = NorFlash.memory(small);
    f.program(1024, new Uint8Array(64).fill(0));
    f.faults.cutAfter(1, 'torn', seed);
    t.equal(code(() => f.erase(1)), 'POWER');
    f.reboot();
    const page = f.read(1024, 64);
    const ff = page.filter((b) => b === 0xff).length;
    if (ff > 0 && ff < 64) mixed++;
    t.equal(f.eraseCount(1), 1, 'a cut erase still wears the sector');
  }
  t.ok(mixed > 30, `torn erases are mixed (${mixed}/100)`);
});

t.test('bit flips: stored and on read', async (t) => {
  const f = NorFlash.memory(small);
  f.program(5, Uint8Array.of(0x00));
  f.flipStoredBit(5, 3);
  t.equal(f.read(5, 1)[0], 0x08);
  f.faults.flipOnRead(5, 0, 1);
  t.equal(f.read(0, 8)[5], 0x09, 'flipped once on read');
  t.equal(f.read(5, 1)[0], 0x08, 'then back to stored value');
});

t.test('stats count operations and bytes', async (t) => {
  const f = NorFlash.memory(small);
  f.read(0, 10);
  f.program(0, new Uint8Array(4).fill(0));
  f.erase(0);
  f.sync();
  t.same(f.stats, { reads: 1, readBytes: 10, programs: 1, programBytes: 4, erases: 1, syncs: 1 });
});

t.test('file image: created blank, persists across reopen, wear sidecar persists', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-flash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flash.img');
  const f = NorFlash.open(path, small, { endurance: 5 });
  t.equal(statSync(path).size, small.size);
  f.program(2048, Uint8Array.of(1, 2, 3));
  f.erase(3);
  f.erase(4);
  f.erase(4);
  f.markBad(6);
  f.sync();
  f.close();
  const g = NorFlash.open(path, small, { endurance: 5 });
  t.same([...g.read(2048, 4)], [1, 2, 3, 0xff]);
  t.equal(g.eraseCount(4), 2);
  t.equal(g.sectorHealth(6), 'bad');
  // a torn write lands in the file too, as it would on the chip
  g.faults.cutAfter(1, 'after');
  t.throws(() => g.program(2051, Uint8Array.of(9)), PowerCutError);
  g.close();
  const h = NorFlash.open(path, small);
  t.equal(h.read(2051, 1)[0], 9);
  h.close();
  t.throws(() => NorFlash.open(path, { ...small, size: 16 * 1024 }), FlashError);
});

t.test('file image: created 0600 whatever the umask (it holds the device key)', { skip: process.platform === 'win32' && 'no POSIX modes' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-flash-'));
  const old = process.umask(0o000);
  t.teardown(() => {
    process.umask(old);
    rmSync(dir, { recursive: true, force: true });
  });
  const path = join(dir, 'flash.img');
  const f = NorFlash.open(path, small);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same([...f.read(0, 4)], [0xff, 0xff, 0xff, 0xff], 'blank');
  t.equal(statSync(path).size, small.size);
  f.close();
});
