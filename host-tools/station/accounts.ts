// One terminal's row of the station's key accounts (STATION STATUS, docs/protocol.md 3.12.3), built
// the same way by the running station (serve.ts) and by `qkt station status --home H`, which reads
// the store itself.
import { USAGE_DAYS } from './store.js';
import type { StationKeyStore } from './store.js';
import type { StationForecast, StationTerminalRow } from './client.js';

/** The row of `terminalId`; `generation` is its device generation at the KMD (null: not enrolled, or its record damaged). */
export function accountRow(store: StationKeyStore, terminalId: string, generation: number | null, now = Date.now()): StationTerminalRow {
  const account = store.account(terminalId);
  return { terminalId, generation, ...account, lastUplink: store.lastUplink(terminalId), forecast: forecast(store.usageDays(terminalId), account.storedKeyBits, now) };
}

/**
 * When the keys the station holds for a terminal run out at its recent use: the key bits its
 * uplinks used over the last USAGE_DAYS UTC days (from the first day with use in that window to
 * today, today counted whole), and the whole days that `storedKeyBits` lasts at that rate. Null
 * when it used no key in the window: there is nothing to forecast from.
 */
export function forecast(days: ReadonlyArray<readonly [number, number]>, storedKeyBits: number, now: number): StationForecast | null {
  const today = Math.floor(now / 86_400_000);
  const recent = days.filter(([d]) => d > today - USAGE_DAYS && d <= today);
  const used = recent.reduce((n, [, b]) => n + b, 0);
  if (used === 0) return null;
  const basisDays = today - Math.min(...recent.map(([d]) => d)) + 1;
  const keyBitsPerDay = Math.ceil(used / basisDays);
  return { keyBitsPerDay, basisDays, daysLeft: Math.floor(storedKeyBits / keyBitsPerDay) };
}
