// Fault injection for the emulated NOR flash: a power-cut countdown over program/erase operations
// (littlefs emubd's "power cycles"), torn programs and erases, read bit flips. Deterministic (seeded).

/**
 * What happens to the operation the power cut lands on.
 * - `torn`: part of it is applied (a program clears only some of its bits, an erase sets only
 *   some bytes to 0xFF), as when the supply collapses mid-operation;
 * - `clean`: none of it is applied;
 * - `after`: all of it is applied, then the power goes.
 */
export type CutMode = 'torn' | 'clean' | 'after';

/** Small seeded PRNG (mulberry32): fault patterns must replay exactly from a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Torn program: `old` is what the cells held, `target` what a complete program leaves
 * (`old & bytes`). Half the time the program got through a prefix (bytes go out in order on
 * SPI NOR) and part of the next byte; otherwise each bit clear landed or not at random.
 * Either way only bits that the complete program clears can be cleared.
 */
export function tearProgram(old: Uint8Array, target: Uint8Array, rand: () => number): Uint8Array {
  const out = Uint8Array.from(old);
  if (rand() < 0.5) {
    const cut = Math.floor(rand() * (old.length + 1));
    for (let i = 0; i < cut; i++) out[i] = target[i]!;
    if (cut < old.length) out[cut] = old[cut]! & (target[cut]! | randomByte(rand));
  } else {
    for (let i = 0; i < old.length; i++) out[i] = old[i]! & (target[i]! | randomByte(rand));
  }
  return out;
}

/**
 * Torn erase: some bytes of the sector reached 0xFF, others kept their old value, one may be
 * half way (some of its bits set). A third of the time a contiguous prefix, a third whole
 * 16-byte regions at random (any header or record can survive intact next to erased ones),
 * otherwise scattered bytes.
 */
export function tearErase(old: Uint8Array, rand: () => number): Uint8Array {
  const out = Uint8Array.from(old);
  const style = rand();
  if (style < 1 / 3) {
    const cut = Math.floor(rand() * (old.length + 1));
    out.fill(0xff, 0, cut);
    if (cut < old.length) out[cut] = old[cut]! | randomByte(rand);
  } else if (style < 2 / 3) {
    for (let i = 0; i < old.length; i += 16) if (rand() < 0.5) out.fill(0xff, i, i + 16);
  } else {
    const p = rand();
    for (let i = 0; i < old.length; i++) if (rand() < p) out[i] = 0xff;
  }
  return out;
}

function randomByte(rand: () => number): number {
  return Math.floor(rand() * 256) & 0xff;
}

/** The plan of faults for one device. The flash consults it on every operation. */
export class FaultPlan {
  /** Program and erase operations performed (or cut) since the device was created. */
  mutations = 0;
  /** Mutation number (1-based, absolute) at which the power is cut; 0 = never. */
  private cutAt = 0;
  private cutMode: CutMode = 'torn';
  private seed = 1;
  /** Set once the cut happened; cleared by reboot. */
  powerLost = false;
  private readFlips: Array<{ addr: number; bit: number; left: number }> = [];

  /** Cut the power at the `n`-th program/erase from now (n >= 1). */
  cutAfter(n: number, mode: CutMode = 'torn', seed = 1): void {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError('n must be a positive integer');
    this.cutAt = this.mutations + n;
    this.cutMode = mode;
    this.seed = seed;
  }

  /** Forget a scheduled cut that has not happened yet. */
  cancelCut(): void {
    this.cutAt = 0;
  }

  /** Mutations still to go before the scheduled cut, or undefined if none is scheduled. */
  get pendingCut(): number | undefined {
    return this.cutAt === 0 ? undefined : this.cutAt - this.mutations;
  }

  /**
   * Called by the flash before a program/erase that passed validation. Returns how to apply
   * it; for a cut, the flash applies that much and then throws PowerCutError.
   */
  nextMutation(): { cut: false } | { cut: true; mode: CutMode; rand: () => number } {
    this.mutations++;
    if (this.cutAt !== 0 && this.mutations === this.cutAt) {
      this.cutAt = 0;
      this.powerLost = true;
      return { cut: true, mode: this.cutMode, rand: prng(this.seed ^ Math.imul(this.mutations, 0x9e3779b1)) };
    }
    return { cut: false };
  }

  /** The next `times` reads covering `addr` see bit `bit` (0..7) of that byte flipped. */
  flipOnRead(addr: number, bit: number, times = 1): void {
    this.readFlips.push({ addr, bit: bit & 7, left: times });
  }

  /** Apply pending read flips to a buffer just read from [addr, addr + out.length). */
  applyReadFlips(addr: number, out: Uint8Array): void {
    if (this.readFlips.length === 0) return;
    for (const f of this.readFlips) {
      if (f.left > 0 && f.addr >= addr && f.addr < addr + out.length) {
        out[f.addr - addr]! ^= 1 << f.bit;
        f.left--;
      }
    }
    this.readFlips = this.readFlips.filter((f) => f.left > 0);
  }
}
