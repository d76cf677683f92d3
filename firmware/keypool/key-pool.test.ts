// Unit tests of the key pool's behaviour: format/mount, staging and resume, commit atomicity,
// anti-rollback, consumption order and ids, zeroization, recycling, status, refusals.

import t from 'tap';
import { NorFlash } from '../flash/nor-flash.js';
import { PowerCutError } from '../flash/errors.js';
import { KeyPool, DEFAULT_MAX_KEY_BITS, type KeyPoolOptions, type PoolStatus } from './key-pool.js';
import { PoolError } from './errors.js';
import { prng } from '../flash/faults.js';

const geo = { size: 64 * 1024, sectorSize: 1024, pageSize: 64 };
const opts: KeyPoolOptions = { secureSectors: 2, journalSectors: 3, maxKeyBits: 8 * 20000, maxBatches: 4 };

function keyBytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

function inject(pool: KeyPool, batchId: number, seq: number, data: Uint8Array, purpose: 'enc' | 'auth' | 'any' = 'any', chunk = 300) {
  const st = pool.stage({ batchId, seq, purpose, bits: data.length * 8 });
  for (let o = 0; o < data.length; o += chunk) st.write(o, data.subarray(o, Math.min(data.length, o + chunk)));
  return st.commit();
}

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    if (e instanceof PoolError) return e.code;
    if (e instanceof PowerCutError) return 'POWER';
    return (e as Error).name;
  }
  return 'OK';
};

t.test('mount never formats: blank and foreign images fail closed and stay untouched', async (t) => {
  const f = NorFlash.memory(geo);
  t.equal(codeOf(() => KeyPool.mount(f, opts)), 'NOT_FORMATTED');
  t.equal(f.stats.programs + f.stats.erases, 0, 'mount wrote nothing');
  const g = NorFlash.memory(geo);
  for (let a = 0; a < geo.size; a += 64) g.program(a, keyBytes(64, a)); // random junk
  const before = g.snapshot();
  t.equal(codeOf(() => KeyPool.mount(g, opts)), 'NOT_FORMATTED');
  t.same(g.snapshot(), before, 'foreign image untouched');
  KeyPool.format(f, opts);
  t.equal(codeOf(() => KeyPool.mount(f, { ...opts, secureSectors: 3 })), 'NOT_FORMATTED', 'journal not where the options say');
  t.equal(codeOf(() => KeyPool.mount(f, { ...opts, maxKeyBits: 8 })), 'GEOMETRY_MISMATCH');
  t.equal(codeOf(() => KeyPool.mount(NorFlash.fromImage(f.snapshot(), { ...geo, pageSize: 128 }), opts)), 'GEOMETRY_MISMATCH');
});

t.test('format leaves the secure area alone', async (t) => {
  const f = NorFlash.memory(geo);
  const secret = keyBytes(64, 7);
  f.program(0, secret);
  f.program(1024 + 64, secret);
  KeyPool.format(f, opts);
  t.same(f.read(0, 64), secret);
  t.same(f.read(1024 + 64, 64), secret);
});

t.test('default geometry: 8 Mbit pool plus a staged batch fit on 2 MiB', async (t) => {
  const f = NorFlash.memory();
  const pool = KeyPool.format(f);
  const s = pool.status();
  t.equal(s.maxKeyBits, DEFAULT_MAX_KEY_BITS);
  t.equal(s.maxKeyBits, 8_388_608);
  // fill: 3/4 stored, consume half of it, stage the rest up to max
  const big = keyBytes(786432, 1);
  inject(pool, 1, 1, big, 'any', 4096);
  for (let i = 0; i < 1000; i++) pool.consume('enc', 256);
  const room = DEFAULT_MAX_KEY_BITS - pool.status().storedKeyBits;
  t.equal(codeOf(() => pool.stage({ batchId: 2, seq: 2, purpose: 'any', bits: room + 8 })), 'NO_SPACE');
  const st = pool.stage({ batchId: 2, seq: 2, purpose: 'any', bits: room });
  const more = keyBytes(room / 8, 2);
  for (let o = 0; o < more.length; o += 4096) st.write(o, more.subarray(o, o + 4096));
  st.commit();
  t.equal(pool.status().storedKeyBits, DEFAULT_MAX_KEY_BITS);
  t.equal(pool.status().sectors.bad, 0);
});

