// The progress line with a fake clock and a fake stream: rate and ETA only once measured, the
// line fitted to 80 and 40 columns (dropping ETA, then rate, then shrinking the bar, then cutting
// the label), redrawn in place, a resize honoured; plain periodic lines without a TTY; silence
// under --json.
import t from 'tap';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { ttyProgress, formatSeconds, formatAmount } from './progress.js';
import type { ProgressMode } from './progress.js';

const MBIT = 2 ** 20;

class FakeStream extends EventEmitter {
  out = '';
  constructor(public columns: number) {
    super();
  }
  write(s: string): boolean {
    this.out += s;
    return true;
  }
}

function rig(mode: ProgressMode, columns = 80) {
  const stream = new FakeStream(columns);
  let clock = 0;
  const sink = ttyProgress(stream as unknown as NodeJS.WriteStream, mode, () => clock);
  return {
    stream,
    sink,
    at(ms: number) {
      clock = ms;
    },
    /** The TTY line as it stands: what follows the last \r, erase-line removed. */
    screen(): string {
      const last = stream.out.slice(stream.out.lastIndexOf('\r') + 1);
      return last.replace(/\x1b\[K/g, '').replace(/\n$/, '');
    },
  };
}

/** Steady 100 kbit/s of a 1 Mbit batch, an update every 100 ms from `from` to `to` ms. */
function feed(r: ReturnType<typeof rig>, from: number, to: number, base = 0, label = 'inject T1'): void {
  for (let ms = from; ms <= to; ms += 100) {
    r.at(ms);
    r.sink.update(Math.min(MBIT, base + (ms - from) * 100), MBIT, label);
  }
}

t.test('80 columns: no rate or ETA before a second of progress, then both, on one line redrawn in place', async (t) => {
  const r = rig('tty', 80);
  feed(r, 0, 900);
  t.equal(r.screen(), 'inject T1 [###...........................]   8%', 'at 0.9 s: bar and percentage only');
  t.notMatch(r.stream.out, /bit\/s|ETA/, 'never "0 bit/s ETA 0s" before it is measured');
  feed(r, 1000, 2000, 100_000);
  t.equal(r.screen(), 'inject T1 [######........................]  19%  100.0 kbit/s  ETA 9s');
  t.notMatch(r.stream.out, /\n/, 'no newline while it runs: every redraw is \\r ... erase-line');
  for (const seg of r.stream.out.split('\r').slice(1)) {
    t.ok(seg.endsWith('\x1b[K'), 'each redraw erases the rest of the line');
    if (seg.replace('\x1b[K', '').length > 79) t.fail(`wider than 79: ${seg}`);
  }
  t.comment(`80 columns: |${r.screen()}|`);
  r.sink.done();
  t.ok(r.stream.out.endsWith('\n'), 'done() ends the line');
});

t.test('40 columns: ETA, then rate dropped, the bar shrunk; never wider than 39', async (t) => {
  const r = rig('tty', 40);
  feed(r, 0, 2000);
  t.equal(r.screen(), 'inject T1 [####..................]  19%');
  t.equal(r.screen().length, 39);
  t.comment(`40 columns: |${r.screen()}|`);
  for (const seg of r.stream.out.split('\r').slice(1)) t.ok(seg.replace('\x1b[K', '').length <= 39);
});

t.test('degrades in order: ETA first, then the rate, then the bar, then the label', async (t) => {
  const at = (columns: number, label = 'inject T1') => {
    const r = rig('tty', columns);
    feed(r, 0, 2000, 0, label);
    return r.screen();
  };
  t.equal(at(70), 'inject T1 [######........................]  19%  100.0 kbit/s  ETA 9s', '70: all of it (69)');
  t.equal(at(69), 'inject T1 [######........................]  19%  100.0 kbit/s', '69: no ETA');
  t.equal(at(55), 'inject T1 [######........................]  19%', '55: no rate');
  t.equal(at(30), 'inject T1 [##..........]  19%', '30: a shorter bar');
  t.equal(at(20, 'download from the KMD'), 'downl… [#....]  19%', '20: the label cut');
  t.equal(at(20, 'download from the KMD').length, 19);
  t.ok(at(8).length <= 7, 'absurdly narrow: still within the width');
});

t.test('a resize redraws at the new width', async (t) => {
  const r = rig('tty', 80);
  feed(r, 0, 2000);
  r.stream.columns = 40;
  r.stream.emit('resize');
  t.equal(r.screen(), 'inject T1 [####..................]  19%');
  r.sink.done();
  t.equal(r.stream.listenerCount('resize'), 0, 'done() stops listening');
});

t.test('the rate is smoothed over a window; a resumed transfer counts only what it moved', async (t) => {
  const r = rig('tty', 80);
  feed(r, 0, 4000);
  // 0.5 s without progress, then it goes on: the rate dips a little, it does not fall to 0.
  feed(r, 4500, 4500, 400_000);
  t.match(r.screen(), /  88\.9 kbit\/s  ETA 8s$/);

  const resumed = rig('tty', 80);
  feed(resumed, 0, 1500, MBIT / 2); // resumed at half: 150 kbit moved in 1.5 s
  t.match(resumed.screen(), /  100\.0 kbit\/s  ETA 4s$/, 'not (half + moved) / time');
});

t.test('finished: 100 %, the average rate, no ETA', async (t) => {
  const r = rig('tty', 80);
  feed(r, 0, 10_500);
  r.at(10_600);
  r.sink.update(MBIT, MBIT, 'inject T1');
  t.match(r.screen(), /^inject T1 \[#{30}\] 100%  98\.9 kbit\/s$/);
});

t.test('counts of things (carrier load): n/total, no bit rate', async (t) => {
  const r = rig('tty', 80);
  r.sink.update(0, 2, 'load T1', 'terminal');
  r.at(1500);
  r.sink.update(1, 2, 'load T2', 'terminal');
  t.equal(r.screen(), 'load T2 [###############...............]  50%  1/2');
});

t.test('without a TTY: a plain line every 5 s and 10 %, whichever is rarer, and the last one', async (t) => {
  const r = rig('lines');
  feed(r, 0, 10_500);
  r.at(10_600);
  r.sink.update(MBIT, MBIT, 'inject T1');
  r.sink.done();
  t.equal(
    r.stream.out,
    [
      'inject T1: 47% (488.3 kbit of 1 Mbit), 100.0 kbit/s, ETA 6s',
      'inject T1: 95% (976.6 kbit of 1 Mbit), 100.0 kbit/s, ETA 1s',
      'inject T1: 100% (1 Mbit of 1 Mbit), 98.9 kbit/s, in 11s',
      '',
    ].join('\n'),
  );
  t.notMatch(r.stream.out, /\r|\x1b/, 'no control characters in a log');
  for (const line of r.stream.out.trimEnd().split('\n')) t.comment(`log: ${line}`);

  const slow = rig('lines'); // 1 % a second: a line every 10 %, not every 5 s
  for (let s = 0; s <= 25; s++) {
    slow.at(s * 1000);
    slow.sink.update(s * 10_000, 1_000_000, 'download');
  }
  t.equal(slow.stream.out.trimEnd().split('\n').length, 2, `at 10 % and 20 %: ${slow.stream.out}`);
  slow.sink.done();
  t.match(slow.stream.out, /download: 25% \(244\.1 kbit of 976\.6 kbit\), 10\.0 kbit\/s, ETA 1m15s\n$/, 'a stopped run ends with where it stopped');

  const quick = rig('lines'); // under 5 s: the result line says it all
  feed(quick, 0, 3000);
  quick.sink.update(MBIT, MBIT, 'inject T1');
  quick.sink.done();
  t.equal(quick.stream.out, '', 'nothing for a command quicker than 5 s');
});

t.test('under --json: nothing at all', async (t) => {
  const r = rig('off');
  feed(r, 0, 20_000);
  r.sink.done();
  t.equal(r.stream.out, '');
});

t.test('durations and amounts', async (t) => {
  t.equal(formatSeconds(0.2), '1s');
  t.equal(formatSeconds(65), '1m05s');
  t.equal(formatSeconds(7380), '2h03m');
  t.equal(formatAmount(500_000), '488.3 kbit');
  t.equal(formatAmount(3 * MBIT), '3 Mbit');
  t.equal(formatAmount(700), '700 bit');
});

t.test('docs/field.md shows what the code prints', async (t) => {
  const doc = readFileSync(new URL('../../docs/field.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## What the progress line looks like'));
  t.ok(section.length > 0 && doc.includes('## What the progress line looks like'), 'the section exists');
  const blocks = [...section.matchAll(/```text\n([\s\S]*?)```/g)].map((m) => m[1]!);
  t.equal(blocks.length, 3, 'two terminal captures and the log lines');
  // The captures: each box as wide as its terminal; progress lines within the width less one.
  for (const [i, columns] of [[0, 80], [1, 40]] as const) {
    const rows = blocks[i]!.split('\n').filter((l) => l.startsWith('|'));
    t.ok(rows.length >= 2, `${columns} columns: captured rows`);
    for (const row of rows) {
      t.equal(row.length, columns + 2, `${columns} columns: ${row}`);
      const line = row.slice(1, -1).trimEnd();
      if (line.startsWith('inject T1 [')) t.ok(line.length <= columns - 1, `progress line within ${columns - 1}: ${line}`);
    }
  }
  const r = rig('lines');
  feed(r, 0, 10_500);
  r.at(10_600);
  r.sink.update(MBIT, MBIT, 'inject T1');
  r.sink.done();
  t.equal(blocks[2], r.stream.out, 'the log lines are the ones the code prints');
});
