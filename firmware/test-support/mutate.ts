// Test support for the decoders' property tests: mutations of a valid encoding (bit flips, byte
// overwrites, truncation, extension, insertion, deletion), and the check every decoder must pass on
// untrusted bytes: a valid result, or the decoder's own typed error with a message; never a raw
// TypeError/RangeError from a DataView or an undefined access escaping.
import fc from 'fast-check';

export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'truncate'; to: number }
  | { op: 'extend'; bytes: Uint8Array }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number };

/** Positions are raw naturals, taken modulo the length at apply time (so one arbitrary fits any input). */
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }) },
);

export function applyMutation(v: Uint8Array, m: Mutation): Uint8Array {
  const n = v.length;
  const at = (x: number, span: number) => (span <= 0 ? 0 : x % span);
  switch (m.op) {
    case 'flip': {
      if (n === 0) return v.slice();
      const out = v.slice();
      out[at(m.at, n)]! ^= 1 << m.bit;
      return out;
    }
    case 'set': {
      if (n === 0) return v.slice();
      const out = v.slice();
      out[at(m.at, n)] = m.value;
      return out;
    }
    case 'truncate':
      return v.slice(0, at(m.to, n));
    case 'extend':
      return Uint8Array.from([...v, ...m.bytes]);
    case 'insert': {
      const i = at(m.at, n + 1);
      return Uint8Array.from([...v.subarray(0, i), ...m.bytes, ...v.subarray(i)]);
    }
    case 'delete': {
      const i = at(m.at, n);
      return Uint8Array.from([...v.subarray(0, i), ...v.subarray(i + m.count)]);
    }
  }
}

/** One to `max` mutations applied in turn to `valid`. */
export function mutationsArb(max = 3): fc.Arbitrary<Mutation[]> {
  return fc.array(mutationArb, { minLength: 1, maxLength: max });
}

export function mutate(valid: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  return ms.reduce((v, m) => applyMutation(v, m), valid);
}

/** Mutated versions of the encodings `valid` produces. */
export function mutatedArb(valid: fc.Arbitrary<Uint8Array>, max = 3): fc.Arbitrary<{ original: Uint8Array; mutated: Uint8Array }> {
  return fc.tuple(valid, mutationsArb(max)).map(([original, ms]) => ({ original, mutated: mutate(original, ms) }));
}

/** Random bytes, half of them behind a given prefix (a magic and version), so the checks past it get exercised. */
export function randomWithPrefixArb(prefix: Uint8Array, maxLength = 400): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.uint8Array({ maxLength }),
    fc.uint8Array({ maxLength }).map((b) => Uint8Array.from([...prefix, ...b])),
  );
}

/** Every proper prefix of `v` (lengths 0 .. v.length - 1): "truncation at every length". */
export function* everyTruncation(v: Uint8Array): Generator<Uint8Array> {
  for (let n = 0; n < v.length; n++) yield v.slice(0, n);
}

/**
 * The same bytes as a view into a larger buffer with garbage around them (nonzero byteOffset), as
 * a decoder gets them from a CBOR payload or a file read: a DataView that forgets the offset shows.
 */
export function offsetView(b: Uint8Array, pad = 7): Uint8Array {
  const big = new Uint8Array(b.length + 2 * pad).fill(0xa5);
  big.set(b, pad);
  return big.subarray(pad, pad + b.length);
}

export const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/** A typed error class a decoder may throw (matched with instanceof). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => Error;

/**
 * Run a decoder on untrusted input. It must return (and `check` the result, which throws if it is
 * not valid) or throw an instance of one of `allowed` with a non-empty message. Anything else is
 * rethrown wrapped, naming the input, so fast-check reports it as the counterexample. The input must
 * not be modified by the decoder either. Returns the result, or undefined after an allowed error.
 */
export function decodesCleanly<T>(input: Uint8Array, decode: (b: Uint8Array) => T, allowed: readonly ErrorClass[], check?: (r: T) => void): T | undefined {
  const before = input.slice();
  let result: T;
  try {
    result = decode(input);
  } catch (e) {
    if (!sameBytes(input, before)) throw new Error(`decoder modified its input ${hex(before)}`);
    if (!allowed.some((c) => e instanceof c)) {
      const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      throw new Error(`raw exception escaped for input ${hex(input)}: ${what}`, { cause: e });
    }
    if (typeof (e as Error).message !== 'string' || (e as Error).message.trim() === '') {
      throw new Error(`${(e as Error).name} without a message for input ${hex(input)}`);
    }
    return undefined;
  }
  if (!sameBytes(input, before)) throw new Error(`decoder modified its input ${hex(before)}`);
  check?.(result);
  return result;
}