t.test('stage, commit, consume in order, ids and bytes', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(3000, 1);
  const info = inject(pool, 0xdeadbeef, 5, a, 'any');
  t.same(info, { batchId: 0xdeadbeef, seq: 5, purpose: 'any', bits: 24000, consumedBits: 0, firstKeyOffset: 0 });
  let off = 0;
  for (const n of [32, 16, 700, 1, 900]) {
    const k = pool.consume('enc', n);
    t.same(k.keyId, { batchId: 0xdeadbeef, bitOffset: off * 8 });
    t.same(k.key, a.subarray(off, off + n));
    t.equal(k.skippedBits, 0);
    off += n;
  }
  pool.maintain(); // mount recycles consumed sectors too; compare like with like
  const st = pool.status();
  t.equal(st.storedKeyBits, (3000 - off) * 8);
  t.equal(st.consumedKeyBits, off * 8);
  t.same(st.batches, [{ batchId: 0xdeadbeef, seq: 5, purpose: 'any', bits: 24000, consumedBits: off * 8, firstKeyOffset: 0 }]);
  // survives remount exactly
  const p2 = KeyPool.mount(f, opts);
  t.same(p2.status(), st);
  t.same(p2.consume('auth', 10).key, a.subarray(off, off + 10));
});

t.test('consumed keys are zeroized on flash before they are returned', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(2000, 3);
  inject(pool, 1, 1, a);
  const insp = pool.inspect();
  const sector = insp.batches[0]!.sectors[0]!;
  const base = sector * insp.sectorSize + insp.payloadOffset;
  t.same(f.peek(base, 40), a.subarray(0, 40), 'key bytes on flash before use');
  pool.consume('enc', 40);
  t.same(f.peek(base, 40), new Uint8Array(40), 'zeroized');
  t.same(f.peek(base + 40, 10), a.subarray(40, 50), 'next key untouched');
});

t.test('purposes: enc and auth batches, any serves both, lowest seq first, short remainders passed over', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const e = keyBytes(100, 1);
  const au = keyBytes(100, 2);
  const an = keyBytes(100, 3);
  inject(pool, 10, 1, e, 'enc');
  inject(pool, 11, 2, au, 'auth');
  inject(pool, 12, 3, an, 'any');
  t.same(pool.consume('auth', 60).key, au.subarray(0, 60));
  t.same(pool.consume('enc', 60).key, e.subarray(0, 60));
  t.same(pool.consume('auth', 60).key, an.subarray(0, 60), 'auth batch too short: next batch that serves auth');
  t.same(pool.consume('auth', 40).key, au.subarray(60, 100), 'the short remainder still serves a short key');
  t.same(pool.consume('enc', 40).key, e.subarray(60, 100));
  t.same(pool.consume('enc', 40).key, an.subarray(60, 100));
  t.equal(codeOf(() => pool.consume('enc', 1)), 'EXHAUSTED');
  t.equal(pool.status().storedKeyBits, 0);
});

t.test('consumeById: exact key, never twice, gaps burned, unknown refused; refusals change nothing', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(2000, 9);
  const st = pool.stage({ batchId: 7, seq: 1, purpose: 'enc', bits: 16000, firstKeyOffset: 800 });
  st.write(0, a);
  st.commit();
  const k = pool.consumeById({ batchId: 7, bitOffset: 800 + 8 * 100 }, 32);
  t.same(k.key, a.subarray(100, 132));
  t.equal(k.skippedBits, 800);
  const snap = f.snapshot();
  const before = pool.status();
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 800 + 8 * 100 }, 32)), 'ALREADY_CONSUMED');
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 800 }, 8)), 'ALREADY_CONSUMED', 'burned gap is not served');
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 800 + 8 * 131 }, 8)), 'ALREADY_CONSUMED', 'overlap');
  t.equal(codeOf(() => pool.consumeById({ batchId: 8, bitOffset: 0 }, 8)), 'NOT_PRESENT');
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 800 + 8 * 1999 }, 2)), 'NOT_PRESENT', 'past the end');
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 803 + 8 * 200 }, 2)), 'NOT_PRESENT', 'misaligned');
  t.equal(codeOf(() => pool.consumeById({ batchId: 7, bitOffset: 0 }, 2)), 'NOT_PRESENT', 'before firstKeyOffset');
  t.equal(codeOf(() => pool.consume('enc', 0)), 'RangeError');
  t.equal(codeOf(() => pool.consume('bogus' as 'enc', 1)), 'TypeError');
  t.same(f.snapshot(), snap, 'flash unchanged by refusals');
  t.same(pool.status(), before);
  t.same(pool.consume('enc', 4).keyId, { batchId: 7, bitOffset: 800 + 8 * 132 });
});

