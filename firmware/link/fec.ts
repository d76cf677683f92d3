// Forward error correction for noisy lines (docs/protocol.md 2.6): a frame body is cut into k
// data shards of s bytes and sent with n - k parity shards of a systematic Reed-Solomon erasure
// code over GF(2^8); each shard is a small frame of its own (COBS, 0x00, a 16-bit check), so a
// byte flipped, dropped or inserted costs one shard, not the frame, and any k whole shards of n
// give the frame back. Which shards arrive does not matter.
//
// Hand-written: the npm erasure-code packages are native add-ons (@ronomon/reed-solomon) or
// unmaintained, and an MCU runs the same code (the codec is about 200 lines; the rest is the sender's planning). The code is the Cauchy construction
// (Bloemer et al., "An XOR-based erasure-resilient coding scheme", ICSI TR-95-048, 1995): parity
// row j, data column i holds 1 / (x_j + y_i) with x_j = k + j and y_i = i; every square submatrix
// of a Cauchy matrix is invertible, so any k shards decode (the code is MDS).
import { crc32 } from 'node:zlib';
import { cobsDecode, cobsEncodeInto, cobsMaxEncodedLength } from './cobs.js';
import { MIN_BODY_SIZE, crcOk } from './frame.js';

/** First byte of a shard body: never a protocol version, so a frame reader tells the two apart. */
export const SHARD_MARK = 0xfe;
/** Shard header bytes before its data: mark, frame id, k, n, index, seen (the 2-byte check follows the data). */
export const SHARD_HEADER = 6;
export const SHARD_CHECK = 2;
/** Line bytes a shard of s data bytes takes: its body, one COBS code byte (bodies stay under 254 bytes) and a 0x00. */
export const SHARD_WIRE_EXTRA = SHARD_HEADER + SHARD_CHECK + 2;
export const MIN_SHARD = 4;
export const MAX_SHARD = 240;
/** Shards of one frame, data and parity: k <= n <= 255 (the Cauchy x and y values are bytes). */
export const MAX_SHARDS = 255;

// ---- GF(2^8), polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) -------------------------------
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}
function mul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!;
}
function inv(a: number): number {
  return EXP[255 - LOG[a]!]!;
}
/** The Cauchy coefficient of parity row j (0-based) on data shard i, for k data shards. */
function coef(k: number, j: number, i: number): number {
  return inv((k + j) ^ i);
}
/** out[t] ^= c * src[t] for every t. */
function addScaled(out: Uint8Array, src: Uint8Array, c: number): void {
  if (c === 0) return;
  const lc = LOG[c]!;
  for (let t = 0; t < out.length; t++) {
    const d = src[t]!;
    if (d !== 0) out[t] = out[t]! ^ EXP[lc + LOG[d]!]!;
  }
}

/** The 16-bit check of a shard: the low half of the CRC-32 (the frames' CRC) of its header and data. */
function check16(bytes: Uint8Array): number {
  return crc32(bytes) & 0xffff;
}

export interface ShardPlan {
  /** Data bytes per shard. */
  s: number;
  /** Data shards. */
  k: number;
  /** All shards, data and parity. */
  n: number;
}

/**
 * The shards of one frame body, made one at a time: its data shards are cut once, and a parity
 * shard is computed when asked for (a sender answering a NEED, section 2.6, makes the next ones).
 */
export class ShardSource {
  readonly #data: Uint8Array;

  constructor(
    body: Uint8Array,
    readonly id: number,
    readonly plan: ShardPlan,
    readonly seen = 0,
  ) {
    const { s, k, n } = plan;
    if (!(s >= MIN_SHARD && s <= MAX_SHARD && k >= 1 && n >= k && n <= MAX_SHARDS) || k * s < body.length + 2) {
      throw new RangeError(`shard plan ${s}x${k}/${n} cannot carry ${body.length} bytes`);
    }
    const data = new Uint8Array(k * s);
    data[0] = body.length >>> 8;
    data[1] = body.length & 0xff;
    data.set(body, 2);
    this.#data = data;
  }

  /** The body (before COBS) of shard `i`, 0 <= i < n. */
  shard(i: number): Uint8Array {
    const { s, k, n } = this.plan;
    if (!(i >= 0 && i < n)) throw new RangeError(`shard ${i} of ${n}`);
    const data = this.#data;
    const out = new Uint8Array(SHARD_HEADER + s + SHARD_CHECK);
    out[0] = SHARD_MARK;
    out[1] = this.id & 0xff;
    out[2] = k;
    out[3] = n;
    out[4] = i;
    out[5] = this.seen;
    const payload = out.subarray(SHARD_HEADER, SHARD_HEADER + s);
    if (i < k) payload.set(data.subarray(i * s, (i + 1) * s));
    else for (let d = 0; d < k; d++) addScaled(payload, data.subarray(d * s, (d + 1) * s), coef(k, i - k, d));
    const c = check16(out.subarray(0, SHARD_HEADER + s));
    out[SHARD_HEADER + s] = c >>> 8;
    out[SHARD_HEADER + s + 1] = c & 0xff;
    return out;
  }
}

/**
 * The shard bodies (before COBS) of one frame body `body` (header, payload and CRC): its length
 * in 2 bytes, then the body, zero-padded to k shards of s bytes, then parity shards; `count`
 * (default n) of the n, from index 0: a sender may send a prefix and the rest on a NEED.
 */
export function encodeShards(body: Uint8Array, id: number, plan: ShardPlan, seen = 0, count = plan.n): Uint8Array[] {
  const src = new ShardSource(body, id, plan, seen);
  const shards: Uint8Array[] = [];
  for (let i = 0; i < Math.min(count, plan.n); i++) shards.push(src.shard(i));
  return shards;
}

// ---- NEED: a receiver asks for more shards of a frame (incremental redundancy) ------------

/** First byte of a NEED body: neither a protocol version nor the shard mark. */
export const NEED_MARK = 0xfd;
/** A NEED body: mark, id, k, n, need, then the 2-byte check (low half of the CRC-32 of the 5 before). */
export const NEED_SIZE = 7;

