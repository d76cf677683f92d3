// `qkt kmd status`: what a KMD home holds: its key supply, its terminals (device key generation,
// next seq, room at the station) and every batch with its state (batch-state.ts). Read only.
//
// Locking: the ledger (supply.json, terminals/*.json, the outbox listing, the station's
// state.json names) is read holding the home's lock, for the milliseconds those reads take, so it
// is one consistent snapshot; a status never holds the lock while it reads station pool images.
// It waits for the lock only briefly (`lockWaitMs`, default 1 s): behind a long carrier load it
// reads without the lock and says so (`consistent: false`, `writer`), rather than wait for it.
//
// A damaged home (a terminal record or station state that is corrupt, not a regular file, or a
// symlink) is reported per terminal in `damaged` (file and reason, never its bytes) and the rest
// is read; the CLI then exits 6. Only kmd.json and supply.json, which everything needs, fail it.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { homeLockOptions, isId, KmdError } from './home.js';
import { DamagedFileError } from '../json-file.js';
import type { KmdHome, TerminalRecord } from './home.js';
import { stationStore } from './export.js';
import { BATCH_STATES, batchStates } from './batch-state.js';
import type { BatchState } from './batch-state.js';
import { LockBusyError, lockSync } from '../lock.js';
import type { Lock } from '../lock.js';
import { StationStoreError } from '../station/store.js';
import { DEFAULT_MAX_KEY_BITS } from '../../firmware/keypool/key-pool.js';
import type { StationKeyStore } from '../station/store.js';
import type { SupplyAccount } from './supply.js';

export interface KmdStatus {
  kmdId: string;
  home: string;
  /** The ledger was read holding the home's lock (false: another process held it throughout the wait). */
  consistent: boolean;
  /** Who held the home's lock when it was read without it. */
  writer: { pid: number; command: string; since: string } | null;
  /** The supply's model (`fixed`, or a QKD model with its km, pulseRateHz, perPulse, mu) and its account. */
  supply: SupplyAccount;
  terminals: TerminalStatus[];
  batches: BatchStatus[];
  /** Per state, how many batches and their key bits (of the terminals that could be read). */
  totals: Record<BatchState, { batches: number; bits: number }>;
  /** Terminals whose files could not be read: left out of terminals, batches and totals. */
  damaged: DamagedEntry[];
}

export interface DamagedEntry {
  /** The terminal the file belongs to (null: a file name that is no terminal id). */
  terminalId: string | null;
  file: string;
  /** Why, in words: never the file's contents. */
  reason: string;
}

export interface TerminalStatus {
  terminalId: string;
  enrolledAt: string;
  generation: number;
  nextSeq: number;
  /** The terminal's pool at the station (all free before its first export made the pool). */
  station: { storedKeyBits: number; maxKeyBits: number; freeKeyBits: number; batches: number };
}

export interface BatchStatus {
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  state: BatchState;
  createdAt: string;
  carrierId?: string;
  deliveredAt?: string;
  voidedAt?: string;
  voidReason?: string;
}

export function kmdStatus(home: KmdHome, o: { lockWaitMs?: number; station?: StationKeyStore } = {}): KmdStatus {
  const station = o.station ?? stationStore(home);
  try {
    let held: Lock | undefined;
    let writer: KmdStatus['writer'] = null;
    try {
      held = lockSync(home.dir, { ...homeLockOptions(home.dir), waitMs: o.lockWaitMs ?? 1000 });
    } catch (e) {
      if (!(e instanceof LockBusyError)) throw e;
      writer = e.holder ? { pid: e.holder.pid, command: e.holder.command, since: e.holder.since } : null;
    }
    let ledger;
    try {
      ledger = readLedger(home, station);
    } finally {
      held?.release();
    }
    // Station pools: each read under its own lock, after the home's is released.
    const { damaged } = ledger;
    const terminals: TerminalStatus[] = [];
    const lost = new Set<string>();
    for (const t of ledger.terminals) {
      let room: TerminalStatus['station'];
      try {
        room = poolRoom(station, t.terminalId);
      } catch (e) {
        damaged.push({ terminalId: t.terminalId, file: join(station.dir, t.terminalId, 'pool.img'), reason: e instanceof DamagedFileError ? e.reason : `unreadable: ${(e as Error).message}` });
        lost.add(t.terminalId);
        continue;
      }
      terminals.push({ terminalId: t.terminalId, enrolledAt: t.enrolledAt, generation: t.generation ?? 1, nextSeq: t.nextSeq, station: room });
    }
    const batches = ledger.batches.filter((b) => !lost.has(b.terminalId));
    const totals = Object.fromEntries(BATCH_STATES.map((s) => [s, { batches: 0, bits: 0 }])) as KmdStatus['totals'];
    for (const b of batches) {
      totals[b.state].batches++;
      totals[b.state].bits += b.bits;
    }
    // Final batches folded out of the records (compact.ts) count too.
    for (const t of ledger.terminals) {
      if (lost.has(t.terminalId) || !t.pruned) continue;
      for (const st of ['void', 'collected'] as const) {
        totals[st].batches += t.pruned[st].batches;
        totals[st].bits += t.pruned[st].bits;
      }
    }
    return { kmdId: home.config.kmdId, home: home.dir, consistent: held !== undefined, writer, supply: ledger.supply, terminals, batches, totals, damaged };
  } finally {
    if (!o.station) station.close();
  }
}

