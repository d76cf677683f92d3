// How big a bulk chunk to send on a line that loses frames: the sender's estimate of the line's
// error rate, and the chunk size that makes the most of it (docs/protocol.md 5.7).
//
// Model: each byte on the line is hit (a bit flipped, the byte dropped, a byte inserted) with a
// small probability `lambda`, independently, and one hit loses the whole frame (its CRC fails). A
// frame of `x` bytes, `o` of them header, CBOR, CRC and delimiters, then arrives whole with
// probability e^(-lambda x) and carries x - o data bytes, so the useful share of the line is
// (x - o)/x * e^(-lambda x). It is largest at x = (o + sqrt(o^2 + 4 o / lambda)) / 2: about
// 8 KiB (the most the module takes) on a clean line; with o = 30, frames of 150 bytes (120 of
// data) at 0.16% of bytes hit and of 60 bytes (30 of data) at 1.6%.
//
// With go-back-N the loss of one frame also wastes the frames sent behind it before the host
// hears of the loss: with WINDOW frames in flight, the useful share is rather
// (x - o)/x * p / (p + WINDOW (1 - p)) with p = e^(-lambda x), which `best` maximises numerically.
//
// The estimate: the share q of frames lost (acknowledged in order against lost, both counts
// decaying by half every HALF_LIFE frames, so the size follows a line whose noise comes and goes),
// turned into hits per byte: lambda = -ln(1 - q) / (mean frame size). Before it is worth much (few
// losses seen) each loss halves the size, so a transfer that starts at 8 KiB on a bad line is at
// a fitting size after a handful of frames, not a hundred; each acknowledged chunk grows it by a
// quarter, up to the estimate's best.

/** Frames over which the evidence of a loss or a success halves. */
const HALF_LIFE = 64;
/** Losses (decayed) below which each loss halves the size rather than trusting the estimate. */
const MATURE = 4;
/** Growth per acknowledged chunk. */
const GROWTH = 1.25;
/** Frames in flight on a lossy line (bulk-sender.ts keeps this many once it has shrunk chunks). */
export const LOSSY_WINDOW = 2;

export class ChunkSizer {
  /** The chunk size to send next, in data bytes. */
  size: number;
  /** The smallest size used so far (for the report). */
  smallest: number;
  #lost = 0;
  #acked = 0;
  /** Decayed sum of the frame sizes (line bytes) behind the counts. */
  #bytes = 0;
  #best: number;

  constructor(
    /** The most a chunk may carry (the device's maxChunk, or the caller's own cap). */
    readonly max: number,
    /** The least: below this the header costs more than the data is worth. */
    readonly min: number,
    /** Bytes a chunk frame takes on the line besides its data. */
    readonly overhead: number,
  ) {
    if (!(Number.isSafeInteger(max) && Number.isSafeInteger(min) && min >= 1 && max >= 1)) throw new RangeError(`chunk sizes must be positive integers, got ${min}..${max}`);
    this.min = Math.min(min, max);
    this.size = max;
    this.smallest = max;
    this.#best = max;
  }

  /** Hits per line byte, as estimated now (0 before any loss). */
  get lambda(): number {
    const n = this.#lost + this.#acked;
    if (this.#lost <= 0 || n <= 0) return 0;
    const q = Math.min(0.99, this.#lost / n);
    return -Math.log(1 - q) / (this.#bytes / n);
  }

  /** The best data size for the estimated error rate, within [min, max]. */
  get best(): number {
    return this.#best;
  }

  /** A chunk of `data` bytes was acknowledged in order: grow towards the best size. */
  acked(data: number): void {
    this.#observe(data, false);
    this.size = Math.min(this.#best, this.#clamp(this.size * GROWTH));
  }

  /** A chunk of about `data` bytes (or its answer) was lost: a go-back or an overdue answer. */
  lost(data: number): void {
    this.#observe(data, true);
    const halved = this.#clamp(this.size / 2);
    this.size = this.#lost < MATURE ? Math.min(halved, this.#best) : Math.min(this.size, this.#best);
    this.smallest = Math.min(this.smallest, this.size);
  }

  #observe(data: number, lost: boolean): void {
    const keep = Math.pow(0.5, 1 / HALF_LIFE);
    this.#lost = this.#lost * keep + (lost ? 1 : 0);
    this.#acked = this.#acked * keep + (lost ? 0 : 1);
    this.#bytes = this.#bytes * keep + data + this.overhead;
    this.#best = this.#optimum();
  }

  /** The data size maximising the useful share of the line (see the header), on a log grid. */
  #optimum(): number {
    const l = this.lambda;
    if (l <= 0) return this.max;
    const o = this.overhead;
    let best = this.max;
    let bestShare = -1;
    for (let d = this.min; ; d = Math.ceil(d * 1.05)) {
      const x = Math.min(d, this.max) + o;
      const p = Math.exp(-l * x);
      const share = ((x - o) / x) * (p / (p + LOSSY_WINDOW * (1 - p)));
      if (share > bestShare) {
        bestShare = share;
        best = x - o;
      }
      if (d >= this.max) break;
    }
    return best;
  }

  #clamp(x: number): number {
    return Math.max(this.min, Math.min(this.max, Math.floor(x)));
  }
}