export interface Need {
  /** The frame's shard id, and its k and n as its shards said. */
  id: number;
  k: number;
  n: number;
  /** Distinct shards the receiver still lacks to put the frame together (1..255). */
  need: number;
}

/** A NEED body (before COBS): `0xFD | id | k | n | need | check16`. */
export function encodeNeed(x: Need): Uint8Array {
  const out = new Uint8Array(NEED_SIZE);
  out[0] = NEED_MARK;
  out[1] = x.id & 0xff;
  out[2] = x.k;
  out[3] = x.n;
  out[4] = Math.max(1, Math.min(255, x.need));
  const c = check16(out.subarray(0, 5));
  out[5] = c >>> 8;
  out[6] = c & 0xff;
  return out;
}

/** A NEED body, checked; undefined if it is not a whole one (no bit is put right: it is 9 line bytes, sent again if lost). */
export function parseNeed(body: Uint8Array): Need | undefined {
  if (body.length !== NEED_SIZE || body[0] !== NEED_MARK) return undefined;
  if (check16(body.subarray(0, 5)) !== ((body[5]! << 8) | body[6]!)) return undefined;
  const k = body[2]!;
  const n = body[3]!;
  const need = body[4]!;
  if (k < 1 || n < k || need < 1) return undefined;
  return { id: body[1]!, k, n, need };
}

export interface ParsedShard {
  id: number;
  /** One flipped bit was corrected (parseShard). */
  corrected: boolean;
  /** The sender's estimate of the line it receives on (seenByte), 0 if it has none. */
  seen: number;
  k: number;
  n: number;
  index: number;
  data: Uint8Array;
}

/**
 * A shard body, checked; undefined if it is not a whole one. A shard whose check shows exactly
 * one flipped bit (the commonest damage on a serial line) is corrected and marked so: the check
 * is a CRC, and the difference a single flipped bit makes to it depends only on the bit's distance
 * from the end of the shard, so one table of those differences finds the bit. About 1 in 100
 * shards with other damage looks like a single flip: the frame's own CRC-32 catches those, and the
 * collector then puts the frame together without the shards it corrected.
 */
export function parseShard(body: Uint8Array): ParsedShard | undefined {
  const s = body.length - SHARD_HEADER - SHARD_CHECK;
  if (body[0] !== SHARD_MARK || s < MIN_SHARD || s > MAX_SHARD) return undefined;
  let b = body;
  let corrected = false;
  const covered = SHARD_HEADER + s;
  const syndrome = check16(b.subarray(0, covered)) ^ ((b[covered]! << 8) | b[covered + 1]!);
  if (syndrome !== 0) {
    const bit = singleBitAt(syndrome, covered);
    if (bit === undefined) return undefined;
    b = Uint8Array.from(body);
    b[bit >>> 3]! ^= 1 << (bit & 7);
    if (b[0] !== SHARD_MARK) return undefined;
    corrected = true;
  }
  const k = b[2]!;
  const n = b[3]!;
  const index = b[4]!;
  if (k < 1 || n < k || index >= n) return undefined;
  return { id: b[1]!, seen: b[5]!, k, n, index, corrected, data: b.subarray(SHARD_HEADER, SHARD_HEADER + s) };
}

/** Syndromes of single flipped bits by distance from the end of the covered bytes (built once). */
let flipTable: Map<number, number[]> | undefined;

/**
 * The bit (byte * 8 + bit, within the shard body) whose flip explains `syndrome` (computed check
 * XOR stored check) for a shard whose check covers `covered` bytes; undefined if none or several.
 */
function singleBitAt(syndrome: number, covered: number): number | undefined {
  const found: number[] = [];
  // A flip in the check itself: the syndrome is that one bit (check byte 0 holds bits 15..8).
  if ((syndrome & (syndrome - 1)) === 0) {
    const v = 31 - Math.clz32(syndrome);
    found.push((covered + (v >= 8 ? 0 : 1)) * 8 + (v & 7));
  }
  // A flip in the covered bytes: CRC-32 is affine, so the syndrome is the low half of the CRC of
  // the error alone minus the CRC of zeros, which depends on the bit's distance from the end.
  if (!flipTable) {
    flipTable = new Map();
    const len = SHARD_HEADER + MAX_SHARD;
    const zero = check16(new Uint8Array(len));
    const e = new Uint8Array(len);
    for (let i = 0; i < len; i++) {
      for (let bit = 0; bit < 8; bit++) {
        e[i] = 1 << bit;
        const syn = check16(e) ^ zero;
        e[i] = 0;
        // CRC-32 (reflected) takes each byte's low bit first: distance from the last bit taken.
        const d = (len - 1 - i) * 8 + (7 - bit);
        const at = flipTable.get(syn);
        if (at) at.push(d);
        else flipTable.set(syn, [d]);
      }
    }
  }
  for (const d of flipTable.get(syndrome) ?? []) {
    if (d >= covered * 8) continue;
    found.push(covered * 8 - 1 - d); // byte * 8 + bit: the order CRC-32 takes bits in
  }
  return found.length === 1 ? found[0] : undefined;
}

/**
 * The frame body from any k of a frame's shards (all of one id, k, n and size; distinct indices),
 * or undefined when their length field is impossible (the shards were not one frame's).
 */
