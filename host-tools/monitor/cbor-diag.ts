// CBOR diagnostic notation (RFC 8949 section 8) for what `qkt monitor` shows of a frame payload.
// Read from the raw bytes, not from a decoded value, so it shows what is on the wire (integer
// sizes beyond 2^53, tags, indefinite lengths) and never throws: invalid CBOR yields the text read
// so far and the error in words. Long byte strings are elided to a prefix and their length, and
// where the payload may carry sealed key material (DiagOptions.lengthOnly) only their length shows.

export interface DiagOptions {
  /** Byte strings up to this length are shown whole; longer ones as a prefix and their length. Default 16. */
  maxBytes?: number;
  /** Bytes of a longer byte string shown before `..`. Default 4. */
  prefixBytes?: number;
  /** Show no byte of any byte string, only its length (sealed batches, key-bearing fields). */
  lengthOnly?: boolean;
  /** Text strings longer than this are cut, with their length. Default 200 characters. */
  maxText?: number;
  /** The whole output is cut at this many characters with ` ...`. Default 2000. */
  maxChars?: number;
  /** Nesting deeper than this is refused as an error (a hostile payload). Default 32. */
  maxDepth?: number;
}

export interface Diag {
  /** The diagnostic notation; partial (up to the fault) when `error` is set. */
  text: string;
  /** Why the bytes are not one well-formed CBOR item, in words; absent when they are. */
  error?: string;
}

class CborDiagError extends Error {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super(message);
    this.name = 'CborDiagError';
  }
}

const BREAK = Symbol('break');

