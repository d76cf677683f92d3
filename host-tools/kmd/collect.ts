// `qkt kmd collect`: the carrier brings delivery receipts back; each is verified under the
// terminal's device key, the batch is marked delivered, the station's matching keys become active
// and the carrier wipes the batch's ciphertext. A receipt that does not verify activates nothing:
// the carrier quarantines it and offers the batch (whose ciphertext it kept) again.
import { decodeReceipt, verifyReceipt } from '../../firmware/crypto/receipt.js';
import { isId } from './home.js';
import type { Carrier } from '../carrier/carrier.js';
import type { KmdHome } from './home.js';
import { stationStore } from './export.js';
import { compactTerminal } from './compact.js';
import { StationStoreError } from '../station/store.js';
import type { StationKeyStore } from '../station/store.js';

export interface CollectResult {
  carrierId: string;
  collected: Array<{ terminalId: string; batchId: string; seq: number; bits: number }>;
  /**
   * Receipts that are no proof. `quarantined`: the carrier moved the receipt aside and offers the
   * batch again (a false receipt: wrong MAC, or a terminal this KMD does not know).
   */
  rejected: Array<{ id: string; reason: string; quarantined: boolean }>;
  activatedBits: number;
  /** Station batches retired because a receipt showed the terminal no longer holds them. */
  retired: Array<{ terminalId: string; batchId: string; bits: number }>;
}

/**
 * Holds the home's lock (terminal records change); the station's pools are changed under their
 * own locks, per operation. `o.station`: the station store already open in this process.
 *
 * Order, so a cut anywhere is finished by running collect again: the KMD's records and the
 * station first (both idempotent per batch), then the carrier's `collected` line, then the wipe
 * (finished by the carrier's scan if cut). A false receipt is journalled `rejected` on the carrier
 * before it is moved to quarantine (the move is finished by the carrier's scan if cut).
 */
export function collectReceipts(home: KmdHome, carrier: Carrier, o: { station?: StationKeyStore } = {}): CollectResult {
  return home.lockedSync(() => collectLocked(home, carrier, o));
}

function collectLocked(home: KmdHome, carrier: Carrier, o: { station?: StationKeyStore }): CollectResult {
  const station = o.station ?? stationStore(home);
  const result: CollectResult = { carrierId: carrier.carrierId, collected: [], rejected: [], activatedBits: 0, retired: [] };
  const done: string[] = [];
  const quarantine = (id: string, reason: string) => {
    carrier.rejectReceipt(id, reason);
    result.rejected.push({ id, reason, quarantined: true });
  };
  try {
    for (const entry of carrier.receipts()) {
      let receipt;
      try {
        receipt = decodeReceipt(entry.receipt);
      } catch (e) {
        result.rejected.push({ id: entry.id, reason: `unreadable receipt: ${(e as Error).message}`, quarantined: false });
        continue;
      }
      // The id comes from a carrier file: checked before it names a file in this home.
      if (!isId(receipt.terminalId)) {
        quarantine(entry.id, 'the receipt names no valid terminal id');
        continue;
      }
      if (!home.hasTerminal(receipt.terminalId)) {
        quarantine(entry.id, `terminal ${receipt.terminalId} is not enrolled at this KMD`);
        continue;
      }
      const key = home.deviceKey(receipt.terminalId);
      const ok = verifyReceipt(key, receipt);
      key.fill(0);
      if (!ok) {
        quarantine(entry.id, 'receipt MAC does not verify');
        continue;
      }
      const batchIdHex = Buffer.from(receipt.batchId).toString('hex');
      const t = home.terminal(receipt.terminalId);
      const rec = t.batches.find((b) => b.batchId === batchIdHex && b.seq === receipt.seq);
      if (!rec) {
        // Authentic (the MAC verified), so the terminal did take it: kept, never offered again.
        // Its ciphertext on the carrier is spent: wiped like a collected one's.
        const folded = t.pruned !== undefined && receipt.seq <= t.pruned.maxSeq && receipt.seq < t.nextSeq;
        const reason = folded
          ? `batch ${batchIdHex} of ${receipt.terminalId} (seq ${receipt.seq}) is final at this KMD (void, or used up and retired) and folded into its record's counters: nothing to activate`
          : `batch ${batchIdHex} was not exported by this KMD`;
        result.rejected.push({ id: entry.id, reason, quarantined: false });
        done.push(entry.id);
        continue;
      }
      if (rec.voidedAt) {
        // `kmd void` said it would never be used, and its station keys are gone: nothing to activate.
        result.rejected.push({ id: entry.id, reason: `batch ${batchIdHex} of ${receipt.terminalId} was voided (${rec.voidReason ?? 'unspecified'}); it came back after all, but its station keys are gone: what the terminal sends under it will not open at the station`, quarantined: false });
        done.push(entry.id);
        continue;
      }
      if (!rec.deliveredAt) {
        rec.deliveredAt = home.nowIso();
        home.saveTerminal(t);
      }
      try {
        if (station.activate(receipt.terminalId, batchIdHex, 'receipt')) result.activatedBits += rec.bits;
      } catch (e) {
        // A receipt collected late: the station already retired that batch (its keys used up,
        // or voided by a newer receipt). Delivery is still proven; there is nothing to activate.
        if (!(e instanceof StationStoreError && e.code === 'UNKNOWN_BATCH')) throw e;
      }
      if (receipt.live) {
        // Authenticated by the MAC just checked: what the terminal no longer holds, the station retires.
        const live = new Set(receipt.live.map((id) => Buffer.from(id).toString('hex')));
        for (const r of station.retireAbsent(receipt.terminalId, receipt.seq, live)) result.retired.push({ terminalId: receipt.terminalId, ...r });
      }
      result.collected.push({ terminalId: receipt.terminalId, batchId: batchIdHex, seq: rec.seq, bits: rec.bits });
      done.push(entry.id);
    }
    carrier.markCollected(done);
    // Batches the station retired (used up) are final now: keep the records bounded (compact.ts).
    for (const id of new Set([...result.collected, ...result.retired].map((c) => c.terminalId))) compactTerminal(home, station, id);
  } finally {
    if (!o.station) station.close();
  }
  return result;
}
