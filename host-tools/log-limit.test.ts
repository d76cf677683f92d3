// A peer that can cause log lines at will gets at most one a second, the next counting the rest.
import t from 'tap';
import { rateLimited, sharedRateLimited } from './log-limit.js';

t.test('at most one line per interval; the next says how many were left out', async (t) => {
  const lines: string[] = [];
  let now = 0;
  const log = rateLimited((l) => lines.push(l), 1000, () => now);
  for (let i = 0; i < 500; i++) log(`fail ${i}`);
  t.same(lines, ['fail 0']);
  now = 1000;
  log('fail 500');
  t.same(lines, ['fail 0', 'fail 500 (and 499 more since the last report)']);
  now = 5000;
  log('later');
  t.same(lines.at(-1), 'later');
});

t.test('one limiter per log function, shared by every caller', async (t) => {
  const lines: string[] = [];
  const sink = (l: string) => void lines.push(l);
  for (let i = 0; i < 100; i++) sharedRateLimited(sink)(`connection ${i} failed`);
  t.same(lines, ['connection 0 failed'], 'a hundred connections, one line');
  const other: string[] = [];
  sharedRateLimited((l) => void other.push(l))('x');
  t.same(other, ['x'], 'another log has its own allowance');
});

t.test('a clock set back does not silence the log until it catches up', async (t) => {
  const lines: string[] = [];
  let now = 10 * 3_600_000;
  const log = rateLimited((l) => lines.push(l), 1000, () => now);
  log('before');
  now -= 3_600_000; // an hour back
  log('after the step');
  t.same(lines, ['before', 'after the step']);
  log('again at once');
  t.equal(lines.length, 2, 'and limited from there');
});
