// A raw CBOR writer (RFC 8949) for the fuzzer: it writes what a conforming encoder never would
// (indefinite lengths with or without their break, heads declaring lengths the bytes do not hold,
// non-shortest heads, duplicate keys, any tag, half floats, NaN), so the module's decoder sees it.
// Items are a small tree the structure-aware mutations edit before encoding.

export type Item =
  | { t: 'uint'; v: bigint }
  /** Negative integer -1 - v (major type 1). */
  | { t: 'nint'; v: bigint }
  | { t: 'bytes'; v: Uint8Array; indef?: boolean }
  | { t: 'text'; v: string; indef?: boolean }
  | { t: 'array'; v: Item[]; indef?: boolean; noBreak?: boolean }
  | { t: 'map'; v: Array<[Item, Item]>; indef?: boolean; noBreak?: boolean }
  | { t: 'tag'; tag: bigint; v: Item }
  | { t: 'float'; v: number; size: 2 | 4 | 8 }
  /** Simple values: 20 false, 21 true, 22 null, 23 undefined, others unassigned. */
  | { t: 'simple'; v: number }
  /** Bytes written as they are (a lying head, a lone break, a truncated item). */
  | { t: 'raw'; v: Uint8Array };

/** A JS value as an item: integers, strings, byte strings, arrays, plain objects (text keys). */
export function item(v: unknown): Item {
  if (typeof v === 'number' && Number.isInteger(v)) return v >= 0 ? { t: 'uint', v: BigInt(v) } : { t: 'nint', v: BigInt(-1 - v) };
  if (typeof v === 'number') return { t: 'float', v, size: 8 };
  if (typeof v === 'bigint') return v >= 0n ? { t: 'uint', v } : { t: 'nint', v: -1n - v };
  if (typeof v === 'string') return { t: 'text', v };
  if (typeof v === 'boolean') return { t: 'simple', v: v ? 21 : 20 };
  if (v === null) return { t: 'simple', v: 22 };
  if (v instanceof Uint8Array) return { t: 'bytes', v };
  if (Array.isArray(v)) return { t: 'array', v: v.map(item) };
  if (typeof v === 'object') return { t: 'map', v: Object.entries(v as Record<string, unknown>).map(([k, x]) => [{ t: 'text', v: k }, item(x)]) };
  return { t: 'simple', v: 23 };
}

/** A head: major type and argument, shortest form unless `width` forces one (1, 2, 4 or 8 bytes). */
export function head(major: number, arg: bigint | number, width?: 0 | 1 | 2 | 4 | 8): number[] {
  const a = BigInt(arg);
  const m = major << 5;
  const w = width ?? (a < 24n ? 0 : a < 0x100n ? 1 : a < 0x10000n ? 2 : a < 0x100000000n ? 4 : 8);
  if (w === 0) return [m | Number(a)];
  const out = [m | (w === 1 ? 24 : w === 2 ? 25 : w === 4 ? 26 : 27)];
  for (let i = w - 1; i >= 0; i--) out.push(Number((a >> BigInt(8 * i)) & 0xffn));
  return out;
}

function float(v: number, size: 2 | 4 | 8): number[] {
  if (size === 2) {
    // Half floats for the special values and small integers; anything else as its float32 top bits.
    const dv = new DataView(new ArrayBuffer(4));
    dv.setFloat32(0, v);
    const x = dv.getUint32(0);
    const sign = (x >>> 16) & 0x8000;
    const exp = ((x >>> 23) & 0xff) - 127 + 15;
    let h: number;
    if (Number.isNaN(v)) h = 0x7e00;
    else if (!Number.isFinite(v)) h = sign | 0x7c00;
    else if (exp <= 0) h = sign;
    else if (exp >= 31) h = sign | 0x7c00;
    else h = sign | (exp << 10) | ((x >>> 13) & 0x3ff);
    return [0xf9, h >> 8, h & 0xff];
  }
  const dv = new DataView(new ArrayBuffer(size));
  if (size === 4) dv.setFloat32(0, v);
  else dv.setFloat64(0, v);
  return [size === 4 ? 0xfa : 0xfb, ...new Uint8Array(dv.buffer)];
}

/** A growing byte buffer: items up to a frame's size (and an oversize one) without per-byte arrays. */
class Writer {
  private buf = new Uint8Array(256);
  length = 0;
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    b.set(this.buf.subarray(0, this.length));
    this.buf = b;
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.length++] = b;
  }
  bytes(b: ArrayLike<number>): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function write(x: Item, out: Writer): void {
  switch (x.t) {
    case 'uint':
      out.bytes(head(0, x.v));
      return;
    case 'nint':
      out.bytes(head(1, x.v));
      return;
    case 'bytes':
    case 'text': {
      const major = x.t === 'bytes' ? 2 : 3;
      const b = x.t === 'bytes' ? x.v : new TextEncoder().encode(x.v);
      if (x.indef) {
        // Two definite chunks inside an indefinite string, then the break.
        const mid = b.length >> 1;
        out.byte((major << 5) | 31);
        out.bytes(head(major, mid));
        out.bytes(b.subarray(0, mid));
        out.bytes(head(major, b.length - mid));
        out.bytes(b.subarray(mid));
        out.byte(0xff);
      } else {
        out.bytes(head(major, b.length));
        out.bytes(b);
      }
      return;
    }
    case 'array':
      out.bytes(x.indef ? [0x9f] : head(4, x.v.length));
      for (const e of x.v) write(e, out);
      if (x.indef && !x.noBreak) out.byte(0xff);
      return;
    case 'map':
      out.bytes(x.indef ? [0xbf] : head(5, x.v.length));
      for (const [k, v] of x.v) {
        write(k, out);
        write(v, out);
      }
      if (x.indef && !x.noBreak) out.byte(0xff);
      return;
    case 'tag':
      out.bytes(head(6, x.tag));
      write(x.v, out);
      return;
    case 'float':
      out.bytes(float(x.v, x.size));
      return;
    case 'simple':
      out.bytes(x.v < 24 ? [0xe0 | x.v] : [0xf8, x.v & 0xff]);
      return;
    case 'raw':
      out.bytes(x.v);
      return;
  }
}

export function encodeItem(x: Item): Uint8Array {
  const out = new Writer();
  write(x, out);
  return out.result();
}
