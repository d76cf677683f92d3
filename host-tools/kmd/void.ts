// `qkt kmd void`: retire batches that will never be used (a lost carrier, a zeroized or replaced
// terminal, a stale batch, one an export burned): on the KMD (ledger state void, outbox file
// removed) and in the station store (remaining keys wiped, room freed). docs/batch.md.
import { existsSync, unlinkSync } from 'node:fs';
import { KmdError } from './home.js';
import type { BatchRecord, KmdHome } from './home.js';
import { outboxFile, stationStore } from './export.js';
import { batchStates, IN_USE_STATES } from './batch-state.js';
import { compactTerminal } from './compact.js';
import type { BatchState } from './batch-state.js';
import { StationStoreError } from '../station/store.js';
import type { StationKeyStore } from '../station/store.js';

/** Reasons are short words for the ledger and the audit trail, never free text. */
const REASON_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;

export type VoidStep = 'ledger' | 'outbox' | 'station';

export interface VoidOptions {
  /** One batch: its id, or a unique prefix of at least 8 hex digits. Default: every batch not in use. */
  batch?: string;
  reason?: string;
  /** Void collected or delivered batches too (the terminal holds and uses them). */
  inUse?: boolean;
  /** The station store already open in this process. */
  station?: StationKeyStore;
  /** Called after each step (tests make it throw, as a crash there would stop the void). */
  afterStep?: (step: VoidStep, batchId: string) => void;
}

export interface VoidedBatch {
  batchId: string;
  seq: number;
  bits: number;
  /** Its state before: `void` when an earlier void was cut part way and this one completed it. */
  was: BatchState;
  /** The reason in the ledger (an earlier void's, when this one completed it). */
  reason: string;
  /** Key bits the station wiped (0: none left there, or retired already). */
  stationBits: number;
  /** The sealed batch was still in the outbox and is removed. */
  outboxRemoved: boolean;
}

export interface VoidResult {
  terminalId: string;
  reason: string;
  voided: VoidedBatch[];
  /** Batches the terminal holds and uses, left alone (without `inUse`). */
  kept: Array<{ batchId: string; seq: number; state: BatchState }>;
}

/**
 * Void `terminalId`'s batches, holding the home's lock. Idempotent and crash-safe by its order:
 *
 * 1. ledger: every chosen batch is marked void in the terminal record, in one atomic write. From
 *    here on no carrier load, download or collect uses it;
 * 2. its sealed batch is removed from the outbox;
 * 3. its keys at the station are wiped and its room freed (StationKeyStore.voidBatch).
 *
 * A cut after step 1 leaves void batches with an outbox file or station keys left; every later
 * void of that terminal (with or without `batch`) finishes those steps first. Voiding the station
 * last means a cut never leaves a batch loadable at the KMD whose station keys are gone.
 */
export function voidBatches(home: KmdHome, terminalId: string, o: VoidOptions = {}): VoidResult {
  const reason = o.reason ?? 'unspecified';
  if (!REASON_RE.test(reason)) throw new KmdError(`--reason must be a word of a-z 0-9 - (up to 32), such as lost-carrier, zeroized, stale; got ${JSON.stringify(reason)}`, 'BAD_INPUT');
  if (o.batch !== undefined && !/^[0-9a-f]{8,32}$/.test(o.batch)) throw new KmdError(`--batch must be a batch id or its first 8 or more hex digits (qkt kmd status lists them), got ${JSON.stringify(o.batch)}`, 'BAD_INPUT');
  return home.lockedSync(() => {
    const station = o.station ?? stationStore(home);
    try {
      return voidLocked(home, terminalId, reason, station, o);
    } finally {
      if (!o.station) station.close();
    }
  });
}

