// The KMD's key supply: a model of the QKD link that feeds it, at a fixed rate (the paper's
// 11 kbit/s by default, or the rate a QKD link model gives at its distance, qkd-model.ts; the
// account records which). Behind an interface so a physical QKD link can replace it. Every
// bit handed out is accounted, so the same key bits never go to two consumers or twice to one.
import { randomBytes } from 'node:crypto';
import { QKD_MODEL_KINDS } from './qkd-model.js';
import type { QkdModelKind } from './qkd-model.js';
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

/** Where the supply's rate comes from: a rate given as is, or a QKD link model (qkd-model.ts). */
export type SupplyModelName = 'fixed' | QkdModelKind;
export const SUPPLY_MODELS: readonly SupplyModelName[] = ['fixed', ...QKD_MODEL_KINDS];

/** The QKD link model behind a supply's rate, as supply.json records it. */
export interface SupplyLink {
  model: SupplyModelName;
  /** For a QKD model: the link's length (km), the source's pulse rate (Hz), the key rate per pulse and the signal intensity it was computed at. */
  km?: number;
  pulseRateHz?: number;
  perPulse?: number;
  mu?: number;
}

interface SupplyState extends Partial<SupplyLink> {
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

/** What `kmd status` shows of the supply: the model, then the account. */
export interface SupplyAccount extends SupplyLink {
  rateBitsPerSecond: number;
  takenBits: number;
  capacityBits: number;
  availableBits: number;
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
  private get state(): SupplyState & { offsetBits: number } {
    const s = readJsonFile(this.path, 64 * 1024) as SupplyState | undefined;
    if (s === undefined) throw new DamagedFileError(this.path, 'missing');
    for (const k of ['rateBitsPerSecond', 'startedAtMs', 'takenBits', 'capacityBits'] as const) {
      if (typeof s !== 'object' || s === null || typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new DamagedFileError(this.path, `not a supply account (${k})`);
    }
    // The model (absent in files from before it: a fixed rate). A QKD model names its figures.
    if (s.model !== undefined && !SUPPLY_MODELS.includes(s.model)) throw new DamagedFileError(this.path, 'not a supply account (model)');
    for (const k of ['km', 'pulseRateHz', 'perPulse', 'mu'] as const) {
      const x = s[k];
      const needed = s.model !== undefined && s.model !== 'fixed' && k !== 'mu';
      if ((x === undefined && needed) || (x !== undefined && (typeof x !== 'number' || !Number.isFinite(x) || x < 0))) throw new DamagedFileError(this.path, `not a supply account (${k})`);
    }
    return { ...s, offsetBits: s.offsetBits ?? s.takenBits };
  }

  static create(path: string, o: { rateBitsPerSecond: number; capacityBits?: number; startedAtMs?: number; link?: SupplyLink }): void {
    const state: SupplyState = {
      ...(o.link ?? { model: 'fixed' }),
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
  account(): SupplyAccount {
    const s = this.state;
    const link: SupplyLink = { model: s.model ?? 'fixed' };
    for (const k of ['km', 'pulseRateHz', 'perPulse', 'mu'] as const) if (s[k] !== undefined) link[k] = s[k];
    return { ...link, rateBitsPerSecond: s.rateBitsPerSecond, takenBits: s.takenBits, capacityBits: s.capacityBits, availableBits: this.availableBits() };
  }

  availableBits(): number {
    const avail = this.producedBits() - this.state.offsetBits;
    // Whole bytes; by division, not `& ~7`, which works on 32 bits and wraps past 2^31 bits.
    return Math.floor(Math.max(0, Math.min(avail, this.state.capacityBits)) / 8) * 8;
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
