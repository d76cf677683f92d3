// KMD exports: take fresh key bits from the supply, seal them for one terminal (docs/batch.md),
// put the matching keys into the station store (pre-application mode, inactive), and park the
// sealed batch in the outbox until a carrier takes it. Plaintext keys are wiped after use. An
// export is a transaction under the home's lock (exportBatches).
import { existsSync, readFileSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sealBatch, DEFAULT_CHUNK_SIZE } from '../../firmware/crypto/batch.js';
import type { Purpose } from '../../firmware/crypto/batch.js';
import { writeFileAtomic } from '../fs-atomic.js';
import type { StationKeyStore } from '../station/store.js';
import { openStationStore } from '../station/open-store.js';
import { KmdError } from './home.js';
import type { BatchRecord, KmdHome, TerminalRecord } from './home.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { SupplyExhaustedError } from './supply.js';
import { formatBits } from '../units.js';
import { batchStates, IN_USE_STATES } from './batch-state.js';
import { InputError } from '../input-error.js';

/** The station has no room: `inUseOnly` when all of it is held by batches the terminal uses (only `--in-use` or time frees it). */
export class NoRoomError extends KmdError {
  constructor(
    message: string,
    readonly inUseOnly: boolean,
  ) {
    super(message, 'NO_ROOM');
  }
}

export interface ExportedBatch {
  record: BatchRecord;
  terminalId: string;
  /** The sealed batch file in the outbox. */
  file: string;
}

/**
 * Remove temp files a killed writer left in the outbox (`.NAME.tmp-PID`, fs-atomic.ts). The
 * caller holds the home's lock, and every outbox writer does too: none is mid-write now.
 */
function sweepOutboxTemps(home: KmdHome): void {
  const dir = home.path('outbox');
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) if (name.startsWith('.') && /\.tmp-\d+$/.test(name)) rmSync(join(dir, name), { force: true });
}

export function outboxFile(home: KmdHome, terminalId: string, batchIdHex: string): string {
  return home.path('outbox', `${terminalId}-${batchIdHex}.qkb`);
}

export function stationStore(home: KmdHome): StationKeyStore {
  return openStationStore(home.path('station'));
}

/** Create one sealed batch of `bits` for `terminalId` (exportBatches with one terminal). */
export function exportBatch(home: KmdHome, terminalId: string, bits: number, o: { purpose?: Purpose; station?: StationKeyStore } = {}): ExportedBatch {
  return exportBatches(home, [terminalId], bits, o)[0]!;
}

function checkBits(bits: number): void {
  if (!Number.isSafeInteger(bits) || bits <= 0 || bits % 8 !== 0 || bits > 2 ** 23) {
    throw new InputError(`--bits must be a multiple of 8 from 8 to 8388608 (8 Mbit), got ${bits}`);
  }
}

/**
 * Export one sealed batch of `bits` for each terminal, as a transaction, holding the home's lock:
 *
 * 1. everything that can refuse is checked before anything is spent: enrolment, the supply
 *    (enough for all of them), and room in each terminal's station pool, reserved (staged) there;
 *    a refusal cancels the reservations made and leaves supply, sequence numbers and outbox as
 *    they were (KmdError SUPPLY or NO_ROOM);
 * 2. then per terminal, ledger first: the supply range and the seq are spent on disk (supply.json,
 *    the terminal record) before the keys go into the station's reserved room and the sealed batch
 *    into the outbox. A crash after that burns the batch (its seq is never handed out again); a
 *    crash before it leaves only a staged reservation, dropped by the next export.
 */
export function exportBatches(home: KmdHome, terminalIds: readonly string[], bits: number, o: { purpose?: Purpose; station?: StationKeyStore } = {}): ExportedBatch[] {
  checkBits(bits);
  const twice = terminalIds.find((id, i) => terminalIds.indexOf(id) !== i);
  if (twice !== undefined) throw new InputError(`terminal ${twice} is named twice; one batch per terminal and export`);
  return home.lockedSync(() => {
    sweepOutboxTemps(home);
    const terminals = terminalIds.map((id) => home.terminal(id));
    const supply = home.supply();
    const avail = supply.availableBits();
    const need = bits * terminals.length;
    if (need > avail) {
      const secs = Math.ceil((need - avail) / supply.rateBitsPerSecond);
      const whom = terminalIds.length === 1 ? terminalIds[0]! : `${terminalIds.length} terminals`;
      throw new KmdError(`not enough key yet for ${whom}: ${avail} bits available, ${need} needed (about ${secs} s more at ${supply.rateBitsPerSecond} bit/s)`, 'SUPPLY');
    }
    const station = o.station ?? stationStore(home);
    const purpose = o.purpose ?? 'any';
    const plans = terminals.map((t) => {
      // The batch id's first 4 bytes name the batch in the pools: unique per terminal.
      let batchId: Uint8Array;
      do batchId = new Uint8Array(randomBytes(16));
      while (t.batches.some((b) => b.batchId.slice(0, 8) === Buffer.from(batchId).toString('hex').slice(0, 8)));
      return { t, batchId, seq: t.nextSeq };
    });
    let reserved = 0;
    let done = 0;
    try {
      for (const p of plans) {
        try {
          station.reserve(p.t.terminalId, { batchId: p.batchId, seq: p.seq, purpose, bits });
        } catch (e) {
          if (e instanceof PoolError) {
            const full = e.code === 'NO_SPACE' || e.code === 'TOO_MANY_BATCHES' || e.code === 'WORN_OUT';
            const why = full ? `has no room for a ${formatBits(bits)} batch` : 'refuses the batch';
            const inUseOnly = full && roomHeldInUse(home, station, p.t);
            const id = p.t.terminalId;
            const fix = !full
              ? ''
              : inUseOnly
                ? `; its room holds only batches ${id} holds and uses (collected or delivered): it frees as the terminal uses them up, or, if it lost them (zeroized, replaced): qkt kmd void --home ${home.dir} --terminal ${id} --in-use`
                : `; to free room: qkt kmd void --home ${home.dir} --terminal ${id} (batches never to be used), or qkt kmd collect (receipts retire used-up ones)`;
            throw new NoRoomError(`the station's key pool for ${id} ${why} (${e.code}: ${e.message}); nothing was spent${fix}`, inUseOnly);
          }
          throw e;
        }
        reserved++;
      }
      const out: ExportedBatch[] = [];
      for (const p of plans) {
        out.push(commitOne(home, supply, station, p, bits, purpose));
        done++;
      }
      return out;
    } finally {
      // Reservations not filled (a refusal, or a failure part way: that batch is burned) are dropped.
      for (const p of plans.slice(done, reserved)) {
        try {
          station.cancel(p.t.terminalId, p.batchId);
        } catch {
          // the next export on that pool drops a reservation left behind
        }
      }
      if (!o.station) station.close();
    }
  });
}

