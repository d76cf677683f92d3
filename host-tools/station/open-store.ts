// Which kind of station store a folder holds: a SQLite database (station.sqlite), a PostgreSQL
// database (its address in database.url), or pool images.
import { existsSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import { DamagedFileError } from '../json-file.js';
import { join } from 'node:path';
import { StationStore } from './store.js';
import type { StationKeyStore } from './store.js';
import { SQL_STORE_FILE, SqlStationStore } from './sql-store.js';
import { writeFileAtomic } from '../fs-atomic.js';

export type StationStoreKind = 'files' | 'sqlite' | 'postgres';

/** The file in a station folder that names its PostgreSQL database (it may hold a password: 0600). */
export const DB_URL_FILE = 'database.url';

/** A PostgreSQL address as `--db` takes it: postgres:// or postgresql://, nothing else. */
export function checkDbUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('--db must be a postgres://user@host:port/database address');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new Error(`--db must be a postgres:// address, not ${u.protocol}//`);
  return url;
}

/** The database address a folder names, if it names one. */
export function stationDbUrl(dir: string): string | undefined {
  const f = join(dir, DB_URL_FILE);
  if (!existsSync(f)) return undefined;
  const url = readFirstLine(f);
  try {
    return checkDbUrl(url);
  } catch {
    throw new DamagedFileError(f, 'not a postgres:// address');
  }
}

/** A small text file's first line (at most 4 KiB read; a FIFO or device is not opened for a blocking read). */
function readFirstLine(f: string): string {
  const st = lstatSync(f);
  if (!st.isFile() || st.size > 4096) throw new DamagedFileError(f, 'not a regular file of at most 4 KiB');
  return readFileSync(f, 'utf8').split('\n')[0]!.trim();
}

/**
 * The station store in `dir`: PostgreSQL when the folder names a database, SQLite when it holds
 * one, else the pool-image store. `create` makes a new SQLite or PostgreSQL store (with `url`) in a
 * folder that holds no terminal's pool image yet (two kinds in one folder would split the keys).
 */
export function openStationStore(dir: string, o: { create?: StationStoreKind; url?: string } = {}): StationKeyStore {
  const url = stationDbUrl(dir);
  if (url !== undefined) return new SqlStationStore(dir, { url });
  if (existsSync(join(dir, SQL_STORE_FILE))) return new SqlStationStore(dir);
  if (o.create === 'sqlite' || o.create === 'postgres') {
    const images = existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, 'pool.img'))) : [];
    if (images.length > 0) throw new Error(`${dir} already holds pool images (${images.length} terminals): a station store is not converted`);
    if (o.create === 'sqlite') return new SqlStationStore(dir, { create: true });
    if (o.url === undefined) throw new Error('a PostgreSQL station store needs the database address (--db)');
    const store = new SqlStationStore(dir, { url: checkDbUrl(o.url) });
    writeFileAtomic(join(dir, DB_URL_FILE), `${o.url}\n`);
    return store;
  }
  return new StationStore(dir);
}
