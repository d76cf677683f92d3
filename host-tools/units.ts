// Key amounts and rates as the CLI accepts them (DESIGN.md "Units"): bits are the unit; Mbit and
// kbit of key material are binary (2^20, 2^10 bits), rates are decimal (11kbit/s = 11,000 bit/s).

import { InputError } from './input-error.js';

const AMOUNT: Record<string, number> = {
  '': 1,
  bit: 1,
  bits: 1,
  kbit: 2 ** 10,
  mbit: 2 ** 20,
  gbit: 2 ** 30,
  b: 8,
  byte: 8,
  bytes: 8,
  kib: 8 * 2 ** 10,
  mib: 8 * 2 ** 20,
  gib: 8 * 2 ** 30,
};

const RATE: Record<string, number> = {
  'bit/s': 1,
  'bps': 1,
  'kbit/s': 1e3,
  'kbps': 1e3,
  'mbit/s': 1e6,
  'mbps': 1e6,
};

/** Parse a key amount such as `3Mbit`, `384KiB`, `4096` (bits) into bits. */
export function parseBits(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? AMOUNT[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new InputError(`not a key amount: ${JSON.stringify(text)} (try 3Mbit, 384KiB or a number of bits)`);
  }
  const bits = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bits) || bits <= 0) throw new InputError(`key amount must be a positive whole number of bits: ${text}`);
  return bits;
}

/** Parse a rate such as `11kbit/s` or `11000` (bit/s) into bits per second. */
export function parseRate(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z/]*)\s*$/.exec(text);
  const unit = m ? (m[2] === '' ? 1 : RATE[m[2]!.toLowerCase()]) : undefined;
  if (!m || unit === undefined) throw new InputError(`not a rate: ${JSON.stringify(text)} (try 11kbit/s)`);
  const r = Number(m[1]) * unit;
  if (!(r > 0) || !Number.isFinite(r) || r > 1e15) throw new InputError(`rate must be positive and at most 1 Pbit/s: ${text}`);
  return r;
}

const FREQUENCY: Record<string, number> = { '': 1, hz: 1, khz: 1e3, mhz: 1e6, ghz: 1e9 };

/** Parse a frequency such as `1GHz`, `50MHz` or `1000000` (Hz) into Hz (a QKD source's pulse rate). */
export function parseFrequency(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? FREQUENCY[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InputError(`not a frequency: ${JSON.stringify(text)} (try 1GHz or 50MHz)`);
  const hz = Number(m[1]) * unit;
  if (!(hz > 0) || !Number.isFinite(hz) || hz > 1e12) throw new InputError(`frequency must be positive and at most 1 THz: ${text}`);
  return hz;
}

/** Human form of a frequency: 1e9 -> "1 GHz", 50e6 -> "50 MHz". */
export function formatFrequency(hz: number): string {
  for (const [unit, k] of [['GHz', 1e9], ['MHz', 1e6], ['kHz', 1e3]] as const) if (hz >= k) return `${trim(hz / k)} ${unit}`;
  return `${trim(hz)} Hz`;
}

/** Human form of a bit count: 3,145,728 bits -> "3 Mbit". */
export function formatBits(bits: number): string {
  if (bits >= 2 ** 20 && bits % 2 ** 14 === 0) return `${trim(bits / 2 ** 20)} Mbit`;
  if (bits >= 2 ** 10 && bits % 2 ** 4 === 0) return `${trim(bits / 2 ** 10)} kbit`;
  return `${bits} bit`;
}

function trim(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/\.?0+$/, '');
}

const DURATION: Record<string, number> = { '': 1, us: 1e-3, ms: 1, s: 1e3 };

/** Parse a duration such as `20ms`, `0.5s`, `250us` or `20` (ms) into milliseconds (0 allowed). */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? DURATION[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InputError(`not a duration: ${JSON.stringify(text)} (try 20ms or 0.5s)`);
  const v = Number(m[1]) * unit;
  if (!Number.isFinite(v)) throw new InputError(`not a duration: ${JSON.stringify(text)} (too large)`);
  return v;
}

/** Parse a percentage `1%` or a fraction `0.01` into a fraction from 0 to 1. */
export function parseFraction(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)(%?)\s*$/.exec(text);
  const r = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(r >= 0 && r <= 1)) throw new InputError(`not a percentage from 0% to 100%: ${JSON.stringify(text)} (try 1% or 0.01)`);
  return r;
}