export function decodeShards(k: number, shards: ReadonlyMap<number, Uint8Array>): Uint8Array | undefined {
  const s = shards.values().next().value?.length ?? 0;
  if (shards.size < k || s === 0) return undefined;
  const data: (Uint8Array | undefined)[] = [];
  for (let i = 0; i < k; i++) data.push(shards.get(i));
  const missing: number[] = [];
  for (let i = 0; i < k; i++) if (!data[i]) missing.push(i);
  if (missing.length > 0) {
    // Parity rows to use, one per missing data shard, and their syndromes: the parity minus what
    // the present data shards put in it, which is what the missing ones put in it.
    const rows: number[] = [];
    for (const idx of shards.keys()) if (idx >= k && rows.length < missing.length) rows.push(idx - k);
    const e = missing.length;
    const syn = rows.map((j) => {
      const sv = Uint8Array.from(shards.get(k + j)!);
      for (let i = 0; i < k; i++) if (data[i]) addScaled(sv, data[i]!, coef(k, j, i));
      return sv;
    });
    // Invert the e x e Cauchy submatrix A[r][c] = coef(rows[r], missing[c]) (Gauss-Jordan).
    const a: number[][] = rows.map((j) => missing.map((i) => coef(k, j, i)));
    const b: number[][] = rows.map((_, r) => missing.map((_, c) => (r === c ? 1 : 0)));
    for (let c = 0; c < e; c++) {
      let p = c;
      while (a[p]![c] === 0) p++; // a Cauchy submatrix is invertible: a pivot exists
      [a[c], a[p]] = [a[p]!, a[c]!];
      [b[c], b[p]] = [b[p]!, b[c]!];
      const f = inv(a[c]![c]!);
      for (let t = 0; t < e; t++) {
        a[c]![t] = mul(a[c]![t]!, f);
        b[c]![t] = mul(b[c]![t]!, f);
      }
      for (let r = 0; r < e; r++) {
        const g = a[r]![c]!;
        if (r === c || g === 0) continue;
        for (let t = 0; t < e; t++) {
          a[r]![t] = a[r]![t]! ^ mul(g, a[c]![t]!);
          b[r]![t] = b[r]![t]! ^ mul(g, b[c]![t]!);
        }
      }
    }
    missing.forEach((i, c) => {
      const out = new Uint8Array(s);
      for (let r = 0; r < e; r++) addScaled(out, syn[r]!, b[c]![r]!);
      data[i] = out;
    });
  }
  const all = new Uint8Array(k * s);
  data.forEach((d, i) => all.set(d!, i * s));
  const len = (all[0]! << 8) | all[1]!;
  if (len + 2 > all.length) return undefined;
  return all.slice(2, 2 + len);
}

// ---- How many shards: the sender's plan for the line it sees ------------------------------

/**
 * What a lost frame costs beyond itself: the link sends again from the last frame acknowledged,
 * with up to LOSSY_WINDOW (2) frames in flight, so about two frames' worth.
 */
const RESEND_FACTOR = 2;

/**
 * The n >= k + 1 (at most 255) that costs the fewest shards per frame delivered when each
 * shard arrives with probability q, counting what a lost frame costs (RESEND_FACTOR), and the
 * probability p that a receiver puts the frame together from those n: at least k of them
 * arrive, and at most `budget` of the k data shards are among the lost (a receiver solves for no
 * more, solveBudget: further parity shards do not help it then).
 */
function shardsFor(k: number, q: number, budget = k): { n: number; p: number } {
  if (q >= 1) return { n: Math.min(MAX_SHARDS, k + 1), p: 1 };
  if (q <= 0) return { n: MAX_SHARDS, p: 0 };
  const b = Math.max(0, Math.min(k, budget));
  const lq = Math.log(q);
  const lr = Math.log(1 - q);
  // lostData[m]: P(exactly m of the k data shards are lost), for the m a receiver solves for.
  const lostData: number[] = [];
  let solvable = 0;
  for (let m = 0; m <= b; m++) solvable += lostData[m] = binomPmf(k, m, lr, lq);
  if (b === k || solvable > 1 - 1e-9) return shardsForAll(k, q);
  // Parity shards sent so far: exact[j] = P(exactly j of them arrive) for j <= b, and above the
  // chance that more than b do. P(frame) = sum over m of lostData[m] * P(at least m parity arrive).
  const exact = new Array<number>(b + 1).fill(0);
  exact[0] = 1;
  let above = 0;
  let best = { n: MAX_SHARDS, p: 0 };
  let bestCost = Infinity;
  for (let n = k; n <= MAX_SHARDS; n++) {
    if (n > k) {
      // One more parity shard.
      above += exact[b]! * q;
      for (let j = b; j > 0; j--) exact[j] = exact[j]! * (1 - q) + exact[j - 1]! * q;
      exact[0] = exact[0]! * (1 - q);
      let atLeast = above;
      let p = 0;
      for (let m = b; m >= 0; m--) {
        atLeast += exact[m]!;
        p += lostData[m]! * atLeast;
      }
      p = Math.min(1, p);
      const cost = (n * (1 + RESEND_FACTOR * (1 - p))) / p;
      if (cost < bestCost) {
        bestCost = cost;
        best = { n, p };
      } else if (p > 0.999) break;
    }
  }
  return best;
}

/** shardsFor where a receiver solves for any number of missing data shards: p = P(k of n arrive). */
function shardsForAll(k: number, q: number): { n: number; p: number } {
  // P(at least k of n arrive) for n = k, k+1, ...: P(n+1) = P(n) + q * P(exactly k-1 of n), and
  // P(exactly k-1 of n+1) = P(exactly k-1 of n) * (1-q) * (n+1) / (n+2-k). O(1) per n.
  const lq = Math.log(q);
  let p = Math.exp(k * lq); // all k of k
  let exact = Math.exp(Math.log(k) + (k - 1) * lq + Math.log(1 - q)); // exactly k-1 of k: k q^(k-1) (1-q)
  let best = { n: MAX_SHARDS, p: 0 };
  let bestCost = Infinity;
  for (let n = k; n <= MAX_SHARDS; n++) {
    if (n > k) {
      const cost = (n * (1 + RESEND_FACTOR * (1 - p))) / p;
      if (cost < bestCost) {
        bestCost = cost;
        best = { n, p };
      } else if (p > 0.999) break;
    }
    // step to n + 1
    p = Math.min(1, p + q * exact);
    exact = (exact * (1 - q) * (n + 1)) / (n + 2 - k);
  }
  return best;
}

/**
 * The most missing data shards the reference receiver solves a frame of k shards of s bytes for
 * (ShardCollector): 96, and no more than its line bytes pay for, missing^3 <= 64 k (s + 10).
 */
export function solveBudget(k: number, s: number): number {
  const pays = SOLVE_STEPS_PER_BYTE * k * (s + SHARD_WIRE_EXTRA);
  let m = Math.min(MAX_SOLVE, Math.floor(Math.cbrt(pays)) + 1);
  while (m > 0 && m ** 3 > pays) m--;
  return m;
}

