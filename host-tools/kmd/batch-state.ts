// The life of a batch as the KMD sees it (docs/batch.md "Batch states at the KMD"): one rule,
// read from the terminal's record, its outbox and the station, used by `kmd status` and `kmd void`.
// Batches folded out of the record (compact.ts) are final; only their accepted seq matters here.
import type { BatchRecord, TerminalRecord } from './home.js';

export const BATCH_STATES = ['exported', 'on-carrier', 'delivered', 'collected', 'void', 'stale', 'burned'] as const;
export type BatchState = (typeof BATCH_STATES)[number];

/** States whose keys the terminal holds and uses: voiding one needs `--in-use`. */
export const IN_USE_STATES: ReadonlySet<BatchState> = new Set(['delivered', 'collected']);

/** What the KMD knows about a batch beyond its record. */
export interface BatchFacts {
  /** Its sealed batch is in the outbox. */
  inOutbox(b: BatchRecord): boolean;
  /** The station activated it on the terminal's first use (no receipt collected yet). */
  firstUse(b: BatchRecord): boolean;
}

/**
 * The state of each of the terminal's batches, by batchId:
 * - void: `kmd void` retired it (first: whatever else is true, it is never used again);
 * - collected: `kmd collect` verified its receipt;
 * - delivered: the station saw the terminal use it, no receipt collected yet;
 * - stale: not delivered, and a batch with a higher seq was (the terminal's anti-rollback counter
 *   is past it: it would refuse this one as STALE_BATCH);
 * - on-carrier: a carrier took it;
 * - exported: its sealed batch waits in the outbox;
 * - burned: none of those: an export cut after its ledger entry, before its sealed batch was
 *   written (docs/cli.md "Exports are transactions"); it can never be delivered.
 */
export function batchStates(t: TerminalRecord, facts: BatchFacts): Map<string, BatchState> {
  const used = (b: BatchRecord): boolean => b.deliveredAt !== undefined || (b.voidedAt === undefined && facts.firstUse(b));
  // The terminal accepted this seq, so it refuses every lower one.
  const acceptedSeq = Math.max(t.pruned?.acceptedSeq ?? 0, ...t.batches.filter(used).map((b) => b.seq));
  const out = new Map<string, BatchState>();
  for (const b of t.batches) {
    let s: BatchState;
    if (b.voidedAt !== undefined) s = 'void';
    else if (b.deliveredAt !== undefined) s = 'collected';
    else if (facts.firstUse(b)) s = 'delivered';
    else if (b.seq < acceptedSeq) s = 'stale';
    else if (b.carrierId !== undefined) s = 'on-carrier';
    else if (facts.inOutbox(b)) s = 'exported';
    else s = 'burned';
    out.set(b.batchId, s);
  }
  return out;
}
