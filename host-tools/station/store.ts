// The master station's key store (pre-application mode): per terminal, a key pool holding the
// same keys the terminal's batch holds, under the same key ids. It runs the firmware's power-safe
// KeyPool on a file-backed flash image, so the station never serves a key twice either. A batch
// is inactive until its delivery is proven (a verified receipt, or the terminal's first use).
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { KeyPool } from '../../firmware/keypool/key-pool.js';
import type { ConsumedKey, PoolStatus, Purpose } from '../../firmware/keypool/key-pool.js';
import { poolBatchId } from '../../firmware/commands/inject.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { writeFileAtomic } from '../fs-atomic.js';

/** Same layout as a terminal module's pool (secure area left unused), so capacities agree. */
const STATION_POOL = { secureSectors: 4 };

interface StationState {
  /** poolId -> full batch id and activation. */
  batches: Record<string, { batchId: string; seq: number; bits: number; active: boolean; activatedBy?: 'receipt' | 'first-use' }>;
}

export class StationStoreError extends Error {
  constructor(
    message: string,
    readonly code: 'INACTIVE' | 'UNKNOWN_BATCH' | 'NO_TERMINAL',
  ) {
    super(message);
    this.name = 'StationStoreError';
  }
}

export class StationStore {
  private readonly pools = new Map<string, { flash: NorFlash; pool: KeyPool }>();
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  terminals(): string[] {
    return readdirSync(this.dir).filter((d) => existsSync(join(this.dir, d, 'pool.img'))).sort();
  }

  private statePath(terminalId: string): string {
    return join(this.dir, terminalId, 'state.json');
  }

