// `qkt kmd status`: what a KMD home holds: its key supply, its terminals (device key generation,
// next seq, room at the station) and every batch with its state (batch-state.ts). Read only.
//
// Locking: the ledger (supply.json, terminals/*.json, the outbox listing, the station's
// state.json names) is read holding the home's lock, for the milliseconds those reads take, so it
// is one consistent snapshot; a status never holds the lock while it reads station pool images.
// It waits for the lock only briefly (`lockWaitMs`, default 1 s): behind a long carrier load it
// reads without the lock and says so (`consistent: false`, `writer`), rather than wait for it.
import { existsSync, readdirSync } from 'node:fs';
import { homeLockOptions } from './home.js';
import type { KmdHome, TerminalRecord } from './home.js';
import { stationStore } from './export.js';
import { BATCH_STATES, batchStates } from './batch-state.js';
import type { BatchState } from './batch-state.js';
import { LockBusyError, lockSync } from '../lock.js';
import type { Lock } from '../lock.js';
import { StationStoreError } from '../station/store.js';
import { DEFAULT_MAX_KEY_BITS } from '../../firmware/keypool/key-pool.js';
import type { StationStore } from '../station/store.js';

export interface KmdStatus {
  kmdId: string;
  home: string;
  /** The ledger was read holding the home's lock (false: another process held it throughout the wait). */
  consistent: boolean;
  /** Who held the home's lock when it was read without it. */
  writer: { pid: number; command: string; since: string } | null;
  supply: { availableBits: number; rateBitsPerSecond: number; takenBits: number; capacityBits: number };
  terminals: TerminalStatus[];
  batches: BatchStatus[];
  /** Per state, how many batches and their key bits. */
  totals: Record<BatchState, { batches: number; bits: number }>;
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

export function kmdStatus(home: KmdHome, o: { lockWaitMs?: number; station?: StationStore } = {}): KmdStatus {
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
    const terminals = ledger.terminals.map((t): TerminalStatus => ({
      terminalId: t.terminalId,
      enrolledAt: t.enrolledAt,
      generation: t.generation ?? 1,
      nextSeq: t.nextSeq,
      station: poolRoom(station, t.terminalId),
    }));
    const totals = Object.fromEntries(BATCH_STATES.map((s) => [s, { batches: 0, bits: 0 }])) as KmdStatus['totals'];
    for (const b of ledger.batches) {
      totals[b.state].batches++;
      totals[b.state].bits += b.bits;
    }
    return { kmdId: home.config.kmdId, home: home.dir, consistent: held !== undefined, writer, supply: ledger.supply, terminals, batches: ledger.batches, totals };
  } finally {
    if (!o.station) station.close();
  }
}

function readLedger(home: KmdHome, station: StationStore): { supply: KmdStatus['supply']; terminals: TerminalRecord[]; batches: BatchStatus[] } {
  const supply = home.supply().account();
  const outbox = new Set(existsSync(home.path('outbox')) ? readdirSync(home.path('outbox')) : []);
  const terminals = home.terminalIds().map((id) => home.terminal(id));
  const batches: BatchStatus[] = [];
  for (const t of terminals) {
    const named = new Map(Object.values(station.state(t.terminalId).batches).map((b) => [b.batchId, b]));
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
  return { supply, terminals, batches };
}

function poolRoom(station: StationStore, terminalId: string): TerminalStatus['station'] {
  try {
    const s = station.status(terminalId);
    return { storedKeyBits: s.storedKeyBits, maxKeyBits: s.maxKeyBits, freeKeyBits: s.maxKeyBits - s.storedKeyBits, batches: s.batches.length + (s.staging ? 1 : 0) };
  } catch (e) {
    // No pool yet: the room it will have (station pools keep the key pool's default size).
    if (e instanceof StationStoreError && e.code === 'NO_TERMINAL') return { storedKeyBits: 0, maxKeyBits: DEFAULT_MAX_KEY_BITS, freeKeyBits: DEFAULT_MAX_KEY_BITS, batches: 0 };
    throw e;
  }
}