function commitOne(home: KmdHome, supply: ReturnType<KmdHome['supply']>, station: StationKeyStore, p: { t: TerminalRecord; batchId: Uint8Array; seq: number }, bits: number, purpose: Purpose): ExportedBatch {
  const { t, batchId } = p;
  const batchIdHex = Buffer.from(batchId).toString('hex');
  let supplied;
  try {
    supplied = supply.take(bits, `terminal ${t.terminalId} batch ${batchIdHex}`);
  } catch (e) {
    if (e instanceof SupplyExhaustedError) throw new KmdError(`not enough key yet for ${t.terminalId}: ${e.availableBits} bits available, ${e.wantedBits} needed`, 'SUPPLY');
    throw e;
  }
  const keys = supplied.key;
  const deviceKey = home.deviceKey(t.terminalId);
  const record: BatchRecord = { batchId: batchIdHex, seq: p.seq, bits, purpose, supplyOffset: supplied.supplyOffset, createdAt: home.nowIso() };
  try {
    // Ledger first: the seq and supply range are spent even if a crash follows (fail toward burning).
    t.nextSeq = p.seq + 1;
    t.batches.push(record);
    home.saveTerminal(t);
    const header = { batchId, terminalId: t.terminalId, seq: record.seq, purpose, bits, chunkSize: DEFAULT_CHUNK_SIZE, createdAt: Date.parse(record.createdAt) };
    station.fill(t.terminalId, batchId, keys);
    const sealed = sealBatch({ deviceKey, header, keys });
    const file = outboxFile(home, t.terminalId, batchIdHex);
    writeFileAtomic(file, sealed, 0o600);
    return { record, terminalId: t.terminalId, file };
  } finally {
    keys.fill(0);
    deviceKey.fill(0);
  }
}

/**
 * True if every batch of the terminal that holds room at the station is one the terminal holds and
 * uses (collected, delivered): then no plain `kmd void` or `kmd collect` frees anything.
 */
function roomHeldInUse(home: KmdHome, station: StationKeyStore, t: TerminalRecord): boolean {
  const named = new Map(Object.values(station.state(t.terminalId).batches).map((b) => [b.batchId, b]));
  const states = batchStates(t, {
    inOutbox: (b) => existsSync(outboxFile(home, t.terminalId, b.batchId)),
    firstUse: (b) => named.get(b.batchId)?.activatedBy === 'first-use',
  });
  const holding = t.batches.filter((b) => named.has(b.batchId));
  return holding.length > 0 && holding.every((b) => IN_USE_STATES.has(states.get(b.batchId)!));
}

/** Sealed batches in the outbox that no carrier has taken yet, oldest first. */
export function outbox(home: KmdHome, terminalId?: string): ExportedBatch[] {
  const ids = terminalId ? [terminalId] : home.terminalIds();
  const out: ExportedBatch[] = [];
  for (const id of ids) {
    for (const r of home.terminal(id).batches) {
      const file = outboxFile(home, id, r.batchId);
      // A void batch's file is left only by a void cut part way (the next void removes it): never load it.
      if (!r.carrierId && !r.voidedAt && existsSync(file)) out.push({ record: r, terminalId: id, file });
    }
  }
  return out.sort((a, b) => a.record.seq - b.record.seq);
}

export function readOutbox(e: ExportedBatch): Uint8Array {
  return new Uint8Array(readFileSync(e.file));
}

/** A carrier has the batch now: note which, and drop it from the outbox (holding the home's lock). */
export function markOnCarrier(home: KmdHome, terminalId: string, batchIdHex: string, carrierId: string): void {
  home.lockedSync(() => {
    const t = home.terminal(terminalId);
    const r = t.batches.find((b) => b.batchId === batchIdHex);
    if (!r) throw new KmdError(`batch ${batchIdHex} is not a batch of ${terminalId}`, 'CORRUPT');
    r.carrierId = carrierId;
    home.saveTerminal(t);
    const file = outboxFile(home, terminalId, batchIdHex);
    if (existsSync(file)) unlinkSync(file);
  });
}