function voidLocked(home: KmdHome, terminalId: string, reason: string, station: StationKeyStore, o: VoidOptions): VoidResult {
  const t = home.terminal(terminalId);
  const named = new Map(Object.values(stationNames(station, terminalId)).map((b) => [b.batchId, b]));
  const states = batchStates(t, {
    inOutbox: (b) => existsSync(outboxFile(home, terminalId, b.batchId)),
    firstUse: (b) => named.get(b.batchId)?.activatedBy === 'first-use',
  });
  const stateOf = (b: BatchRecord): BatchState => states.get(b.batchId)!;
  // A void batch with something left behind: an earlier void was cut part way.
  const unfinished = (b: BatchRecord): boolean => b.voidedAt !== undefined && (named.has(b.batchId) || existsSync(outboxFile(home, terminalId, b.batchId)));

  let chosen: BatchRecord[];
  const kept: VoidResult['kept'] = [];
  if (o.batch !== undefined) {
    const hits = t.batches.filter((b) => b.batchId.startsWith(o.batch!));
    if (hits.length !== 1) {
      throw new KmdError(hits.length === 0 ? `terminal ${terminalId} has no batch ${o.batch} (qkt kmd status --home ${home.dir} lists its batches)` : `${o.batch} names ${hits.length} batches of ${terminalId}; give more of its hex digits`, 'NO_BATCH');
    }
    const b = hits[0]!;
    if (IN_USE_STATES.has(stateOf(b)) && !o.inUse) {
      throw new KmdError(
        `batch ${b.batchId.slice(0, 8)} of ${terminalId} is ${stateOf(b)}: the terminal holds it and uses its keys; if the terminal lost them (zeroized, replaced), void it with qkt kmd void --home ${home.dir} --terminal ${terminalId} --batch ${b.batchId.slice(0, 8)} --in-use`,
        'IN_USE',
      );
    }
    chosen = [b];
  } else {
    chosen = [];
    for (const b of t.batches) {
      const s = stateOf(b);
      if (s === 'void' ? unfinished(b) : !IN_USE_STATES.has(s) || o.inUse) chosen.push(b);
      else if (s !== 'void') kept.push({ batchId: b.batchId, seq: b.seq, state: s });
    }
  }
  const was = new Map(chosen.map((b) => [b.batchId, stateOf(b)]));

  // 1. The ledger, for all of them at once.
  const fresh = chosen.filter((b) => b.voidedAt === undefined);
  if (fresh.length > 0) {
    const now = home.nowIso();
    for (const b of fresh) {
      b.voidedAt = now;
      b.voidReason = reason;
    }
    home.saveTerminal(t);
  }
  for (const b of chosen) o.afterStep?.('ledger', b.batchId);

  const out: VoidedBatch[] = [];
  for (const b of chosen) {
    // 2. The outbox.
    const file = outboxFile(home, terminalId, b.batchId);
    const outboxRemoved = existsSync(file);
    if (outboxRemoved) unlinkSync(file);
    o.afterStep?.('outbox', b.batchId);
    // 3. The station.
    let stationBits = 0;
    try {
      stationBits = station.voidBatch(terminalId, b.batchId);
    } catch (e) {
      // Gone already: retired at its last key, by a receipt's live list, or by an earlier void.
      if (!(e instanceof StationStoreError && (e.code === 'UNKNOWN_BATCH' || e.code === 'NO_TERMINAL'))) throw e;
    }
    o.afterStep?.('station', b.batchId);
    out.push({ batchId: b.batchId, seq: b.seq, bits: b.bits, was: was.get(b.batchId)!, reason: b.voidReason ?? reason, stationBits, outboxRemoved });
  }
  // Void batches with nothing left behind are final: keep the record bounded (compact.ts).
  if (out.length > 0) compactTerminal(home, station, terminalId);
  return { terminalId, reason, voided: out, kept };
}

/** The station's names of the terminal's batches (state.json, replaced atomically: read without a lock). */
export function stationNames(station: StationKeyStore, terminalId: string): ReturnType<StationKeyStore['state']>['batches'] {
  return station.state(terminalId).batches;
}
