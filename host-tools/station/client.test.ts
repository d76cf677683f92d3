// readStationStatus against a station that lies (docs/protocol.md 3.12.3): pages that never end,
// repeat or reorder rows, or a last uplink no date can show, are refused, not followed or crashed on.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_STATUS_ROWS, readStationStatus, sendTestUplink, StationRefusedError, StationReplyError } from './client.js';
import { Group, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import type { LinkClient } from '../link/client.js';
import type { Payload } from '../../firmware/link/codec.js';
import { MAX_MOUNTED_POOLS, StationStore } from './store.js';

const base = { generation: 1, storedKeyBits: 1, maxKeyBits: 1, consumedKeyBits: 0, activeBatches: 1, inactiveBatches: 0, activeKeyBits: 1, inactiveKeyBits: 0, lastUplink: null, forecast: null };
const station = (answer: (p: Payload, n: number) => Payload): LinkClient & { asked: number } => {
  const s = { asked: 0, request: async (_g: number, _c: number, p: Payload) => answer(p, s.asked++) };
  return s as unknown as LinkClient & { asked: number };
};
const id = (n: number) => `T${String(n).padStart(8, '0')}`;

t.test('a station that pages on without end is cut off at MAX_STATUS_ROWS', async (t) => {
  const s = station((_p, n) => {
    const rows = Array.from({ length: 16 }, (_, i) => ({ ...base, terminalId: id(n * 16 + i) }));
    return { terminals: rows, next: rows[15]!.terminalId };
  });
  await t.rejects(readStationStatus(s), StationReplyError);
  t.ok(s.asked <= MAX_STATUS_ROWS / 16 + 1, `stopped after ${s.asked} pages`);
});

t.test('repeated, unsorted or oversized pages are refused', async (t) => {
  await t.rejects(readStationStatus(station(() => ({ terminals: [{ ...base, terminalId: 'T1' }, { ...base, terminalId: 'T1' }] }))), StationReplyError, 'a row twice');
  await t.rejects(readStationStatus(station(() => ({ terminals: [{ ...base, terminalId: 'T2' }, { ...base, terminalId: 'T1' }] }))), StationReplyError, 'out of order');
  await t.rejects(readStationStatus(station(() => ({ terminals: Array.from({ length: 17 }, (_, i) => ({ ...base, terminalId: id(i) })) }))), StationReplyError, '17 rows');
  // next names a row beyond the page, then the page after repeats the one before it
  await t.rejects(
    readStationStatus(station((_p, n) => (n === 0 ? { terminals: [{ ...base, terminalId: 'T1' }], next: 'T0' } : { terminals: [] }))),
    StationReplyError,
    'next is not the last row',
  );
  await t.rejects(
    readStationStatus(station((_p, n) => ({ terminals: [{ ...base, terminalId: n === 0 ? 'T5' : 'T3' }], ...(n === 0 ? { next: 'T5' } : {}) }))),
    StationReplyError,
    'a later page goes back',
  );
  const ok = await readStationStatus(station((_p, n) => (n === 0 ? { terminals: [{ ...base, terminalId: 'A' }, { ...base, terminalId: 'B' }], next: 'B' } : { terminals: [{ ...base, terminalId: 'C' }] })));
  t.same(
    ok.map((r) => r.terminalId),
    ['A', 'B', 'C'],
    'honest pages read in full',
  );
});

t.test('a last uplink no date can show is a malformed row, not a crash', async (t) => {
  const at = Number.MAX_SAFE_INTEGER;
  await t.rejects(readStationStatus(station(() => ({ terminals: [{ ...base, terminalId: 'T1', lastUplink: { at, mode: 'otp', counter: 1, bytes: 1, keyBits: 1 } }] }))), StationReplyError);
});

t.test("a store's last-uplink.json with negative or undated fields reads as none", async (t) => {
  const store = new StationStore(join(t.testdir({}), 'station'));
  t.teardown(() => store.close());
  mkdirSync(join(store.dir, 'T1'), { recursive: true });
  const file = join(store.dir, 'T1', 'last-uplink.json');
  const good = { at: 1000, mode: 'otp', counter: 1, bytes: 1, keyBits: 1 };
  writeFileSync(file, JSON.stringify(good));
  t.same(store.lastUplink('T1'), good);
  for (const bad of [{ at: -5 }, { at: 9e15 }, { counter: -1 }, { bytes: -3 }, { keyBits: -9 }]) {
    writeFileSync(file, JSON.stringify({ ...good, ...bad }));
    t.equal(store.lastUplink('T1'), null, JSON.stringify(bad));
  }
});

t.test('a stray folder not named as a terminal id is not a terminal of the store', async (t) => {
  const store = new StationStore(join(t.testdir({}), 'station'));
  t.teardown(() => store.close());
  for (const d of ['T1', 'X\x1b[31mred', 'a b', '..x', 'x'.repeat(33)]) {
    mkdirSync(join(store.dir, d), { recursive: true });
    writeFileSync(join(store.dir, d, 'pool.img'), '');
  }
  t.same(store.terminals(), ['..x', 'T1'].sort());
});

t.test("paging every terminal's account keeps at most MAX_MOUNTED_POOLS pools in memory", async (t) => {
  const store = new StationStore(join(t.testdir({}), 'station'));
  t.teardown(() => store.close());
  const n = MAX_MOUNTED_POOLS + 8;
  for (let i = 0; i < n; i++) store.addBatch(id(i), { batchId: new Uint8Array(16).fill(i + 1), seq: 1, purpose: 'enc', bits: 8192 }, new Uint8Array(1024).fill(i));
  for (const x of store.terminals()) t.equal(store.account(x).storedKeyBits, 8192);
  const mounted = (store as unknown as { pools: Map<string, unknown> }).pools.size;
  t.ok(mounted <= MAX_MOUNTED_POOLS, `${mounted} pools mounted after reading ${n} accounts`);
  // An unmounted pool mounts again as it was.
  t.equal(store.account(id(0)).storedKeyBits, 8192);
});

t.test('station uplink: a station row with no key left costs the terminal no key', async (t) => {
  const asked: number[] = [];
  const terminal = {
    request: async (group: number, command: number) => {
      asked.push(group * 256 + command);
      if (group === Group.SYSTEM && command === SystemCmd.STATUS) return { terminalId: 'T1' };
      throw new Error(`the terminal was asked group ${group} command ${command}`);
    },
  } as unknown as LinkClient;
  const st = station(() => ({ terminals: [{ ...base, terminalId: 'T1', storedKeyBits: 0, activeKeyBits: 0, activeBatches: 0 }] }));
  await t.rejects(sendTestUplink(terminal, st, { mode: 'otp', data: new Uint8Array(3), caller: { kind: 'terminal', id: 'T1', generation: 1 } }), StationRefusedError);
  t.same(asked, [Group.SYSTEM * 256 + SystemCmd.STATUS], 'the terminal was asked its STATUS only');
});

t.test('station uplink: a terminal that seals garbage is named, and nothing goes to the station', async (t) => {
  const terminal = {
    request: async (group: number, command: number) => {
      if (group === Group.SYSTEM && command === SystemCmd.STATUS) return { terminalId: 'T1' };
      if (group === Group.KEYS && command === KeysCmd.NEGOTIATE) return { s: 1 };
      if (group === Group.KEYS && command === KeysCmd.SEAL) return { m: new Uint8Array(5) };
      return {};
    },
  } as unknown as LinkClient;
  const st = station((p) => {
    if ('m' in p) throw new Error('the uplink reached the station');
    return { terminals: [{ ...base, terminalId: 'T1' }] };
  });
  await t.rejects(sendTestUplink(terminal, st, { mode: 'otp', data: new Uint8Array(3), caller: { kind: 'terminal', id: 'T1', generation: 1 } }), { name: 'TerminalReplyError', message: /malformed sealed message/ });
});
