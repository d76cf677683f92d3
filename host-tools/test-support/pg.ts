// Test support: a PostgreSQL database of its own for a test, made on the server QKT_TEST_PG names
// (default the CI machine's: role qkt on 127.0.0.1) and dropped when the test ends.
import { randomBytes } from 'node:crypto';
import { PgDriver } from '../station/sql-driver.js';

export const PG_ADMIN_URL = process.env['QKT_TEST_PG'] ?? 'postgres://qkt:qkt@127.0.0.1:5432/postgres';

let reachable: string | false | undefined;

/** Why PostgreSQL tests cannot run here, or false. Under CI=true the server must be there: no skip. */
export function pgSkipReason(): string | false {
  if (reachable === undefined) {
    try {
      new PgDriver(PG_ADMIN_URL).close();
      reachable = false;
    } catch (e) {
      reachable = `no PostgreSQL at ${PG_ADMIN_URL.replace(/:[^:@/]*@/, ':***@')} (${(e as Error).message}); set QKT_TEST_PG`;
    }
  }
  if (reachable && process.env['CI'] === 'true') throw new Error(`CI=true and ${reachable}: .ci/run installs and starts PostgreSQL`);
  return reachable;
}

/** A new empty database; `drop()` removes it (and ends its connections). */
export function tempDatabase(): { url: string; drop: () => void } {
  const name = `qkt_test_${randomBytes(6).toString('hex')}`;
  const admin = new PgDriver(PG_ADMIN_URL);
  try {
    admin.exec(`CREATE DATABASE ${name}`);
  } finally {
    admin.close();
  }
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: () => {
      const a = new PgDriver(PG_ADMIN_URL);
      try {
        a.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        a.close();
      }
    },
  };
}
