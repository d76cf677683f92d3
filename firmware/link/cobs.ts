// Consistent Overhead Byte Stuffing (Cheshire & Baker, IEEE/ACM ToN 7(2), 1999): removes every
// 0x00 from a frame body so 0x00 can delimit frames. Costs at most 1 byte in 254.
// Hand-written: the npm COBS packages are unmaintained, and the codec is 40 lines an MCU runs too.

/** Worst-case encoded size of `n` body bytes (without the 0x00 delimiter). */
export function cobsMaxEncodedLength(n: number): number {
  return n + Math.ceil(n / 254) + 1;
}

/** Encode `data` into `out` (which must hold cobsMaxEncodedLength bytes); returns the length used. */
export function cobsEncodeInto(data: Uint8Array, out: Uint8Array): number {
  let codeAt = 0; // where the current block's code byte goes
  let o = 1;
  let code = 1;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b !== 0) {
      out[o++] = b;
      code++;
    }
    if (b === 0 || code === 0xff) {
      // A zero ends the block; so does a full block of 254 non-zero bytes (code 0xFF, no implied
      // zero). A full block at the very end opens no new block: the canonical encoding.
      out[codeAt] = code;
      codeAt = o;
      code = 1;
      if (b === 0 || i < data.length - 1) o++;
    }
  }
  out[codeAt] = code;
  return o;
}

export function cobsEncode(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(cobsMaxEncodedLength(data.length));
  return out.subarray(0, cobsEncodeInto(data, out));
}

/**
 * Decode one COBS block sequence (no delimiter). Returns the decoded length written to `out`,
 * or -1 when the input is not valid COBS (a 0x00 inside, or a code running past the end).
 */
export function cobsDecodeInto(data: Uint8Array, length: number, out: Uint8Array): number {
  let i = 0;
  let o = 0;
  while (i < length) {
    const code = data[i]!;
    if (code === 0) return -1;
    if (i + code > length) return -1; // the block claims bytes past the end
    i++;
    for (let k = 1; k < code; k++) {
      const b = data[i++]!;
      if (b === 0) return -1;
      if (o >= out.length) return -1;
      out[o++] = b;
    }
    // A code below 0xFF implies a zero after its block, except after the last block.
    if (code !== 0xff && i < length) {
      if (o >= out.length) return -1;
      out[o++] = 0;
    }
  }
  return o;
}

export function cobsDecode(data: Uint8Array): Uint8Array | undefined {
  const out = new Uint8Array(data.length);
  const n = cobsDecodeInto(data, data.length, out);
  return n < 0 ? undefined : out.subarray(0, n);
}
