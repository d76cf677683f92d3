// The PostgreSQL driver (sql-driver.ts): synchronous queries through a worker thread, each answer
// matched to its request. An answer that is not the waiting request's (a stray one, or a late
// second one) must never be taken as its rows: found as a broker worker that, after a flood,
// said it held no keys for enrolled terminals and knew a terminal that did not exist.
import t from 'tap';
import type { MessagePort } from 'node:worker_threads';
import { PgDriver } from './sql-driver.js';
import { PG_ADMIN_URL, pgSkipReason } from '../test-support/pg.js';

const skip = pgSkipReason();

t.test('a stray answer on the port is not taken as the next query\'s', { skip }, async (t) => {
  const d = new PgDriver(PG_ADMIN_URL);
  t.teardown(() => d.close());
  t.same(d.get('SELECT 1 AS a'), { a: 1 });
  // An answer nobody waits for: a request posted behind the driver's back (as an extra answer
  // from the worker thread would be), answered while no query waits.
  (d as unknown as { port: MessagePort }).port.postMessage({ sql: 'SELECT 99 AS stray', id: -1 });
  await new Promise((r) => setTimeout(r, 300));
  t.same(d.get('SELECT 2 AS b'), { b: 2 }, 'the query gets its own rows');
  t.same(d.get('SELECT 3 AS c'), { c: 3 }, 'and so does the next one (no answer off by one)');
  t.equal(d.get<{ n: number }>('SELECT count(*)::int AS n FROM pg_class WHERE relname = ?', ['no_such_table_qkt'])?.n, 0);
});
