// The KMD's key supply: a model of the QKD link that feeds it, at a fixed rate (the paper's
// 11 kbit/s by default). Behind an interface so a physical QKD link model can replace it. Every
// bit handed out is accounted, so the same key bits never go to two consumers or twice to one.
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../fs-atomic.js';
import { DamagedFileError, readJsonFile } from '../json-file.js';

export interface KeySupply {
  /** Key bits available to take now. */
  availableBits(): number;
  /**
   * Take `bits` fresh key bits (a positive multiple of 8) for `consumer` (e.g. "terminal T1 batch
   * 3", "sae A->B"). Throws SupplyExhaustedError, changing nothing, when not enough has accrued.
   */
  take(bits: number, consumer: string): SuppliedKey;
}

export interface SuppliedKey {
  /** Where in the supply's output stream these bits sit: [offset, offset + bits). */
  supplyOffset: number;
  key: Uint8Array;
}

export class SupplyExhaustedError extends Error {
  constructor(
    readonly wantedBits: number,
    readonly availableBits: number,
  ) {
    super(`key supply has ${availableBits} bits, ${wantedBits} wanted`);
    this.name = 'SupplyExhaustedError';
  }
}

interface SupplyState {
  rateBitsPerSecond: number;
  startedAtMs: number;
  /** Key bits handed out so far (the sum of every take): what consumers got, nothing else. */
  takenBits: number;
  /**
   * Where the next take starts in the link's output stream: takenBits plus the bits the link
   * dropped while the buffer was full (older than capacityBits), which nobody got. Absent in
   * files from before it: then takenBits was this position (and counted dropped bits too).
   */
  offsetBits?: number;
  /** Most key material the KMD buffers (older bits beyond this are not kept). */
  capacityBits: number;
}

/**
 * Fixed-rate QKD link model, state in a JSON file of the KMD home. Key bits accrue at `rate` from
 * `startedAt`, up to `capacity`; a take is committed to disk (atomically) before the key is
 * returned, so a crash can lose bits but never hand the same bits out again.
 */
export class FixedRateSupply implements KeySupply {
  constructor(
    private readonly path: string,
    private readonly now: () => number = Date.now,
    private readonly random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n)),
  ) {
    void this.state; // fail early on a missing or corrupt file
  }

  /** Read from disk on every use: several users of one KMD home (the ETSI API, the download
   * interface, the CLI) share the account, and none may hand out bits another already took. */
  private get state(): Required<SupplyState> {
    const s = readJsonFile(this.path, 64 * 1024) as SupplyState | undefined;
    if (s === undefined) throw new DamagedFileError(this.path, 'missing');
    for (const k of ['rateBitsPerSecond', 'startedAtMs', 'takenBits', 'capacityBits'] as const) {
      if (typeof s !== 'object' || s === null || typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new DamagedFileError(this.path, `not a supply account (${k})`);
    }
    return { ...s, offsetBits: s.offsetBits ?? s.takenBits };
  }

  static create(path: string, o: { rateBitsPerSecond: number; capacityBits?: number; startedAtMs?: number }): void {
    const state: SupplyState = {
      rateBitsPerSecond: o.rateBitsPerSecond,
      startedAtMs: o.startedAtMs ?? Date.now(),
      takenBits: 0,
      offsetBits: 0,
      capacityBits: o.capacityBits ?? 2 ** 30,
    };
    writeFileAtomic(path, JSON.stringify(state, null, 2) + '\n');
  }

  get rateBitsPerSecond(): number {
    return this.state.rateBitsPerSecond;
  }

  /** Bits produced by the link so far. */
  producedBits(): number {
    const secs = Math.max(0, this.now() - this.state.startedAtMs) / 1000;
    return Math.floor(secs * this.state.rateBitsPerSecond);
  }

  /** The account as it stands: for `kmd status` (takenBits: key handed out, dropped bits not counted). */
  account(): { rateBitsPerSecond: number; takenBits: number; capacityBits: number; availableBits: number } {
    const s = this.state;
    return { rateBitsPerSecond: s.rateBitsPerSecond, takenBits: s.takenBits, capacityBits: s.capacityBits, availableBits: this.availableBits() };
  }

  availableBits(): number {
    const avail = this.producedBits() - this.state.offsetBits;
    return Math.max(0, Math.min(avail, this.state.capacityBits)) & ~7;
  }

  take(bits: number, _consumer: string): SuppliedKey {
    if (!Number.isSafeInteger(bits) || bits <= 0 || bits % 8 !== 0) throw new RangeError(`bits must be a positive multiple of 8, got ${bits}`);
    const state = this.state;
    const avail = this.availableBits();
    if (bits > avail) throw new SupplyExhaustedError(bits, avail);
    // Bits older than the buffer capacity were dropped by the link: skip past them.
    const start = Math.max(state.offsetBits, this.producedBits() - state.capacityBits);
    writeFileAtomic(this.path, JSON.stringify({ ...state, takenBits: state.takenBits + bits, offsetBits: start + bits }, null, 2) + '\n');
    return { supplyOffset: start, key: this.random(bits / 8) };
  }
}