t.test('anti-rollback, duplicates, busy, no space: refused before anything is written', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, { ...opts, lastSeq: 3 });
  t.equal(codeOf(() => pool.stage({ batchId: 1, seq: 3, purpose: 'any', bits: 8 })), 'ROLLBACK', 'format floor');
  inject(pool, 1, 10, keyBytes(100, 1));
  const snap = f.snapshot();
  t.equal(codeOf(() => pool.stage({ batchId: 2, seq: 10, purpose: 'any', bits: 8 })), 'ROLLBACK');
  t.equal(codeOf(() => pool.stage({ batchId: 2, seq: 9, purpose: 'any', bits: 8 })), 'ROLLBACK');
  t.equal(codeOf(() => pool.stage({ batchId: 1, seq: 11, purpose: 'any', bits: 8 })), 'DUPLICATE_BATCH');
  t.equal(codeOf(() => pool.stage({ batchId: 2, seq: 11, purpose: 'any', bits: 20000 * 8 })), 'NO_SPACE');
  t.equal(codeOf(() => pool.stage({ batchId: 2, seq: 11, purpose: 'any', bits: 7 })), 'RangeError');
  t.equal(codeOf(() => pool.stage({ batchId: -1, seq: 11, purpose: 'any', bits: 8 })), 'TypeError');
  t.same(f.snapshot(), snap, 'nothing written');
  const st = pool.stage({ batchId: 2, seq: 11, purpose: 'any', bits: 800 });
  t.equal(codeOf(() => pool.stage({ batchId: 3, seq: 12, purpose: 'any', bits: 8 })), 'STAGING_BUSY');
  st.write(0, keyBytes(50, 2));
  t.equal(codeOf(() => st.commit()), 'STAGE_INCOMPLETE');
  t.equal(codeOf(() => st.write(10, keyBytes(5, 2))), 'STAGE_OFFSET');
  t.equal(codeOf(() => st.write(50, keyBytes(51, 2))), 'STAGE_OFFSET', 'past the end');
  st.write(50, keyBytes(50, 3));
  st.commit();
  t.equal(codeOf(() => st.write(100, Uint8Array.of(1))), 'STALE_HANDLE');
  t.equal(pool.status().lastSeq, 11);
  // anti-rollback survives zeroize and remount
  pool.zeroizeAll();
  const p2 = KeyPool.mount(f, opts);
  t.equal(p2.status().lastSeq, 11);
  t.equal(codeOf(() => p2.stage({ batchId: 5, seq: 11, purpose: 'any', bits: 8 })), 'ROLLBACK');
  // too many batches
  for (let i = 0; i < 4; i++) inject(p2, 100 + i, 20 + i, keyBytes(8, i));
  t.equal(codeOf(() => p2.stage({ batchId: 200, seq: 99, purpose: 'any', bits: 8 })), 'TOO_MANY_BATCHES');
});

