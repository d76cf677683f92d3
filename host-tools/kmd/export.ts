// KMD exports: take fresh key bits from the supply, seal them for one terminal (docs/batch.md),
// put the matching keys into the station store (pre-application mode, inactive), and park the
// sealed batch in the outbox until a carrier takes it. Plaintext keys are wiped after use.
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { sealBatch, DEFAULT_CHUNK_SIZE } from '../../firmware/crypto/batch.js';
import type { Purpose } from '../../firmware/crypto/batch.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { StationStore } from '../station/store.js';
import { KmdError } from './home.js';
import type { BatchRecord, KmdHome } from './home.js';
import { SupplyExhaustedError } from './supply.js';

export interface ExportedBatch {
  record: BatchRecord;
  terminalId: string;
  /** The sealed batch file in the outbox. */
  file: string;
}

function outboxFile(home: KmdHome, terminalId: string, batchIdHex: string): string {
  return home.path('outbox', `${terminalId}-${batchIdHex}.qkb`);
}

export function stationStore(home: KmdHome): StationStore {
  return new StationStore(home.path('station'));
}

/** Create one sealed batch of `bits` for `terminalId`. */
export function exportBatch(home: KmdHome, terminalId: string, bits: number, o: { purpose?: Purpose; station?: StationStore } = {}): ExportedBatch {
  if (!Number.isSafeInteger(bits) || bits <= 0 || bits % 8 !== 0 || bits > 2 ** 23) {
    throw new RangeError(`--bits must be a multiple of 8 from 8 to 8388608 (8 Mbit), got ${bits}`);
  }
  const t = home.terminal(terminalId);
  const supply = home.supply();
  // The batch id's first 4 bytes name the batch in the pools: unique per terminal.
  let batchId: Uint8Array;
  do batchId = new Uint8Array(randomBytes(16));
  while (t.batches.some((b) => b.batchId.slice(0, 8) === Buffer.from(batchId).toString('hex').slice(0, 8)));
  const batchIdHex = Buffer.from(batchId).toString('hex');
  let supplied;
  try {
    supplied = supply.take(bits, `terminal ${terminalId} batch ${batchIdHex}`);
  } catch (e) {
    if (e instanceof SupplyExhaustedError) {
      const secs = Math.ceil((e.wantedBits - e.availableBits) / supply.rateBitsPerSecond);
      throw new KmdError(`not enough key yet for ${terminalId}: ${e.availableBits} bits available, ${e.wantedBits} needed (about ${secs} s more at ${supply.rateBitsPerSecond} bit/s)`, 'SUPPLY');
    }
    throw e;
  }
  const keys = supplied.key;
  const deviceKey = home.deviceKey(terminalId);
  const station = o.station ?? stationStore(home);
  const record: BatchRecord = {
    batchId: batchIdHex,
    seq: t.nextSeq,
    bits,
    purpose: o.purpose ?? 'any',
    supplyOffset: supplied.supplyOffset,
    createdAt: home.nowIso(),
  };
  try {
    // Ledger first: the seq and supply range are spent even if a crash follows (fail toward burning).
    t.nextSeq++;
    t.batches.push(record);
    home.saveTerminal(t);
    const header = { batchId, terminalId, seq: record.seq, purpose: record.purpose, bits, chunkSize: DEFAULT_CHUNK_SIZE, createdAt: Date.parse(record.createdAt) };
    const sealed = sealBatch({ deviceKey, header, keys });
    station.addBatch(terminalId, header, keys);
    const file = outboxFile(home, terminalId, batchIdHex);
    writeFileAtomic(file, sealed, 0o600);
    return { record, terminalId, file };
  } finally {
    keys.fill(0);
    deviceKey.fill(0);
    if (!o.station) station.close();
  }
}

/** Sealed batches in the outbox that no carrier has taken yet, oldest first. */
export function outbox(home: KmdHome, terminalId?: string): ExportedBatch[] {
  const ids = terminalId ? [terminalId] : home.terminalIds();
  const out: ExportedBatch[] = [];
  for (const id of ids) {
    for (const r of home.terminal(id).batches) {
      const file = outboxFile(home, id, r.batchId);
      if (!r.carrierId && existsSync(file)) out.push({ record: r, terminalId: id, file });
    }
  }
  return out.sort((a, b) => a.record.seq - b.record.seq);
}

export function readOutbox(e: ExportedBatch): Uint8Array {
  return new Uint8Array(readFileSync(e.file));
}

/** A carrier has the batch now: note which, and drop it from the outbox. */
export function markOnCarrier(home: KmdHome, terminalId: string, batchIdHex: string, carrierId: string): void {
  const t = home.terminal(terminalId);
  const r = t.batches.find((b) => b.batchId === batchIdHex);
  if (!r) throw new KmdError(`batch ${batchIdHex} is not a batch of ${terminalId}`, 'CORRUPT');
  r.carrierId = carrierId;
  home.saveTerminal(t);
  const file = outboxFile(home, terminalId, batchIdHex);
  if (existsSync(file)) unlinkSync(file);
}