/**
 * The shard plan for a frame body of `len` bytes on a line where each byte is hit with
 * probability about `lambda` (hits per byte): the shard size and count that carry it in the
 * fewest line bytes per frame that gets through. Undefined when no plan gets it through at least
 * half the time: the frame is too large for the line (a bulk sender sends smaller ones; a single
 * frame then goes plain).
 */
export function planShards(len: number, lambda: number): Plan | undefined {
  // Plans are asked for every frame sent; the line estimate moves slowly, so a few cached ones
  // (lambda rounded to 2%) serve most frames.
  const key = `${len}:${Math.round(Math.log(Math.max(lambda, 1e-7)) * 50)}`;
  const hit = planCache.get(key);
  if (hit !== undefined || planCache.has(key)) return hit;
  const plan = computePlan(len, lambda);
  planCache.set(key, plan);
  if (planCache.size > 512) planCache.delete(planCache.keys().next().value as string);
  return plan;
}

/**
 * A plan: `send` of the n shards go out at first (all n for a plan without a NEED round); `wire`
 * the line bytes of those, `p` the chance that they alone give the frame.
 */
export type Plan = ShardPlan & { wire: number; p: number; send?: number };
const planCache = new Map<string, Plan | undefined>();

function computePlan(len: number, lambda: number): Plan | undefined {
  let best: Plan | undefined;
  let bestCost = Infinity;
  for (let s = MIN_SHARD; s <= MAX_SHARD; s = s < 16 ? s + 1 : Math.min(MAX_SHARD, Math.ceil(s * 1.08)) + (s === MAX_SHARD ? 1 : 0)) {
    const k = Math.ceil((len + 2) / s);
    if (k > MAX_SHARDS - 1) continue;
    const w = s + SHARD_WIRE_EXTRA;
    const q = Math.exp(-lambda * w);
    const { n, p } = shardsFor(k, q, solveBudget(k, s));
    if (!(p >= 0.5)) continue; // a plan that mostly fails only fills the line (and amplifies a lying peer's `seen`)
    const wire = n * w;
    const cost = (wire * (1 + RESEND_FACTOR * (1 - p))) / p; // line bytes per frame delivered
    if (cost < bestCost) {
      bestCost = cost;
      best = { s, k, n, wire, p };
    }
  }
  return best;
}

// ---- Incremental redundancy: a prefix for the mean loss, the rest on a NEED ---------------

/** Rounds of repair a sender answers per frame (docs/protocol.md 2.6): never more, whatever NEEDs come. */
export const REPAIR_ROUNDS = 2;
/** Sharded frames a sender keeps to answer NEEDs for. */
export const REPAIR_FRAMES = 8;
/** What a NEED round costs besides its shards, in shards: the NEED, the wait, the chance it is lost. */
const ROUND_COST = 2;

const LOG_FACT: number[] = [0];
for (let i = 1; i <= 512; i++) LOG_FACT.push(LOG_FACT[i - 1]! + Math.log(i));
function binomPmf(n: number, x: number, lq: number, lr: number): number {
  return x < 0 || x > n ? 0 : Math.exp(LOG_FACT[n]! - LOG_FACT[x]! - LOG_FACT[n - x]! + x * lq + (n - x) * lr);
}

/**
 * Shards a sender sends for a NEED of `need` when each arrives with probability `q`: `need` and
 * enough more that `need` of them arrive 97 times in 100. At most 2 * need + 4.
 */
export function repairCount(need: number, q: number): number {
  if (!(q > 0 && q < 1)) return need;
  const lq = Math.log(q);
  const lr = Math.log(1 - q);
  for (let c = need; c < 2 * need + 4; c++) {
    let ok = 0;
    for (let x = need; x <= c; x++) ok += binomPmf(c, x, lq, lr);
    if (ok >= 0.97) return c;
  }
  return 2 * need + 4;
}

/**
 * The plan with NEED rounds for a frame of `len` bytes: shards of the size and a first count
 * that cost the fewest line bytes on average, counting the repair rounds (ROUND_COST each) and a
 * frame lost after them. The code's length n is 255: any parity shard can follow. Undefined
 * where a round would have to bring many shards (more than 1 in 5 lost): there the whole
 * plan of planShards is sent.
 */
function computeHarqPlan(len: number, lambda: number): (Plan & { cost: number }) | undefined {
  let best: (Plan & { cost: number }) | undefined;
  for (let s = MIN_SHARD; s <= MAX_SHARD; s = s < 16 ? s + 1 : Math.min(MAX_SHARD, Math.ceil(s * 1.08)) + (s === MAX_SHARD ? 1 : 0)) {
    const k = Math.ceil((len + 2) / s);
    if (k > 160) continue;
    const w = s + SHARD_WIRE_EXTRA;
    const q = Math.exp(-lambda * w);
    if (q < 0.8) continue;
    // The receiver solves for at most a budget of missing data shards (ShardCollector): stay well inside.
    const miss = k * (1 - q) + 3 * Math.sqrt(k * q * (1 - q));
    if (miss > MAX_SOLVE / 2 || miss ** 3 > SOLVE_STEPS_PER_BYTE * k * w) continue;
    const lq = Math.log(q);
    const lr = Math.log(1 - q);
    const rounds: number[] = [0];
    for (let m = 1; m <= 48; m++) rounds.push(repairCount(m, q) * 1.1 + ROUND_COST);
    const mean = (k * (1 - q)) / q;
    for (let n0 = k; n0 <= Math.min(230, Math.ceil(k + 3 * mean + 8)); n0++) {
      let extra = 0;
      let covered = 0;
      for (let m = 1; m <= 48 && k - m >= 0; m++) {
        const pm = binomPmf(n0, k - m, lq, lr);
        extra += pm * rounds[m]!;
        covered += pm;
      }
      let ok = 0;
      for (let x = k; x <= n0; x++) ok += binomPmf(n0, x, lq, lr);
      // Worse than 48 short: lost, and sent again with what went behind it.
      const lost = Math.max(0, 1 - ok - covered);
      const cost = (n0 + extra) * w * (1 + RESEND_FACTOR * lost);
      if (!best || cost < best.cost) best = { s, k, n: MAX_SHARDS, send: n0, wire: n0 * w, p: ok, cost };
    }
  }
  return best;
}

