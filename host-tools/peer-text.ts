// Text that came from the other end of a cable or socket (a terminal id, a firmware version, a
// refusal reason, a carrier id in a KMD's HELLO, a USB descriptor) made safe to print to a person's
// terminal: control characters (C0, ESC, DEL, C1) and the bidirectional overrides are shown as
// `\xNN` / `\u{NNNN}` instead of being written raw, so a device cannot move the cursor, recolour,
// retitle the window or hide text in what `qkt` prints. One helper for every human output path;
// `--json` needs none (JSON escapes C0 itself, and a program reads it, not a terminal).

/** C0 (0x00-0x1f, ESC included), DEL, C1 (0x80-0x9f), and the Unicode bidi controls. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

const escape = (c: string): string => {
  const n = c.codePointAt(0)!;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
};

/**
 * `value` as one printable line: controls escaped, cut to `max` characters (with `…`), and
 * anything not a string shown as String(value). A value with nothing to escape comes back as is.
 */
export function printable(value: unknown, max = 200): string {
  const s = typeof value === 'string' ? value : String(value);
  const safe = s.replace(UNSAFE, escape);
  return safe.length > max ? `${safe.slice(0, max)}…` : safe;
}
