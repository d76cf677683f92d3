// `qkt bench traffic` in small: both tables come out, every figure from the run (not the paper's).
import t from 'tap';
import { benchTraffic, formatTrafficBench, PAPER_TABLE_I, PAPER_TABLE_II } from './traffic.js';

t.setTimeout(180_000);

t.test('Tables I and II from two seconds of traffic per terminal', async (t) => {
  const r = await benchTraffic({ seconds: 2, seed: 3 });
  t.same(r.tableI.map((x) => x.class), ['A', 'B', 'C', 'D', 'E'], 'one row per class');
  t.same(r.tableII.map((x) => x.kbps), PAPER_TABLE_II.map((p) => p.kbps), 'one row per rate class');
  for (const x of r.tableI) {
    t.ok(x.messages > 0 && x.failed === 0, `class ${x.class}: ${x.messages} messages, none refused`);
    // The key use rate comes out of the traffic: what the station consumed over the supply.
    t.equal(x.keyBits, x.plainBits + 256 * (x.delivered + x.late), `class ${x.class}: OTP key is pad plus one MAC key per message`);
    t.equal(x.keyUseRate, Math.round((x.keyBitsPerSecond / 11_000) * 1000) / 1000);
    t.same(x.paper, PAPER_TABLE_I[x.class], 'the paper beside it');
  }
  const a = r.tableI.find((x) => x.class === 'A')!;
  const e = r.tableI.find((x) => x.class === 'E')!;
  t.ok(a.keyBitsPerSecond > e.keyBitsPerSecond, 'class A spends more key than E');
  for (const x of r.tableII) t.ok(x.result.messages > 0 && x.result.failed === 0, `${x.kbps} kbit/s: ${x.result.messages} messages`);
  const md = formatTrafficBench(r);
  t.match(md, /\| A \(large special transformer\) \| \d+ \|/);
  t.match(md, /\| 9\.6 \| \d+ \|/);
});
