// Keeps a terminal's record bounded: it is rewritten on every operation, so it must not grow by a
// batch for ever. Full records stay for every batch not yet final; of the final ones (void with
// nothing left behind; collected and since retired at the station, its keys used up) only the
// newest FINAL_KEPT stay, and older ones are folded into per-state counters (`pruned`).
import { existsSync } from 'node:fs';
import type { BatchRecord, KmdHome, PrunedHistory, TerminalRecord } from './home.js';
import { outboxFile } from './export.js';
import type { StationKeyStore } from '../station/store.js';

/** Final batches kept in full per terminal (the newest, by seq): enough to see recent history. */
export const FINAL_KEPT = 64;

export function emptyHistory(): PrunedHistory {
  return { void: { batches: 0, bits: 0 }, collected: { batches: 0, bits: 0 }, acceptedSeq: 0, maxSeq: 0 };
}

/**
 * Fold the terminal's oldest final batches into its counters, holding the home's lock; saves the
 * record only if it changed. Returns how many records were folded.
 */
export function compactTerminal(home: KmdHome, station: StationKeyStore, terminalId: string, keep = FINAL_KEPT): number {
  return home.lockedSync(() => {
    const t = home.terminal(terminalId);
    const named = new Set(Object.values(station.state(terminalId).batches).map((b) => b.batchId));
    // Nothing of it is left anywhere but the ledger: no outbox file, no station name.
    const gone = (b: BatchRecord): boolean => !named.has(b.batchId) && !existsSync(outboxFile(home, terminalId, b.batchId));
    const finalState = (b: BatchRecord): 'void' | 'collected' | undefined => (!gone(b) ? undefined : b.voidedAt !== undefined ? 'void' : b.deliveredAt !== undefined ? 'collected' : undefined);
    const folded = fold(t, finalState, keep);
    if (folded > 0) home.saveTerminal(t);
    return folded;
  });
}

/** The pure part: moves all but the newest `keep` final batches of `t` into `t.pruned`. */
export function fold(t: TerminalRecord, finalState: (b: BatchRecord) => 'void' | 'collected' | undefined, keep: number): number {
  const final = t.batches.filter((b) => finalState(b) !== undefined).sort((x, y) => y.seq - x.seq);
  const out = new Set(final.slice(keep));
  if (out.size === 0) return 0;
  const h = t.pruned ?? emptyHistory();
  for (const b of out) {
    const s = finalState(b)!;
    h[s].batches++;
    h[s].bits += b.bits;
    // The terminal accepted this seq (batch-state.ts): every lower one stays stale after it goes.
    if (b.deliveredAt !== undefined) h.acceptedSeq = Math.max(h.acceptedSeq, b.seq);
    h.maxSeq = Math.max(h.maxSeq, b.seq);
  }
  t.batches = t.batches.filter((b) => !out.has(b));
  t.pruned = h;
  return out.size;
}
