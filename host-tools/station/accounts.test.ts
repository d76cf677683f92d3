// The station's forecast (docs/protocol.md 3.12.3 "Forecast"): key use kept per UTC day for the
// last 30 days only, however many uplinks a decade brings, and the days the remaining keys last.
import t from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StationStore, USAGE_DAYS } from './store.js';
import { forecast } from './accounts.js';

const DAY = 86_400_000;
const uplink = (at: number, keyBits: number) => ({ at, mode: 'otp' as const, counter: 0, bytes: 1, keyBits });

t.test('forecast: use over the days since the first in the window, today whole', async (t) => {
  const now = 20_000 * DAY + 5 * 3_600_000; // 05:00 UTC on day 20000
  t.equal(forecast([], 1000, now), null, 'no use: nothing to forecast from');
  t.equal(forecast([[20_000 - USAGE_DAYS, 999]], 1000, now), null, 'use older than the window does not count');
  t.same(forecast([[20_000, 300]], 1000, now), { keyBitsPerDay: 300, basisDays: 1, daysLeft: 3 }, 'one day of use');
  t.same(forecast([[19_998, 1_000_000], [20_000, 2_000_000]], 20_000_000, now), { keyBitsPerDay: 1_000_000, basisDays: 3, daysLeft: 20 }, 'the docs example: 3 Mbit over 3 days, 20 Mbit left');
  t.same(forecast([[19_999, 1]], 0, now), { keyBitsPerDay: 1, basisDays: 2, daysLeft: 0 }, 'rounded up to a whole bit a day; nothing left lasts 0 days');
  t.equal(forecast([[20_001, 5]], 100, now), null, 'a day after today (a clock set back) is not use');
});

t.test('a decade of uplinks keeps 30 days of use, summed per day', async (t) => {
  const store = new StationStore(join(t.testdir({}), 'station'));
  t.teardown(() => store.close());
  mkdirSync(join(store.dir, 'T1'), { recursive: true });
  const start = 18_000 * DAY;
  // Three uplinks a day, every 7th day, for ten years.
  for (let d = 0; d < 3650; d += 7) for (const h of [1, 9, 17]) store.recordUplink('T1', uplink(start + d * DAY + h * 3_600_000, 100 + (d % 5)));
  const days = store.usageDays('T1');
  const lastD = 3647; // the last multiple of 7 below 3650
  const last = 18_000 + lastD;
  t.ok(days.length <= USAGE_DAYS && days.length >= 4, `${days.length} days kept`);
  t.ok(days.every(([d]) => d > last - USAGE_DAYS && d <= last), 'only the last 30 days');
  t.same(days.at(-1), [last, 3 * (100 + (lastD % 5))], "the last day's three uplinks summed");
  t.ok(readFileSync(join(store.dir, 'T1', 'last-uplink.json')).length < 4096, 'the file stays small');
  t.match(store.lastUplink('T1'), { at: start + lastD * DAY + 17 * 3_600_000, keyBits: 100 + (lastD % 5) }, 'and the last uplink is the last');
});

t.test('a damaged or hostile usage record is no use, not a crash', async (t) => {
  const store = new StationStore(join(t.testdir({}), 'station'));
  t.teardown(() => store.close());
  mkdirSync(join(store.dir, 'T1'), { recursive: true });
  const p = join(store.dir, 'T1', 'last-uplink.json');
  for (const days of [[[1, -5]], [[1]], 'x', Array.from({ length: 31 }, (_, i) => [i, 1]), [[1.5, 2]]]) {
    writeFileSync(p, JSON.stringify({ ...uplink(DAY, 1), days }));
    t.same(store.usageDays('T1'), [], `refused: ${JSON.stringify(days).slice(0, 40)}`);
  }
  writeFileSync(p, '{"at": 1, "da');
  t.same(store.usageDays('T1'), [], 'a torn file');
  store.recordUplink('T1', uplink(2 * DAY, 7));
  t.same(store.usageDays('T1'), [[2, 7]], 'the next uplink starts afresh');
});
