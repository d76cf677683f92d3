// bench start: every case ends with the exit code it is meant to (help 0, usage errors 2) and the
// result carries a median per case and its ratio to bare node. Times are not asserted.
import t from 'tap';
import { benchStart, formatStartBench } from './start.js';

t.test('bench start measures each case and checks its exit code', async (t) => {
  const r = await benchStart({ runs: 1 });
  t.same(r.cases.map((c) => [c.args.join(' '), c.exitCode]), [
    ['-e 0', 0],
    ['--help', 0],
    ['status --help', 0],
    [`status --port ${r.cases[3]!.args[2]}`, 0],
    ['kmd', 2],
    ['carrier load --carrier x --terminal T1 T2', 2],
  ]);
  for (const c of r.cases) t.ok(c.medianMs > 0 && c.ratioToNode > 0, c.name);
  t.equal(r.cases[0]!.ratioToNode, 1);
  t.match(formatStartBench(r), /\| qkt status --help \| 0 \| [\d.]+ \|/);
});
