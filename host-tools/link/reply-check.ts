// Checks every reply a device sends before anyone reads it: the codec keeps a CBOR integer beyond
// 2^53 as a BigInt (firmware/link/codec.ts "Integers"), which no qkt device sends and nothing on
// the host can print or count with (`--json` would crash). Such a reply is refused as a whole.
import { PeerDataError } from './errors.js';
import { peerName, requestName } from './names.js';

/** The path of the first BigInt in `v` (`pool.storedKeyBits`, `batches[2].bits`), or undefined. */
export function bigIntField(v: unknown, path = ''): string | undefined {
  const seen = new Set<object>();
  const walk = (x: unknown, at: string): string | undefined => {
    if (typeof x === 'bigint') return at || '(the reply)';
    if (x === null || typeof x !== 'object' || seen.has(x) || x instanceof Uint8Array) return undefined;
    seen.add(x);
    if (Array.isArray(x)) {
      for (let i = 0; i < x.length; i++) {
        const r = walk(x[i], `${at}[${i}]`);
        if (r) return r;
      }
      return undefined;
    }
    for (const [k, y] of Object.entries(x as Record<string, unknown>)) {
      const r = walk(y, at ? `${at}.${k}` : k);
      if (r) return r;
    }
    return undefined;
  };
  return walk(v, path);
}

/** A PeerDataError for the reply to (group, command) when it holds a number out of range, else undefined. */
export function checkReply(group: number, command: number, payload: unknown): PeerDataError | undefined {
  const field = bigIntField(payload);
  if (field === undefined) return undefined;
  // The field's name is the device's text: only [A-Za-z0-9_.[\]] of it is shown.
  const name = field.replace(/[^A-Za-z0-9_.[\]]/g, '?').slice(0, 60);
  return new PeerDataError(`${peerName(group)} sent an out-of-range number in its answer to ${requestName(group, command)}, field ${name}; it is not a genuine qkt device or it is damaged`);
}