const harqCache = new Map<string, Plan | undefined>();

/**
 * The plan for a frame whose sender answers NEEDs: the NEED-round plan (computeHarqPlan) where
 * it costs fewer line bytes than planShards' plan, else that one.
 */
export function planShardsHarq(len: number, lambda: number): Plan | undefined {
  const key = `${len}:${Math.round(Math.log(Math.max(lambda, 1e-7)) * 50)}`;
  const hit = harqCache.get(key);
  if (hit !== undefined || harqCache.has(key)) return hit;
  const whole = planShards(len, lambda);
  const harq = computeHarqPlan(len, lambda);
  const wholeCost = whole ? (whole.wire * (1 + RESEND_FACTOR * (1 - whole.p))) / whole.p : Infinity;
  let plan: Plan | undefined = whole;
  if (harq && harq.cost < wholeCost) {
    const { cost: _cost, ...rest } = harq;
    plan = rest;
  }
  harqCache.set(key, plan);
  if (harqCache.size > 512) harqCache.delete(harqCache.keys().next().value as string);
  return plan;
}

/**
 * A sender's memory of the frames it sent in shards, to answer NEEDs (docs/protocol.md 2.6):
 * the last REPAIR_FRAMES frames, each answered at most REPAIR_ROUNDS times with at most k
 * shards, the next indices not yet sent. A NEED is not authenticated: whatever NEEDs come, a
 * frame costs at most 2 more rounds, and only frames sent lately.
 */
export class ShardResender {
  readonly #frames = new Map<number, { src: ShardSource; next: number; rounds: number; q: number }>();
  readonly stats = { needs: 0, answered: 0, ignored: 0, shards: 0 };

  /** A frame just sent: `sent` of its shards from index 0, on a line where a shard arrives with probability `q`. */
  add(src: ShardSource, sent: number, q: number): void {
    this.#frames.delete(src.id);
    this.#frames.set(src.id, { src, next: sent, rounds: 0, q });
    while (this.#frames.size > REPAIR_FRAMES) this.#frames.delete(this.#frames.keys().next().value as number);
  }

  /** The shard bodies to send for a NEED (empty: ignored: not a frame kept, its rounds spent, or no shard left). */
  answer(need: Need): Uint8Array[] {
    this.stats.needs++;
    const f = this.#frames.get(need.id);
    if (!f || f.src.plan.k !== need.k || f.src.plan.n !== need.n || f.rounds >= REPAIR_ROUNDS || f.next >= f.src.plan.n) {
      this.stats.ignored++;
      return [];
    }
    f.rounds++;
    const count = Math.min(repairCount(need.need, f.q), f.src.plan.k, f.src.plan.n - f.next);
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) out.push(f.src.shard(f.next++));
    this.stats.answered++;
    this.stats.shards += out.length;
    return out;
  }
}

/** Shard bodies as line bytes: each COBS-encoded and ended by 0x00 (the line is between frames). */
export function shardsOnLine(bodies: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(bodies.reduce((n, b) => n + cobsMaxEncodedLength(b.length) + 1, 0));
  let o = 0;
  for (const b of bodies) {
    o += cobsEncodeInto(b, out.subarray(o));
    out[o++] = 0;
  }
  return out.subarray(0, o);
}

/**
 * A plan for `len` bytes at `lambda` hits per byte or, if the frame is too large for that, at the
 * largest rate below it that has one (each try a third lower, 8 tries): the most robust plan
 * that still gets the frame through at least half the time there.
 */
export function planShardsAtMost(len: number, lambda: number): Plan | undefined {
  let l = lambda;
  for (let i = 0; i < 8; i++, l /= 1.5) {
    const plan = planShards(len, l);
    if (plan) return plan;
  }
  return undefined;
}

/**
 * The frame body size, at most `cap`, that carries the most data per line byte on this line when
 * `overhead` of its bytes are not data (a chunk's header and CBOR): what a bulk sender sizes its
 * chunks by when shards carry its frames.
 */
export function bestFrame(lambda: number, cap: number, overhead: number): number {
  const key = `${cap}:${overhead}:${Math.round(Math.log(Math.max(lambda, 1e-7)) * 50)}`;
  let v = frameCache.get(key);
  if (v === undefined) {
    v = computeBestFrame(lambda, cap, overhead);
    frameCache.set(key, v);
    if (frameCache.size > 256) frameCache.delete(frameCache.keys().next().value as string);
  }
  return v;
}
const frameCache = new Map<string, number>();

function computeBestFrame(lambda: number, cap: number, overhead: number): number {
  let best = Math.min(cap, overhead + 16);
  let bestShare = 0;
  for (let len = overhead + 16; ; len = Math.min(cap, Math.ceil(len * 1.15))) {
    const plan = planShards(len, lambda);
    if (plan) {
      const share = ((len - overhead) * plan.p) / (plan.wire * (1 + RESEND_FACTOR * (1 - plan.p)));
      if (share > bestShare) {
        bestShare = share;
        best = len;
      }
    }
    if (len >= cap) break;
  }
  return best;
}

/**
 * Hits per byte as one byte, carried in every shard so each end learns how the other receives:
 * v = round(-8 log2(lambda)) within 1..255 (steps of 9%), 0 for no estimate.
 */
export function seenByte(lambda: number): number {
  if (!(lambda > 0)) return 255;
  return Math.max(1, Math.min(255, Math.round(-8 * Math.log2(lambda))));
}
export function seenLambda(v: number): number {
  return v === 0 ? 0 : Math.pow(2, -v / 8);
}

// ---- The line as a receiver of shards sees it --------------------------------------------

/** Shards (decayed) over which the evidence halves. */
const HALF_LIFE_SHARDS = 512;