function readLedger(home: KmdHome, station: StationKeyStore): { supply: KmdStatus['supply']; terminals: TerminalRecord[]; batches: BatchStatus[]; damaged: DamagedEntry[] } {
  let supply: KmdStatus['supply'];
  try {
    supply = home.supply().account();
  } catch (e) {
    if (e instanceof DamagedFileError) throw new KmdError(`${e.message}; the KMD cannot account its key without it`, 'CORRUPT');
    throw e;
  }
  const outbox = new Set(existsSync(home.path('outbox')) ? readdirSync(home.path('outbox')) : []);
  const damaged: DamagedEntry[] = [];
  const terminals: TerminalRecord[] = [];
  const stations = new Map<string, ReturnType<StationKeyStore['state']>>();
  for (const id of home.terminalIds()) {
    const file = home.path('terminals', `${id}.json`);
    if (!isId(id)) {
      damaged.push({ terminalId: null, file, reason: 'its name is not a terminal id' });
      continue;
    }
    try {
      const t = home.terminal(id);
      stations.set(id, station.state(id));
      terminals.push(t);
    } catch (e) {
      // home.ts and json-file.ts errors start with the file's path; keep the reason apart.
      if (e instanceof DamagedFileError) damaged.push({ terminalId: id, file: e.file, reason: e.reason });
      else if (e instanceof KmdError && e.code === 'CORRUPT') damaged.push({ terminalId: id, file, reason: e.message.startsWith(`${file}: `) ? e.message.slice(file.length + 2) : e.message });
      else throw e;
    }
  }
  const batches: BatchStatus[] = [];
  for (const t of terminals) {
    const named = new Map(Object.values(stations.get(t.terminalId)!.batches).map((b) => [b.batchId, b]));
    const states = batchStates(t, {
      inOutbox: (b) => outbox.has(`${t.terminalId}-${b.batchId}.qkb`),
      firstUse: (b) => named.get(b.batchId)?.activatedBy === 'first-use',
    });
    for (const b of [...t.batches].sort((x, y) => x.seq - y.seq)) {
      const s: BatchStatus = { terminalId: t.terminalId, batchId: b.batchId, seq: b.seq, bits: b.bits, state: states.get(b.batchId)!, createdAt: b.createdAt };
      if (b.carrierId !== undefined) s.carrierId = b.carrierId;
      if (b.deliveredAt !== undefined) s.deliveredAt = b.deliveredAt;
      if (b.voidedAt !== undefined) s.voidedAt = b.voidedAt;
      if (b.voidReason !== undefined) s.voidReason = b.voidReason;
      batches.push(s);
    }
  }
  return { supply, terminals, batches, damaged };
}

function poolRoom(station: StationKeyStore, terminalId: string): TerminalStatus['station'] {
  try {
    const s = station.status(terminalId);
    return { storedKeyBits: s.storedKeyBits, maxKeyBits: s.maxKeyBits, freeKeyBits: s.maxKeyBits - s.storedKeyBits, batches: s.batches.length + (s.staging ? 1 : 0) };
  } catch (e) {
    // No pool yet: the room it will have (station pools keep the key pool's default size).
    if (e instanceof StationStoreError && e.code === 'NO_TERMINAL') return { storedKeyBits: 0, maxKeyBits: DEFAULT_MAX_KEY_BITS, freeKeyBits: DEFAULT_MAX_KEY_BITS, batches: 0 };
    throw e;
  }
}
