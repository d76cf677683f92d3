// `qkt hil run` reports each suite as it ends: the top-level result lines of tap's TAP stream
// are found among the suites' own indented lines, and each becomes one line for the engineer.
import t from 'tap';
import { parseSuiteLine, formatSuite } from './hil.js';

const STREAM = `TAP version 14
1..3
# Subtest: hil/cli-pty.test.ts
    # Subtest: status over a pty pair
    ok 1 - status over a pty pair # time=812.1ms
    not ok 2 - an inner failure is not a suite's line
    1..2
ok 1 - hil/cli-pty.test.ts # time=2345.6ms

# Subtest: hil/protocol.test.ts
not ok 2 - hil/protocol.test.ts # time=10400ms
ok 3 - hil/carrier-drive.test.ts # SKIP no loop devices # time=12ms
# { total: 3, pass: 2, fail: 1 }
`;

t.test('the suites, from the top-level lines only', async (t) => {
  const results = STREAM.split('\n').map(parseSuiteLine).filter((r) => r !== undefined);
  t.same(results, [
    { suite: 'hil/cli-pty.test.ts', ok: true, skipped: null, seconds: 2.3456 },
    { suite: 'hil/protocol.test.ts', ok: false, skipped: null, seconds: 10.4 },
    { suite: 'hil/carrier-drive.test.ts', ok: true, skipped: 'no loop devices', seconds: 0.012 },
  ]);
});

t.test('one line per suite: ok, FAIL or skip, its time, how far the run is', async (t) => {
  t.equal(formatSuite(parseSuiteLine('ok 1 - hil/cli-pty.test.ts # time=2345.6ms')!, 1, 11, 2.6), '  ok    hil/cli-pty.test.ts               2.3 s   1/11 at 3 s');
  t.equal(formatSuite(parseSuiteLine('not ok 2 - hil/protocol.test.ts # time=10400ms')!, 2, 11, 10.9), '  FAIL  hil/protocol.test.ts             10.4 s   2/11 at 11 s');
  t.match(formatSuite(parseSuiteLine('ok 3 - hil/carrier-drive.test.ts # SKIP no loop devices')!, 3, 11, 11), /^  skip  hil\/carrier-drive\.test\.ts +3\/11 at 11 s \(no loop devices\)$/);
});