  state(terminalId: string): StationState {
    const p = this.statePath(terminalId);
    return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as StationState) : { batches: {} };
  }

  private saveState(terminalId: string, s: StationState): void {
    writeFileAtomic(this.statePath(terminalId), JSON.stringify(s, null, 2) + '\n');
  }

  /** The terminal's pool, formatted on first use (the station's image is created by the KMD). */
  pool(terminalId: string, create = false): KeyPool {
    const open = this.pools.get(terminalId);
    if (open) return open.pool;
    const dir = join(this.dir, terminalId);
    const img = join(dir, 'pool.img');
    if (!existsSync(img) && !create) throw new StationStoreError(`the station holds no keys for terminal ${terminalId}`, 'NO_TERMINAL');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fresh = !existsSync(img);
    const flash = NorFlash.open(img);
    const pool = fresh ? KeyPool.format(flash, STATION_POOL) : KeyPool.mount(flash, STATION_POOL);
    this.pools.set(terminalId, { flash, pool });
    return pool;
  }

  /** Pre-application: put a batch's keys in, inactive. Atomic like the terminal's own append. */
  addBatch(terminalId: string, h: { batchId: Uint8Array; seq: number; purpose: Purpose; bits: number }, keys: Uint8Array): void {
    const pool = this.pool(terminalId, true);
    const poolId = poolBatchId(h.batchId);
    const st = this.state(terminalId);
    st.batches[String(poolId)] = { batchId: Buffer.from(h.batchId).toString('hex'), seq: h.seq, bits: h.bits, active: false };
    this.saveState(terminalId, st); // mapping first: a batch in the pool is always named
    const stage = pool.stage({ batchId: poolId, seq: h.seq, purpose: h.purpose, bits: h.bits });
    for (let off = 0; off < keys.length; off += 4096) stage.write(off, keys.subarray(off, Math.min(keys.length, off + 4096)));
    stage.commit();
    this.prune(terminalId);
  }

  /**
   * Forget the names of batches the pool no longer holds (retired at their last key, or
   * voided): state.json stays as small as the pool's live batches, over any service life.
   */
  private prune(terminalId: string): void {
    const st = this.pool(terminalId).status();
    const live = new Set([...st.batches.map((b) => String(b.batchId)), ...(st.staging ? [String(st.staging.batchId)] : [])]);
    const s = this.state(terminalId);
    const gone = Object.keys(s.batches).filter((k) => !live.has(k));
    if (gone.length === 0) return;
    for (const k of gone) delete s.batches[k];
    this.saveState(terminalId, s);
  }

  /**
   * A verified version 2 receipt lists every batch the terminal still holds. A batch the station
   * holds for it with a lower seq that is not listed is gone from the terminal for good (used up,
   * its crumbs or a lost last message burned, or never delivered and now stale): void it here.
   * Returns what was voided.
   */
  retireAbsent(terminalId: string, belowSeq: number, liveHex: ReadonlySet<string>): Array<{ batchId: string; bits: number }> {
    if (!existsSync(join(this.dir, terminalId, 'pool.img'))) return [];
    const out: Array<{ batchId: string; bits: number }> = [];
    for (const b of Object.values(this.state(terminalId).batches).sort((x, y) => x.seq - y.seq)) {
      if (b.seq >= belowSeq || liveHex.has(b.batchId)) continue;
      out.push({ batchId: b.batchId, bits: this.voidBatch(terminalId, b.batchId) });
    }
    return out;
  }

  /**
   * Retire a batch whose keys will never be used (a lost carrier, a zeroized terminal, a last
   * message lost to a power cut): its remaining keys are wiped and its slot comes back. Returns
   * the bits wiped. The library side of `qkt kmd void`.
   */
  voidBatch(terminalId: string, batchIdHex: string): number {
    const e = Object.entries(this.state(terminalId).batches).find(([, b]) => b.batchId === batchIdHex);
    if (!e) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
    let bits = 0;
    try {
      bits = this.pool(terminalId).discardBatch(Number(e[0]));
    } catch (err) {
      if (!(err instanceof PoolError && err.code === 'NOT_PRESENT')) throw err; // already retired: only its name is left
    }
    this.prune(terminalId);
    return bits;
  }

  activate(terminalId: string, batchIdHex: string, by: 'receipt' | 'first-use'): boolean {
    const st = this.state(terminalId);
    const e = Object.values(st.batches).find((b) => b.batchId === batchIdHex);
    if (!e) throw new StationStoreError(`batch ${batchIdHex} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
    if (e.active) return false;
    e.active = true;
    e.activatedBy = by;
    this.saveState(terminalId, st);
    return true;
  }

  /** Full 16-byte batch id and activation for the pool's u32 id. */
  batch(terminalId: string, batchId: Uint8Array): { active: boolean; poolId: number } {
    const poolId = poolBatchId(batchId);
    const e = this.state(terminalId).batches[String(poolId)];
    if (!e || e.batchId !== Buffer.from(batchId).toString('hex')) {
      throw new StationStoreError(`batch ${Buffer.from(batchId).toString('hex')} of terminal ${terminalId} is not in the station store`, 'UNKNOWN_BATCH');
    }
    return { active: e.active, poolId };
  }

  /** Take exactly the named key (never twice), from an active batch or, with `allowInactive`, any. */
  takeById(terminalId: string, batchId: Uint8Array, bitOffset: number, bytes: number, allowInactive = false): ConsumedKey {
    const b = this.batch(terminalId, batchId);
    if (!b.active && !allowInactive) throw new StationStoreError(`batch ${Buffer.from(batchId).toString('hex')} is not active yet (no receipt)`, 'INACTIVE');
    return this.pool(terminalId).consumeById({ batchId: b.poolId, bitOffset }, bytes);
  }

  status(terminalId: string): PoolStatus & { active: string[]; inactive: string[] } {
    const s = this.pool(terminalId).status();
    const st = this.state(terminalId);
    const list = Object.values(st.batches);
    return { ...s, active: list.filter((b) => b.active).map((b) => b.batchId), inactive: list.filter((b) => !b.active).map((b) => b.batchId) };
  }

  close(): void {
    for (const { flash } of this.pools.values()) flash.close();
    this.pools.clear();
  }
}