t.test('streamed staging resumes after a remount at the durable offset; abort wipes', async (t) => {
  const f = NorFlash.memory(geo);
  let pool = KeyPool.format(f, opts);
  const a = keyBytes(2500, 4);
  const st = pool.stage({ batchId: 3, seq: 1, purpose: 'enc', bits: 20000 });
  st.write(0, a.subarray(0, 1100));
  pool = KeyPool.mount(f, opts);
  t.equal(pool.status().storedKeyBits, 0, 'staged bytes are not live');
  const st2 = pool.staging()!;
  t.equal(st2.durableOffset, 1100);
  t.equal(st2.batchId, 3);
  t.equal(codeOf(() => st.write(1100, a.subarray(1100, 1200))), 'UNMOUNTED', 'a handle of an older mount refuses');
  st2.write(1100, a.subarray(1100, 2500));
  st2.commit();
  t.same(pool.consume('enc', 2500).key, a);
  // abort: staged bytes wiped from flash
  const b = keyBytes(900, 5);
  const st3 = pool.stage({ batchId: 4, seq: 2, purpose: 'enc', bits: 7200 });
  st3.write(0, b);
  const sectors = pool.inspect().batches.find((x) => x.batchId === 4)!.sectors;
  st3.abort();
  for (const s of sectors) t.ok(f.peek(s * 1024, 1024).every((x) => x === 0xff), 'aborted sector erased');
  t.equal(pool.staging(), null);
  t.equal(pool.status().lastSeq, 1, 'abort does not move the counter');
  inject(pool, 4, 2, b, 'enc');
});

t.test('write conflict after a torn write is refused; identical resend completes it', async (t) => {
  const f = NorFlash.memory(geo);
  let pool = KeyPool.format(f, opts);
  const a = keyBytes(600, 6);
  const st = pool.stage({ batchId: 3, seq: 1, purpose: 'enc', bits: 4800 });
  st.write(0, a.subarray(0, 100));
  f.faults.cutAfter(2, 'torn', 3);
  t.equal(codeOf(() => st.write(100, a.subarray(100, 400))), 'POWER');
  f.reboot();
  pool = KeyPool.mount(f, opts);
  const s2 = pool.staging()!;
  t.equal(s2.durableOffset, 100);
  const other = Uint8Array.from(a.subarray(100, 400), (x) => x ^ 0xff);
  const snap = f.snapshot();
  t.equal(codeOf(() => s2.write(100, other)), 'STAGE_CONFLICT');
  t.same(f.snapshot(), snap);
  s2.write(100, a.subarray(100, 600));
  s2.commit();
  t.same(pool.consume('enc', 600).key, a);
});

t.test('recycling: consumed sectors are erased and reused round robin', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const used = new Set<number>();
  let seq = 1;
  for (let round = 0; round < 30; round++) {
    inject(pool, round, seq++, keyBytes(4000, round));
    for (const s of pool.inspect().batches[0]!.sectors) used.add(s);
    while (pool.status().storedKeyBits > 0) pool.consume('enc', 200);
    // retired at its last key, with no maintain(): slot and sectors back at once
    t.equal(pool.status().sectors.releasable, 0);
    t.equal(pool.status().sectors.inUse, 0);
    t.equal(pool.maintain(), 0);
    t.equal(pool.status().batches.length, 0, 'fully consumed batch retired');
  }
  t.equal(used.size, pool.inspect().dataCount, 'every data sector used');
  const counts = [...f.eraseCounts()].slice(5);
  t.ok(Math.max(...counts) - Math.min(...counts) <= 3, `even wear ${Math.min(...counts)}..${Math.max(...counts)}`);
  t.equal(pool.status().consumedKeyBits, 30 * 4000 * 8);
});

t.test('zeroizeAll wipes every key byte, keeps the counter, pool stays usable', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(3000, 11);
  inject(pool, 1, 1, a);
  pool.consume('enc', 100);
  const st = pool.stage({ batchId: 2, seq: 2, purpose: 'any', bits: 8000 });
  st.write(0, keyBytes(500, 12));
  t.equal(pool.zeroizeAll(), 2, 'one committed and one staging batch wiped');
  for (let s = 5; s < 64; s++) t.ok(f.peek(s * 1024, 1024).every((x) => x === 0xff), `sector ${s} erased`);
  t.same(pool.status().batches, []);
  t.equal(pool.status().staging, null);
  t.equal(pool.status().lastSeq, 1);
  t.equal(codeOf(() => st.write(500, Uint8Array.of(1))), 'STALE_HANDLE');
  inject(pool, 3, 3, a);
  t.same(pool.consume('auth', 10).key, a.subarray(0, 10));
  t.same(KeyPool.mount(f, opts).status().batches.length, 1);
});

