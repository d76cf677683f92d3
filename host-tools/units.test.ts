// Unit parsing as DESIGN.md "Units" defines it.
import t from 'tap';
import { formatBits, formatFrequency, parseBits, parseFrequency, parseRate } from './units.js';
import { InputError } from './input-error.js';

t.test('amounts', async (t) => {
  t.equal(parseBits('3Mbit'), 3_145_728);
  t.equal(parseBits('8Mbit'), 8_388_608);
  t.equal(parseBits('384KiB'), 3_145_728);
  t.equal(parseBits('1MiB'), 8_388_608);
  t.equal(parseBits('4096'), 4096);
  t.equal(parseBits('1kbit'), 1024);
  for (const bad of ['', 'lots', '3 parsecs', '-1', '0', '0.1bit']) t.throws(() => parseBits(bad), InputError, bad);
});

t.test('rates', async (t) => {
  t.equal(parseRate('11kbit/s'), 11_000);
  t.equal(parseRate('11000'), 11_000);
  t.equal(parseRate('1Mbit/s'), 1_000_000);
  t.throws(() => parseRate('fast'), InputError);
});

t.test('frequencies (a QKD source\'s pulse rate)', async (t) => {
  t.equal(parseFrequency('1GHz'), 1e9);
  t.equal(parseFrequency('50MHz'), 50e6);
  t.equal(parseFrequency('2.5 ghz'), 2.5e9);
  t.equal(parseFrequency('1000'), 1000);
  for (const bad of ['', 'fast', '1THz', '0', '-1GHz', '1e9']) t.throws(() => parseFrequency(bad), InputError, bad);
  t.equal(formatFrequency(1e9), '1 GHz');
  t.equal(formatFrequency(50e6), '50 MHz');
  t.equal(formatFrequency(2.5e9), '2.5 GHz');
  t.equal(formatFrequency(999), '999 Hz');
});

t.test('formatting', async (t) => {
  t.equal(formatBits(3_145_728), '3 Mbit');
  t.equal(formatBits(1024), '1 kbit');
  t.equal(formatBits(12), '12 bit');
});

t.test('durations and fractions (qkt net relay --latency, --jitter, --loss)', async (t) => {
  const { parseDuration, parseFraction } = await import('./units.js');
  t.equal(parseDuration('20ms'), 20);
  t.equal(parseDuration('0.5s'), 500);
  t.equal(parseDuration('250us'), 0.25);
  t.equal(parseDuration('7'), 7);
  t.equal(parseDuration('0'), 0);
  t.throws(() => parseDuration('-5ms'), /not a duration/);
  t.throws(() => parseDuration('5min'), /not a duration/);
  t.equal(parseFraction('1%'), 0.01);
  t.equal(parseFraction('0.02'), 0.02);
  t.equal(parseFraction('100%'), 1);
  t.throws(() => parseFraction('150%'), /not a percentage/);
  t.throws(() => parseFraction('x'), /not a percentage/);
});
