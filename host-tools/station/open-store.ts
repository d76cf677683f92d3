// Which kind of station store a folder holds: a SQLite database (station.sqlite) or pool images.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { StationStore } from './store.js';
import type { StationKeyStore } from './store.js';
import { SQL_STORE_FILE, SqlStationStore } from './sql-store.js';

export type StationStoreKind = 'files' | 'sqlite';

/**
 * The station store in `dir`: the SQLite store when the folder holds its database, else the
 * pool-image store. `create: 'sqlite'` makes a new database in a folder that holds no terminal's
 * pool image yet (two kinds in one folder would split the keys between them).
 */
export function openStationStore(dir: string, o: { create?: StationStoreKind } = {}): StationKeyStore {
  if (existsSync(join(dir, SQL_STORE_FILE))) return new SqlStationStore(dir);
  if (o.create === 'sqlite') {
    const images = existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, 'pool.img'))) : [];
    if (images.length > 0) throw new Error(`${dir} already holds pool images (${images.length} terminals): a station store is not converted`);
    return new SqlStationStore(dir, { create: true });
  }
  return new StationStore(dir);
}

/** The kind of store in `dir` (without opening it). */
export function stationStoreKind(dir: string): StationStoreKind {
  return existsSync(join(dir, SQL_STORE_FILE)) ? 'sqlite' : 'files';
}