t.test('discardBatch (partial zeroize) and low watermark', async (t) => {
  const f = NorFlash.memory(geo);
  const events: PoolStatus[] = [];
  const pool = KeyPool.format(f, { ...opts, lowWatermarkBits: 8 * 150, onLowWatermark: (s) => events.push(s) });
  inject(pool, 1, 1, keyBytes(200, 1), 'enc');
  inject(pool, 2, 2, keyBytes(100, 2), 'auth');
  pool.consume('enc', 100);
  t.equal(events.length, 0);
  t.equal(pool.discardBatch(2), 800);
  t.equal(events.length, 1, 'fired once when stored fell below');
  t.equal(events[0]!.storedKeyBits, 800);
  pool.consume('enc', 10);
  t.equal(events.length, 1, 'not again while below');
  t.equal(codeOf(() => pool.discardBatch(2)), 'NOT_PRESENT');
  t.same(pool.status().batches.map((b) => b.batchId), [1]);
});

t.test('journal rolls over many times and mount stays correct', async (t) => {
  const f = NorFlash.memory(geo);
  let pool = KeyPool.format(f, opts);
  const a = keyBytes(8000, 13);
  const st = pool.stage({ batchId: 1, seq: 1, purpose: 'any', bits: 64000 });
  for (let o = 0; o < a.length; o += 10) st.write(o, a.subarray(o, o + 10)); // 800 progress records
  st.commit();
  t.ok(pool.inspect().journal.ringSeq > 10, `ring generation ${pool.inspect().journal.ringSeq}`);
  pool = KeyPool.mount(f, opts);
  let off = 0;
  while (off < 8000) {
    const n = Math.min(8000 - off, 1 + (off % 97));
    t.same(pool.consume('enc', n).key, a.subarray(off, off + n));
    off += n;
    if (off % 5 === 0) pool = KeyPool.mount(f, opts);
  }
});

t.test('bit flips: a flipped journal record mid-log fails closed; a flipped mark bit cannot un-consume', async (t) => {
  const f = NorFlash.memory(geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(1000, 14);
  inject(pool, 1, 1, a);
  pool.consume('enc', 100);
  const { sectors } = pool.inspect().batches[0]!;
  // flip back one of the two mark bits of the last consumed byte (index 99 -> marks byte 24, bits 6/7)
  const marks = sectors[0]! * 1024 + 16 + 24;
  f.flipStoredBit(marks, 7);
  const p2 = KeyPool.mount(f, opts);
  t.equal(p2.status().batches[0]!.consumedBits, 800, 'the other copy still marks it');
  // damage the first record after the checkpoint of the active journal sector
  const j = p2.inspect().journal;
  f.flipStoredBit(j.sector * 1024 + 16 * 5 + 3, 2);
  t.equal(codeOf(() => KeyPool.mount(f, opts)), 'CORRUPT');
});

t.test('power cut during consume: key not returned, never served again', async (t) => {
  const f = NorFlash.memory(geo);
  let pool = KeyPool.format(f, opts);
  const a = keyBytes(1000, 15);
  inject(pool, 1, 1, a);
  pool.consume('enc', 50);
  f.faults.cutAfter(1, 'torn', 99);
  t.equal(codeOf(() => pool.consume('enc', 50)), 'POWER');
  t.equal(codeOf(() => pool.consume('enc', 50)), 'UNMOUNTED');
  f.reboot();
  pool = KeyPool.mount(f, opts);
  const k = pool.consume('enc', 50);
  const off = k.keyId.bitOffset / 8;
  t.ok(off >= 50 && off <= 100, `resumes at ${off}`);
  t.same(k.key, a.subarray(off, off + 50));
});

t.test('file-backed pool persists and reopens', async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'qkt-pool-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flash.img');
  let f = NorFlash.open(path, geo);
  const pool = KeyPool.format(f, opts);
  const a = keyBytes(500, 16);
  inject(pool, 1, 1, a);
  pool.consume('enc', 20);
  f.close();
  f = NorFlash.open(path, geo);
  t.same(KeyPool.mount(f, opts).consume('enc', 20).key, a.subarray(20, 40));
  f.close();
});