/** Diagnostic notation of `bytes`, which should hold exactly one CBOR data item. */
export function cborDiag(bytes: Uint8Array, options: DiagOptions = {}): Diag {
  const maxBytes = options.maxBytes ?? 16;
  const prefixBytes = options.prefixBytes ?? 4;
  const maxText = options.maxText ?? 200;
  const maxChars = options.maxChars ?? 2000;
  const maxDepth = options.maxDepth ?? 32;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let out = '';

  const need = (n: number) => {
    if (pos + n > bytes.length) throw new CborDiagError(`unexpected end (${n} more bytes needed)`, pos);
  };
  const emit = (s: string): undefined => {
    out += s;
    return undefined;
  };

  /** The argument of a head: a number, or a bigint for an 8-byte argument above 2^53. null: indefinite. */
  const argument = (info: number): number | bigint | null => {
    if (info < 24) return info;
    if (info === 24) return need(1), bytes[pos++]!;
    if (info === 25) return need(2), (pos += 2), view.getUint16(pos - 2);
    if (info === 26) return need(4), (pos += 4), view.getUint32(pos - 4);
    if (info === 27) {
      need(8);
      const v = view.getBigUint64(pos);
      pos += 8;
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    if (info === 31) return null;
    throw new CborDiagError(`reserved additional information ${info}`, pos - 1);
  };

  const count = (n: number | bigint): number => {
    // Every item takes at least one byte: a count above what is left cannot be honest.
    if (typeof n === 'bigint' || n > bytes.length - pos) throw new CborDiagError(`length ${n} runs past the end`, pos);
    return n;
  };

  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  const byteString = (b: Uint8Array): string => {
    if (options.lengthOnly) return `h'..'(${b.length} bytes)`;
    if (b.length <= maxBytes) return `h'${hex(b)}'`;
    return `h'${hex(b.subarray(0, prefixBytes))}..'(${b.length} bytes)`;
  };
  const textString = (b: Uint8Array): string => {
    const s = new TextDecoder('utf-8', { fatal: false }).decode(b);
    if (s.length <= maxText) return JSON.stringify(s);
    return `${JSON.stringify(s.slice(0, maxText))}..(${b.length} bytes)`;
  };

  /** Read a definite or indefinite string of major type `major` (2 or 3) and emit it. */
  const string = (major: number, info: number) => {
    const n = argument(info);
    if (n !== null) {
      const len = count(n);
      need(len);
      const b = bytes.subarray(pos, pos + len);
      pos += len;
      emit(major === 2 ? byteString(b) : textString(b));
      return;
    }
    // Indefinite: chunks of the same major type up to a break (RFC 8949 3.2.3).
    const parts: Uint8Array[] = [];
    for (;;) {
      need(1);
      const ib = bytes[pos++]!;
      if (ib === 0xff) break;
      if (ib >> 5 !== major || (ib & 31) === 31) throw new CborDiagError('a chunk of an indefinite string is not a definite string of its type', pos - 1);
      const len = count(argument(ib & 31)!);
      need(len);
      parts.push(bytes.subarray(pos, pos + len));
      pos += len;
    }
    emit(`(_ ${parts.map((b) => (major === 2 ? byteString(b) : textString(b))).join(', ')})`);
  };

  const float16 = (h: number): number => {
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    const val = exp === 0 ? mant * 2 ** -24 : exp === 31 ? (mant === 0 ? Infinity : NaN) : (mant + 1024) * 2 ** (exp - 25);
    return h & 0x8000 ? -val : val;
  };
  const floatText = (f: number, size: number) => {
    const s = Number.isNaN(f) ? 'NaN' : f === Infinity ? 'Infinity' : f === -Infinity ? '-Infinity' : Number.isInteger(f) ? f.toFixed(1) : String(f);
    return `${s}_${size}`;
  };

  /** Read one item and emit it; returns BREAK for a break code where `breakOk`. */
  const item = (depth: number, breakOk = false): typeof BREAK | undefined => {
    if (depth > maxDepth) throw new CborDiagError(`nested deeper than ${maxDepth} levels`, pos);
    if (out.length > maxChars) throw new CborDiagError('output limit', pos); // caught below: cut, not an error
    need(1);
    const ib = bytes[pos++]!;
    const major = ib >> 5;
    const info = ib & 31;
    switch (major) {
      case 0:
      case 1: {
        const n = argument(info);
        if (n === null) throw new CborDiagError('an integer cannot have an indefinite length', pos - 1);
        emit(major === 0 ? String(n) : String(-1n - BigInt(n)));
        return;
      }
      case 2:
      case 3:
        string(major, info);
        return;
      case 4:
      case 5: {
        const n = argument(info);
        const [open, close] = major === 4 ? ['[', ']'] : ['{', '}'];
        emit(n === null ? `${open}_ ` : open);
        const members = n === null ? Infinity : count(n);
        for (let i = 0; i < members; i++) {
          if (i > 0) emit(', ');
          const broke = item(depth + 1, n === null);
          if (broke === BREAK) {
            if (i > 0) out = out.slice(0, -2);
            break;
          }
          if (major === 5) {
            emit(': ');
            item(depth + 1);
          }
        }
        emit(close);
        return;
      }
      case 6: {
        const tag = argument(info);
        if (tag === null) throw new CborDiagError('a tag cannot have an indefinite length', pos - 1);
        emit(`${tag}(`);
        item(depth + 1);
        emit(')');
        return;
      }
      default: {
        if (info === 20) return emit('false');
        if (info === 21) return emit('true');
        if (info === 22) return emit('null');
        if (info === 23) return emit('undefined');
        if (info < 20) return emit(`simple(${info})`);
        if (info === 24) {
          need(1);
          return emit(`simple(${bytes[pos++]!})`);
        }
        if (info === 25) return need(2), (pos += 2), emit(floatText(float16(view.getUint16(pos - 2)), 1));
        if (info === 26) return need(4), (pos += 4), emit(floatText(view.getFloat32(pos - 4), 2));
        if (info === 27) return need(8), (pos += 8), emit(floatText(view.getFloat64(pos - 8), 3));
        if (info === 31) {
          if (breakOk) return BREAK;
          throw new CborDiagError('a break code outside an indefinite-length item', pos - 1);
        }
        throw new CborDiagError(`reserved simple value encoding ${info}`, pos - 1);
      }
    }
  };

  try {
    if (bytes.length === 0) return { text: '', error: 'no bytes (empty payload)' };
    item(0);
    if (pos < bytes.length) return { text: out, error: `${bytes.length - pos} bytes after the CBOR item` };
    return { text: out };
  } catch (e) {
    if (!(e instanceof CborDiagError)) throw e;
    if (e.message === 'output limit') return { text: out.slice(0, maxChars) + ' ...' };
    return { text: out, error: `invalid CBOR at byte ${e.at}: ${e.message}` };
  }
}
