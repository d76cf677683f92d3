// One terminal's row of the station's key accounts (STATION STATUS, docs/protocol.md 3.12.3), built
// the same way by the running station (serve.ts) and by `qkt station status --home H`, which reads
// the store itself.
import type { StationStore } from './store.js';
import type { StationTerminalRow } from './client.js';

/** The row of `terminalId`; `generation` is its device generation at the KMD (null: not enrolled, or its record damaged). */
export function accountRow(store: StationStore, terminalId: string, generation: number | null): StationTerminalRow {
  return { terminalId, generation, ...store.account(terminalId), lastUplink: store.lastUplink(terminalId) };
}