/**
 * Hits per line byte, from the shards of received frames: sent (the highest index seen plus one,
 * or n for a frame never completed) against arrived whole. Starts at `prior` with the weight of
 * `priorShards` shards, so the first frames are sized for a bad line, not a clean one.
 */
export class LineEstimate {
  #sent: number;
  #ok: number;
  #bytes: number;

  constructor(prior: number, priorShards = 8, priorShardBytes = 24) {
    this.#sent = priorShards;
    this.#ok = priorShards * Math.exp(-prior * priorShardBytes);
    this.#bytes = priorShards * priorShardBytes;
  }

  observe(sent: number, ok: number, shardBytes: number): void {
    if (!(sent > 0) || ok > sent) return;
    const keep = Math.pow(0.5, sent / HALF_LIFE_SHARDS);
    this.#sent = this.#sent * keep + sent;
    this.#ok = this.#ok * keep + ok;
    this.#bytes = this.#bytes * keep + sent * shardBytes;
  }

  get lambda(): number {
    const q = Math.max(0.01, Math.min(1, this.#ok / this.#sent));
    return -Math.log(q) / (this.#bytes / this.#sent);
  }
}

interface Group {
  k: number;
  n: number;
  s: number;
  /** Its shards so far, by index; `corrected`: put right from one flipped bit (parseShard). */
  shards: Map<number, { data: Uint8Array; corrected: boolean }>;
  /** A decoding with corrected shards in it failed: from then on only uncorrected shards are taken. */
  distrust: boolean;
  /** The last `seen` its shards carried: believed once the frame is put together whole. */
  seen: number;
  /** Highest index seen, and whole shards seen (also after it decoded). */
  top: number;
  ok: number;
  done: boolean;
  /** NEED mode: shards of it came since its last NEED (or since it began). */
  fresh: boolean;
  /** NEEDs sent for it. */
  needs: number;
  /** Put together whole while an older frame was still awaited: delivered after it. */
  held?: Uint8Array;
  /** Later frames put together while it waited: at GIVE_UP_AFTER it is given up. */
  later: number;
  /** NEEDs asked again after a long pause that brought nothing since. */
  silent: number;
}

/** A frame the last push() completed: its shape, and the whole shards of it taken until then. */
export interface CompletedFrame {
  id: number;
  k: number;
  n: number;
  s: number;
  /** Whole shards of this frame pushed up to and including the completing one (repeats too). */
  shards: number;
  /** When it gave no frame but its length field was possible: the bytes it made (a bad CRC). */
  body?: Uint8Array;
}

export interface FecStats {
  shards: number;
  badShards: number;
  framesDecoded: number;
  framesLost: number;
  /** NEEDs this receiver asked to send (NEED mode). */
  needsSent?: number;
}

/** The most hits per byte a sender plans for. */
const MAX_LAMBDA = 0.25;

/** Frames up to this size are planned for the worse of the two ends' estimates. */
const SMALL_FRAME = 512;

/** Most missing data shards a receiver solves for in one frame. */
const MAX_SOLVE = 96;
/** Solve steps (missing^3) allowed per line byte of the frame's k shards. */
const SOLVE_STEPS_PER_BYTE = 64;

/** Groups of shards a receiver keeps at once (frames in flight are far fewer). */
const MAX_GROUPS = 8;

/** NEEDs a receiver sends for one frame (a sender answers 2; one may be lost on the line). */
const MAX_NEEDS = 3;
/**
 * A frame still awaited is given up when this many later frames have been put together behind
 * it: its repair can come after the next frame ends (a second round, or a frame shorter than the
 * round trip), and a receiver must not hold frames for long behind one that will not come.
 */
export const GIVE_UP_AFTER = 4;

export interface ShardCollectorOptions {
  /**
   * Incremental redundancy (docs/protocol.md 2.6): ask for more shards with NEEDs (`needs()`),
   * and hold frames put together behind an older one still awaited, so frames are delivered in
   * the order their shards began. Default false: each frame is delivered as it comes together.
   */
  harq?: boolean;
}

/**
 * Collects shards into frames: bounded to MAX_GROUPS frames at once (the oldest dropped), each
 * holding at most its k shards, so a stranger's shards cost at most 8 frame bodies of memory.
 */
export class ShardCollector {
  readonly stats: FecStats = { shards: 0, badShards: 0, framesDecoded: 0, framesLost: 0 };
  readonly line: LineEstimate;
  /** What the peer last said of the line it receives on (hits per byte; 0: nothing said yet). */
  peerLambda = 0;
  /** Doubled for each answer that never came, back to 1 at the next frame that does. */
  #penalty = 1;
  /** Frames put together (or tried): at most two per frame, whatever a peer sends. */
  decodings = 0;
  readonly #groups = new Map<number, Group>();
  /**
   * Set by the push() at which a frame's k-th distinct shard arrived, whether or not it gave a
   * frame body; undefined after any other push. For a monitor that reports what each frame cost.
   */
  completed: CompletedFrame | undefined;

  readonly #harq: boolean;
  /** NEED bodies to send (NEED mode), oldest first; taken by needs(). */
  #outbox: Uint8Array[] = [];
  /** Frames ready to deliver, in order (several when a held one is released). */
  #ready: Uint8Array[] = [];

  constructor(
    private readonly maxBody: number,
    prior = 0.02,
    options: ShardCollectorOptions = {},
  ) {
    this.line = new LineEstimate(prior);
    this.#harq = options.harq ?? false;
  }

  /** NEED bodies (before COBS) to send to the peer now; emptied. */
  needs(): Uint8Array[] {
    const out = this.#outbox;
    this.#outbox = [];
    return out;
  }

  /**
   * What a pause in the shards would do: 'fresh' when a frame being collected had shards since
   * its last NEED (the caller calls idle() after a short pause), 'again' when one is still
   * awaited (idle(true) after a longer one: asked once more, or given up), else undefined.
   */
  get waiting(): 'fresh' | 'again' | undefined {
    if (!this.#harq) return undefined;
    let again = false;
    for (const g of this.#groups.values()) {
      if (g.done) continue;
      // Before its last data shard, a pause is more likely a slow sender than a frame over.
      if (g.fresh && g.needs < MAX_NEEDS && g.top >= g.k - 1) return 'fresh';
      again = true;
    }
    return again ? 'again' : undefined;
  }

  /**
   * No shard came for a while: the frames being collected have had all the shards their sender
   * sent for now; NEEDs for them (needs()). `again`: after a longer pause, also for frames whose
   * NEED brought nothing (it, or every shard answering it, was lost), if they hold at least half
   * their shards and 3 (so a stranger's shards still buy at most one NEED each). After a short
   * pause only frames whose last data shard's index has been seen are asked for.
   */
  idle(again = false): Uint8Array[] {
    if (!this.#harq) return [];
    for (const [id, g] of this.#groups) {
      if (g.done) continue;
      if (again && !g.fresh) {
        // Its last NEED brought nothing: asked once more, then given up (the frames held behind
        // it are delivered, and its loss is a loss as any other).
        if (g.silent === 0 && this.#mayAskAgain(g)) {
          g.silent++;
          g.fresh = true;
        } else {
          this.#giveUp(id, g);
          continue;
        }
      }
      if (again || g.top >= g.k - 1) this.#ask(id, g);
    }
    this.#release();
    const out = this.#ready;
    this.#ready = [];
    return out;
  }

  #mayAskAgain(g: Group): boolean {
    return !g.done && !g.fresh && g.needs > 0 && g.needs < MAX_NEEDS && g.shards.size >= 3 && 2 * g.shards.size >= g.k;
  }

  #giveUp(id: number, g: Group): void {
    g.done = true;
    g.shards.clear();
    this.stats.framesLost++;
  }

  #ask(id: number, g: Group): void {
    if (g.done || !g.fresh || g.needs >= MAX_NEEDS) return;
    if (g.top >= g.n - 1) {
      // Its last shard came: the code has no more to send. Nothing to ask for, nothing to wait for.
      this.#giveUp(id, g);
      return;
    }
    // Little of it came (a stray shard under a new id, or a frame mostly lost): not asked for; it
    // is given up when a later frame comes together, or at a long pause.
    if (g.shards.size < Math.min(3, g.k) || 2 * g.shards.size < g.k) {
      g.fresh = false;
      g.silent = 1;
      return;
    }
    g.fresh = false;
    g.needs++;
    this.stats.needsSent = (this.stats.needsSent ?? 0) + 1;
    this.#outbox.push(encodeNeed({ id, k: g.k, n: g.n, need: Math.max(1, g.k - g.shards.size) }));
  }

  /**
   * Take one shard body; returns every frame body (CRC included, checked) it makes deliverable,
   * in order: in NEED mode a frame put together behind an older one still awaited waits for it.
   */
  pushAll(body: Uint8Array): Uint8Array[] {
    const frame = this.#push(body);
    if (!this.#harq) return frame ? [frame] : [];
    const out = this.#ready;
    this.#ready = [];
    return out;
  }

  /**
   * Take one shard body; returns the frame body (CRC included, checked) once its frame is
   * complete (the first one, in NEED mode, of those it makes deliverable: use pushAll there).
   */
  push(body: Uint8Array): Uint8Array | undefined {
    return this.pushAll(body)[0];
  }

  /** NEED mode: a frame came together (whole or not) or was dropped: deliver what may go, in order. */
  #settle(id: number, g: Group, frame: Uint8Array | undefined): void {
    if (!this.#harq) return;
    // Older frames still awaited: this one waits behind them, and each counts it.
    let behind = false;
    for (const [oid, o] of this.#groups) {
      if (oid === id && o === g) break;
      if (o.done) continue;
      // Nothing is held behind a frame of which little came (a stranger's or a damaged shard
      // under a new id, or a frame mostly lost): it is given up now.
      if (o.shards.size < Math.min(3, o.k) || 2 * o.shards.size < o.k) {
        this.#giveUp(oid, o);
        continue;
      }
      // Nor behind one a NEED seldom brings: not of a code of 255, or on a line that loses more
      // than 1 shard in 5 (there its loss goes back at once, as without NEEDs).
      if (o.n < MAX_SHARDS || 5 * o.ok < 4 * (o.top + 1)) continue;
      behind = true;
      if (++o.later >= GIVE_UP_AFTER) this.#giveUp(oid, o);
    }
    if (frame) {
      if (behind) g.held = frame;
      else this.#ready.push(frame);
    }
    this.#release();
  }

  /** Held frames whose older frames are all done, in order. */
  #release(): void {
    for (const g of this.#groups.values()) {
      if (!g.done) return;
      if (g.held) {
        this.#ready.push(g.held);
        g.held = undefined;
      }
    }
  }

  /**
   * The hits per byte to plan a frame of `len` bytes to the peer by: what the peer says it sees
   * (it counts the shards it gets), or this end's own estimate while it has said nothing. A
   * small frame (a request, an answer: little to pay) is planned for the worse of the two.
   */
  sendLambda(len: number): number {
    const own = this.line.lambda;
    const l = this.peerLambda === 0 ? own : len <= SMALL_FRAME ? Math.max(own, this.peerLambda) : this.peerLambda;
    // At most 0.25 hits per byte: no line worse than that carries anything, and a peer's `seen`
    // must not make every answer to it 255 shards.
    return Math.min(MAX_LAMBDA, l * this.#penalty);
  }

  /** An answer to a frame sent in shards never came: plan the next ones for a worse line. */
  worse(): void {
    this.#penalty = Math.min(4, this.#penalty * 2);
  }

  /**
   * One shard: the frame body (CRC included, checked) once its frame is complete. A frame whose
   * CRC fails is lost, unless shards put right from a flipped bit went into it: then it is put
   * together again without them as more shards come.
   */
  #push(body: Uint8Array): Uint8Array | undefined {
    this.completed = undefined;
    const sh = parseShard(body);
    if (!sh) {
      this.stats.badShards++;
      return undefined;
    }
    this.stats.shards++;
    const s = sh.data.length;
    let g = this.#groups.get(sh.id);
    if (g && (g.k !== sh.k || g.n !== sh.n || g.s !== s)) {
      // Another shape under this id: a new frame if the one held is finished (ids come round
      // every 256 frames), else a damaged shard that passed its check (about 1 in 100 of those
      // with a byte dropped is "corrected" into a shard of another size): it must not end the
      // frame being put together.
      if (!g.done) {
        this.stats.badShards++;
        return undefined;
      }
      this.#close(sh.id, g);
      g = undefined;
    }
    if (!g) {
      if (sh.k * s > this.maxBody + 2 + s) return undefined; // larger than any frame we take
      g = { k: sh.k, n: sh.n, s, shards: new Map(), distrust: false, seen: 0, top: -1, ok: 0, done: false, fresh: false, needs: 0, later: 0, silent: 0 };
      this.#groups.set(sh.id, g);
      while (this.#groups.size > MAX_GROUPS) {
        const [oldest, og] = this.#groups.entries().next().value as [number, Group];
        this.#close(oldest, og);
      }
    }
    g.top = Math.max(g.top, sh.index);
    g.ok++;
    if (this.#harq) {
      // A sender sends a frame's shards in order, and its repairs as soon as it is asked: a shard
      // of another frame ends what the older ones will get for now. Ask for what they lack; from
      // the second shard of that frame on (or a frame whole at once): a lone damaged shard
      // "corrected" into another id must not end a frame still coming.
      if (g.ok >= 2 || g.done) {
        const key = sh.id;
        for (const [oid, o] of this.#groups) {
          if (oid === key) break;
          this.#ask(oid, o);
        }
      }
      if (!g.done) {
        g.fresh = true;
        g.silent = 0;
      }
      this.#release();
    }
    if (g.done || g.shards.has(sh.index) || (g.distrust && sh.corrected)) return undefined;
    if (sh.seen !== 0) g.seen = sh.seen;
    g.shards.set(sh.index, { data: Uint8Array.from(sh.data), corrected: sh.corrected });
    if (g.shards.size < g.k) return undefined;
    // Solving for e missing data shards costs about e^3 + e k s steps: a stranger's frame of
    // parity shards alone must not cost the receiver 100 ms each. A sender sends data shards
    // first, and no line it can carry loses MAX_SOLVE of them: wait for more.
    let missing = 0;
    for (let i = 0; i < g.k; i++) if (!g.shards.has(i)) missing++;
    // And the solve's e^3 steps are paid for by the line bytes of the frame: about 64 steps a
    // byte at most, so small parity-only shards cannot buy a 96 x 96 inversion with 1.4 KB.
    // A sender's plans count this budget (shardsFor, solveBudget): planned without it, a chunk on a
    // 5% line lost about 49 data shards of k = 80, s = 10 (budget 46) and mostly never came together.
    if (missing > solveBudget(g.k, s)) return undefined;
    const data = new Map<number, Uint8Array>();
    for (const [i, x] of g.shards) data.set(i, x.data);
    this.decodings++;
    const frame = decodeShards(g.k, data);
    const whole = frame !== undefined && frame.length >= MIN_BODY_SIZE && frame.length <= this.maxBody && crcOk(frame);
    if (!whole) {
      const suspects = [...g.shards].filter(([, x]) => x.corrected).map(([i]) => i);
      if (suspects.length > 0 && !g.distrust) {
        // A shard put right wrongly spoils the frame: do without the corrected ones, and take no
        // corrected shard for it again, and wait for more. Once only: a stranger's crafted
        // "corrected" shards cannot make the receiver solve the same frame again and again.
        for (const i of suspects) g.shards.delete(i);
        g.distrust = true;
        return undefined;
      }
    }
    g.done = true;
    g.shards.clear();
    // Sent so far: every index up to the highest seen; whole: the ones seen (the shard completing
    // it is the highest). Only a frame that came whole says anything of the line: shards that
    // make no frame may be a stranger's, claiming any index.
    // A frame can claim any index, so no frame counts for more than 4 shards sent per shard whole
    // (75% lost: worse than any line the plans carry); a stranger's frames then weigh little.
    if (whole) this.line.observe(Math.min(g.top + 1, 4 * g.ok), g.ok, s + SHARD_WIRE_EXTRA);
    this.completed = { id: sh.id, k: g.k, n: g.n, s, shards: g.ok, ...(!whole && frame ? { body: frame } : {}) };
    if (!whole) {
      this.stats.framesLost++;
      this.#settle(sh.id, g, undefined);
      return undefined;
    }
    this.stats.framesDecoded++;
    this.#penalty = 1;
    // What the peer says of the line, from a frame that came whole: a stranger's stray shards
    // with a `seen` of their own must not set how this end plans.
    if (g.seen !== 0) this.peerLambda = seenLambda(g.seen);
    this.#settle(sh.id, g, frame);
    return frame;
  }

  #close(id: number, g: Group): void {
    this.#groups.delete(id);
    // Only frames put together whole inform the line estimate (push): a frame that never came
    // together, or shards after one that did, may be a stranger's, claiming any index.
    if (!g.done) this.stats.framesLost++;
    // A frame held behind it is not lost with it (NEED mode): dropped frames make way.
    if (g.held) this.#ready.push(g.held);
    if (this.#harq) this.#release();
  }
}

/**
 * One frame (as encodeFrame writes it: 0x00, COBS body, 0x00) as shards on the line: each
 * COBS-encoded and ended by 0x00, after one leading 0x00; `seen`: seenByte of the sender's estimate.
 */
export function frameAsShards(wireFrame: Uint8Array, id: number, plan: ShardPlan, seen = 0, count = plan.n): Uint8Array {
  const body = cobsDecode(wireFrame.subarray(1, wireFrame.length - 1));
  if (!body) throw new RangeError('not a frame');
  const shards = encodeShards(body, id, plan, seen, count);
  const out = new Uint8Array(1 + shards.reduce((n, b) => n + cobsMaxEncodedLength(b.length) + 1, 0));
  let o = 1;
  for (const b of shards) {
    o += cobsEncodeInto(b, out.subarray(o));
    out[o++] = 0;
  }
  return out.subarray(0, o);
}