t.test('a flipped bit in the newest journal header does not roll the pool back (nor does a torn header)', async (t) => {
  for (const damage of ['flip', 'torn'] as const) {
    const f0 = NorFlash.memory(geo);
    let pool = KeyPool.format(f0, opts);
    let seq = 1;
    // Enough batches to roll the journal over a few times, then keys consumed in the newest sector.
    while (pool.inspect().journal.ringSeq < 4) {
      inject(pool, seq, seq, keyBytes(600, seq));
      while (pool.status().storedKeyBits > 0) pool.consume('any', 100);
      seq++;
    }
    inject(pool, 9000, 9000, keyBytes(600, 9000));
    pool.consume('any', 64);
    const before = pool.status();
    const at = pool.inspect().journal.sector * geo.sectorSize;
    t.ok(pool.inspect().journal.ringSeq >= 4, 'the journal rolled over: older sectors hold older states');
    const image = f0.snapshot();
    if (damage === 'flip') image[at + 5]! ^= 1 << 3;
    else image.fill(0xff, at + 8, at + 16); // as if the header's program was cut: its last bits never cleared
    const f = NorFlash.fromImage(image, geo);
    pool = KeyPool.mount(f, opts);
    t.same(pool.status(), before, `${damage} header: the newest state is read, not the sector before it`);
    t.throws(() => pool.stage({ batchId: 9001, seq: 9000, purpose: 'any', bits: 64 }), { code: 'ROLLBACK' }, 'the anti-rollback counter did not go back');
    t.same(pool.consume('any', 32).keyId, { batchId: 9000, bitOffset: 64 * 8 }, 'no key served twice');
    pool = KeyPool.mount(f, opts);
    t.equal(pool.status().batches[0]?.consumedBits, 96 * 8, 'and the log goes on from there');
  }
});

t.test('a format cut at any flash operation never leaves an older pool mountable', async (t) => {
  const f0 = NorFlash.memory(geo);
  let pool = KeyPool.format(f0, opts);
  // Roll the journal until its newest sector is the ring's first: a naive kill (sector order)
  // would invalidate the newest header first and leave older ones readable.
  let seq = 1;
  while (seq < 4 || pool.inspect().journal.sector !== opts.secureSectors!) {
    inject(pool, seq, seq, keyBytes(300, seq));
    while (pool.status().batches.length > 1) pool.consume('any', 100);
    seq++;
  }
  // A few records in the newest sector that the older ones lack: a consumption that retires a batch.
  const ring = pool.inspect().journal.ringSeq;
  while (pool.status().batches.length > 0) pool.consume('any', 100);
  t.equal(pool.inspect().journal.ringSeq, ring, 'still in the newest sector');
  const newest = JSON.stringify(pool.status());
  const image = f0.snapshot();
  const ops = (() => {
    const f = NorFlash.fromImage(image, geo);
    const m0 = f.faults.mutations;
    KeyPool.format(f, opts);
    return f.faults.mutations - m0;
  })();
  let cuts = 0;
  for (const mode of ['torn', 'clean', 'after'] as const) {
    for (let n = 1; n <= ops; n++) {
      const f = NorFlash.fromImage(image, geo);
      f.faults.cutAfter(n, mode, n);
      t.throws(() => KeyPool.format(f, opts));
      f.reboot();
      cuts++;
      let st: string | undefined;
      try {
        st = JSON.stringify(KeyPool.mount(f, opts).status());
      } catch (e) {
        if (!(e instanceof PoolError) || e.code !== 'NOT_FORMATTED') t.fail(`${mode} cut ${n}: ${(e as Error).message}`);
        continue;
      }
      const fresh = JSON.parse(st).batches.length === 0 && JSON.parse(st).lastSeq === null;
      if (st !== newest && !fresh) t.fail(`${mode} cut ${n}/${ops}: an older pool mounted`);
    }
  }
  t.pass(`${cuts} cut points: the newest pool, a fresh one, or none`);
});
