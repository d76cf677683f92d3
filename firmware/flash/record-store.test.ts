// RecordStore: typed records, latest/all, compaction policy, fail-closed open, and a power-cut
// sweep over every flash operation of an append/compaction scenario (clean, after, torn).

import t from 'tap';
import { NorFlash } from './nor-flash.js';
import { PowerCutError } from './errors.js';
import { prng, type CutMode } from './faults.js';
import { RecordStore, RecordStoreError, type RecordStoreOptions } from './record-store.js';

const S = 1024;
const geo = { size: 8 * S, sectorSize: S, pageSize: 64 };
const opts: RecordStoreOptions = { firstSector: 1, sectorCount: 2, types: { 1: { kind: 'latest' }, 2: { kind: 'latest' }, 9: { kind: 'log', keep: 4 } } };

const rec = (seed: number, n: number) => {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
};

t.test('append, latest, all; survives reopen; compaction keeps latest and last N', async (t) => {
  const f = NorFlash.memory(geo);
  t.throws(() => RecordStore.open(f, opts), { code: 'NOT_FORMATTED' });
  let s = RecordStore.format(f, opts);
  t.equal(s.latest(1), undefined);
  s.append(1, Uint8Array.of(1));
  s.append(1, Uint8Array.of(2));
  s.append(2, new Uint8Array(0));
  t.same(s.latest(1), Uint8Array.of(2));
  t.same(s.latest(2), new Uint8Array(0));
  s = RecordStore.open(f, opts);
  t.same(s.all(1), [Uint8Array.of(1), Uint8Array.of(2)]);
  for (let i = 0; i < 60; i++) s.append(9, rec(i, 20 + i));
  s = RecordStore.open(f, opts);
  const log = s.all(9);
  t.ok(log.length >= 4);
  t.same(log.slice(-4), [56, 57, 58, 59].map((i) => rec(i, 20 + i)), 'the last 4 audit entries');
  t.same(s.latest(1), Uint8Array.of(2), 'latest-only record survived compactions');
  t.throws(() => s.append(1, new Uint8Array(257)), RecordStoreError);
  t.throws(() => s.append(0, Uint8Array.of(1)), TypeError);
  // nothing outside the range was touched
  t.ok(f.peek(0, S).every((b) => b === 0xff));
  t.ok(f.peek(3 * S, 5 * S).every((b) => b === 0xff));
});

t.test('a damaged record followed by valid ones fails closed', async (t) => {
  const f = NorFlash.memory(geo);
  const s = RecordStore.format(f, opts);
  s.append(1, Uint8Array.of(1, 2, 3));
  s.append(1, Uint8Array.of(4));
  f.flipStoredBit(S + 16 + 5, 0);
  t.throws(() => RecordStore.open(f, opts), { code: 'CORRUPT' });
});

t.test('power cut at every operation: old or new, never torn, never lost', async (t) => {
  // scenario: a mix of latest-only and log records, enough to compact several times
  const script: Array<[number, Uint8Array]> = [];
  for (let i = 0; i < 80; i++) script.push([i % 3 === 0 ? 9 : 1 + (i % 2), rec(1000 + i, (i * 37) % 120)]);
  const expect = (applied: number, s: RecordStore): string | undefined => {
    for (const type of [1, 2]) {
      const want = script.slice(0, applied).filter(([ty]) => ty === type).at(-1)?.[1];
      const got = s.latest(type);
      if (String(want) !== String(got)) return `latest(${type}) after ${applied} appends`;
    }
    const logAll = script.slice(0, applied).filter(([ty]) => ty === 9).map(([, d]) => String(d));
    const got = s.all(9).map(String);
    if (got.length < Math.min(4, logAll.length) || got.join('|') !== logAll.slice(logAll.length - got.length).join('|')) return `log after ${applied} appends`;
    return undefined;
  };
  // reference: op counts per append
  const counts: number[] = [];
  {
    const f = NorFlash.memory(geo);
    const s = RecordStore.format(f, opts);
    for (const [ty, d] of script) {
      const m0 = f.faults.mutations;
      s.append(ty, d);
      counts.push(f.faults.mutations - m0);
    }
  }
  const total = counts.reduce((a, b) => a + b, 0);
  let cuts = 0;
  const failures: string[] = [];
  const modes: CutMode[] = ['clean', 'after', 'torn'];
  for (let n = 1; n <= total; n++) {
    for (const mode of modes) {
      const f = NorFlash.memory(geo);
      let s = RecordStore.format(f, opts);
      f.faults.cutAfter(n, mode, n);
      let applied = 0;
      try {
        for (const [ty, d] of script) {
          s.append(ty, d);
          applied++;
        }
        failures.push(`cut ${n} not reached`);
        continue;
      } catch (e) {
        if (!(e instanceof PowerCutError)) throw e;
      }
      cuts++;
      f.reboot();
      s = RecordStore.open(f, opts);
      const ok = expect(applied, s) === undefined || expect(applied + 1, s) === undefined;
      if (!ok) failures.push(`cut ${n} ${mode}: ${expect(applied, s)}`);
      // continue: retry the interrupted append, then the rest
      const base = expect(applied + 1, s) === undefined ? applied + 1 : applied;
      for (const [ty, d] of script.slice(base)) s.append(ty, d);
      const end = expect(script.length, RecordStore.open(f, opts));
      if (end) failures.push(`cut ${n} ${mode} after continuing: ${end}`);
    }
  }
  t.comment(`record store: ${cuts} cut points over ${total} ops`);
  t.ok(cuts >= 3 * total - 3);
  t.same(failures.slice(0, 10), []);
});
