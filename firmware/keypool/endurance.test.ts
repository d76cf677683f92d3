// Wear-out: with a tiny erase endurance, inject/consume/recycle until sectors die. The pool must
// report it with typed errors and in status, and every key it serves must still be the injected one.

import t from 'tap';
import { NorFlash } from '../flash/nor-flash.js';
import { prng } from '../flash/faults.js';
import { KeyPool, type KeyPoolOptions } from './key-pool.js';
import { PoolError } from './errors.js';

const geo = { size: 32 * 1024, sectorSize: 1024, pageSize: 64 };
const opts: KeyPoolOptions = { secureSectors: 2, journalSectors: 4, maxKeyBits: 8 * 6000, maxBatches: 4 };

t.test('wear-out is reported cleanly and never serves a key from a failed sector', async (t) => {
  const flash = NorFlash.memory(geo, { endurance: 12 });
  let pool = KeyPool.format(flash, opts);
  const r = prng(42);
  let seq = 1;
  let served = 0;
  let rounds = 0;
  let stopped: PoolError | undefined;
  let sawBad = 0;
  let maintained = 0;
  outer: for (; rounds < 10_000; rounds++) {
    const data = Uint8Array.from({ length: 1500 + Math.floor(r() * 1500) }, () => Math.floor(r() * 256));
    try {
      const st = pool.stage({ batchId: rounds, seq: seq++, purpose: 'any', bits: data.length * 8 });
      for (let o = 0; o < data.length; o += 400) st.write(o, data.subarray(o, o + 400));
      st.commit();
    } catch (e) {
      if (!(e instanceof PoolError)) throw e;
      t.equal(e.code, 'WORN_OUT', 'stopped with a typed WORN_OUT error');
      stopped = e;
      break outer;
    }
    let off = 0;
    let recycledMidBatch = false;
    while (off < data.length) {
      const n = Math.min(data.length - off, 1 + Math.floor(r() * 200));
      const k = pool.consume('enc', n);
      if (k.keyId.bitOffset !== off * 8 || !k.key.every((b, i) => b === data[off + i])) {
        t.fail(`round ${rounds}: wrong key at ${off}`);
        break outer;
      }
      off += n;
      served++;
      // Past the first sector, mid-batch (a used-up batch is retired by consume itself): the
      // used-up leading sectors are releasable, and maintain recycles exactly those, or stops
      // with the typed wear-out error.
      if (!recycledMidBatch && off >= geo.sectorSize && off < data.length) {
        recycledMidBatch = true;
        const before = pool.status().sectors.releasable;
        try {
          const recycled = pool.maintain();
          const after = pool.status().sectors.releasable;
          if (before < 1 || recycled !== before || after !== 0) {
            t.fail(`round ${rounds}: ${before} releasable, maintain recycled ${recycled}, ${after} left`);
            break outer;
          }
          maintained++;
        } catch (e) {
          if (!(e instanceof PoolError)) throw e;
          t.equal(e.code, 'WORN_OUT', `maintain stopped with a typed WORN_OUT error (${e.code}: ${e.message})`);
          stopped = e;
          break outer;
        }
      }
    }
    sawBad = Math.max(sawBad, pool.status().sectors.bad);
    // reboot now and then: bad-sector knowledge is rediscovered, never trusted blindly
    if (rounds % 7 === 6) pool = KeyPool.mount(flash, opts);
  }
  t.ok(stopped, 'the pool eventually refuses with a typed error');
  t.ok(served > 100, `served ${served} keys over ${rounds} rounds first`);
  t.ok(maintained >= rounds - 1, `maintain recycled the used-up sectors mid-batch (${maintained} times in ${rounds} rounds)`);
  const worn = [...Array(flash.sectorCount).keys()].filter((s) => flash.sectorHealth(s) === 'worn');
  t.ok(worn.length > 0, `${worn.length} sectors worn out on the flash`);
  t.ok(sawBad > 0 || stopped?.code === 'WORN_OUT', 'status showed bad sectors or the error said worn out');
  if (stopped?.code !== 'WORN_OUT' || (() => { try { pool.status(); return true; } catch { return false; } })()) {
    const s = pool.status();
    t.comment(`after wear-out: ${JSON.stringify(s.sectors)}, stored ${s.storedKeyBits} bits`);
  }
  t.comment(`rounds ${rounds}, keys ${served}, worn sectors ${worn.length}, stop: ${stopped?.code} ${stopped?.message}`);
});

t.test('a sector that goes bad under a live batch: the key is refused, not served', async (t) => {
  const flash = NorFlash.memory(geo);
  const pool = KeyPool.format(flash, opts);
  const data = Uint8Array.from({ length: 2000 }, (_, i) => (i * 31) & 0xff);
  const st = pool.stage({ batchId: 1, seq: 1, purpose: 'any', bits: 16000 });
  st.write(0, data);
  st.commit();
  t.same(pool.consume('enc', 10).key, data.subarray(0, 10));
  flash.markBad(pool.inspect().batches[0]!.sectors[0]!);
  const err = (() => {
    try {
      pool.consume('enc', 10);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.ok(err instanceof PoolError && err.code === 'IO', 'typed IO error, no key returned');
  const P = pool.inspect().payloadPerSector;
  t.equal(pool.status().batches[0]!.consumedBits, P * 8, 'the failed sector\'s keys were burned durably');
  const k = pool.consume('enc', 10);
  t.equal(k.keyId.bitOffset, P * 8, 'next key comes from the next sector');
  t.same(k.key, data.subarray(P, P + 10));
  const p2 = KeyPool.mount(flash, opts);
  const k2 = p2.consume('enc', 10);
  t.equal(k2.keyId.bitOffset, (P + 10) * 8, 'after remount: never a key from the failed sector');
  t.same(k2.key, data.subarray(P + 10, P + 20));
});
