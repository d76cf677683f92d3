// `qkt hil run` reports each suite as it ends: the top-level result lines of tap's TAP stream
// are found among the suites' own indented lines, and each becomes one line for the engineer;
// with --noise, the noise suite's report (a file from another process) is checked and summed up.
import t from 'tap';
import hil, { parseSuiteLine, formatSuite, formatNoise, formatRate, checkNoiseReport, pickSuites, NOISE_SUITE, DEVICE_SUITE, checkDeviceReport, formatDevice } from './hil.js';
import type { HilResult } from './hil.js';

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

const REPORT = {
  rate: 0.01,
  seed: 7,
  baud: 921600,
  bits: 3145728,
  clean: { exitCode: 0, seconds: 4.851, transferSeconds: 4.377, goodputBitsPerSecond: 648486 },
  noisy: { exitCode: 0, seconds: 10.096, transferSeconds: 9.182, goodputBitsPerSecond: 311586 },
  ratio: 0.48,
  relay: {
    toDevice: { bytesIn: 607915, bytesOut: 607912, corrupted: 11, dropped: 3, inserted: 0 },
    toHost: { bytesIn: 2583, bytesOut: 2584, corrupted: 1, dropped: 0, inserted: 1 },
  },
};

t.test('the noise report: one line after the suite, relay faults summed over both ways', async (t) => {
  t.equal(
    formatNoise(REPORT),
    '        noise 1% at 921600 baud, seed 7: clean 648.5 kbit/s, noisy 311.6 kbit/s, ratio 0.48; relay: 12 corrupted, 3 dropped, 1 inserted',
  );
  const failed = { ...REPORT, noisy: { exitCode: 4, seconds: 60.2, transferSeconds: null, goodputBitsPerSecond: null }, ratio: null };
  t.match(formatNoise(failed), /noisy failed, ratio -;/);
  t.equal(formatRate(0.00001), '0.001%');
  t.equal(formatRate(0.001), '0.1%');
  t.equal(formatRate(0.07), '7%');
});

t.test('the noise report file is checked, not trusted', async (t) => {
  t.same(checkNoiseReport(JSON.parse(JSON.stringify(REPORT))), REPORT, 'a good report comes through as is');
  t.same(checkNoiseReport({ ...REPORT, extra: 'dropped' }), REPORT, 'unknown fields are left out');
  t.equal(checkNoiseReport({ ...REPORT, rate: 2 }), undefined, 'a rate above 1');
  t.equal(checkNoiseReport({ ...REPORT, ratio: 'fast' }), undefined, 'a ratio not a number');
  t.equal(checkNoiseReport({ ...REPORT, clean: { ...REPORT.clean, seconds: -1 } }), undefined, 'negative seconds');
  t.equal(checkNoiseReport({ ...REPORT, relay: { toDevice: REPORT.relay.toDevice } }), undefined, 'a direction missing');
  t.equal(checkNoiseReport([]), undefined, 'not an object');
});

t.test('--suite picks suites by short name, in the run order; noise only with --noise', async (t) => {
  t.notOk(pickSuites(undefined, false).includes(NOISE_SUITE), 'all, without the noise suite');
  t.ok(pickSuites(undefined, false).includes('hil/protocol.test.ts'), 'the protocol suite among them');
  t.equal(pickSuites(undefined, true).at(-1), NOISE_SUITE, 'with --noise the noise suite comes last');
  t.same(pickSuites('noise, protocol', true), ['hil/protocol.test.ts', NOISE_SUITE]);
  t.throws(() => pickSuites('noise', false), /runs with --noise R/);
  t.throws(() => pickSuites('protocol,frob', false), /unknown suite frob; choose from protocol, /);
  t.throws(() => pickSuites(',', false), /unknown suite ","/);
});

t.test('a failed run is still a result (with its noise report), exit 1 with the reason', async (t) => {
  const failed: HilResult = {
    passed: false,
    exitCode: 1,
    transports: ['pty'],
    suites: [NOISE_SUITE],
    results: [{ suite: NOISE_SUITE, ok: false, skipped: null, seconds: 16.6 }],
    carrier: null,
    junit: '/tmp/hil.xml',
    noise: { ...REPORT, noisy: { exitCode: 3, seconds: 5.0, transferSeconds: null, goodputBitsPerSecond: null }, ratio: null },
  };
  t.same(hil.outcome!(failed), { exitCode: 1, reason: 'HIL suite failed (tap exit 1; failed: hil/noise.test.ts); report in /tmp/hil.xml' });
  t.match(hil.render!(failed), /^HIL suite FAILED over pty, line noise 1% \(ratio -\); JUnit report \/tmp\/hil\.xml$/);
  t.equal(hil.outcome!({ ...failed, passed: true, exitCode: 0 }), undefined, 'a passed run exits 0');
});

const DEVICE = {
  port: '/dev/ttyUSB0',
  baud: 115200,
  firmware: 'qkt-fw 0.1.0',
  maxFrame: 8256,
  window: 4,
  maxChunk: 8206,
  bulk: { bytes: 1048576, seconds: 95.213, goodputBitsPerSecond: 88104, lineRateFraction: 0.956, restarts: 0 },
};

t.test('the device report: one line after the suite; the file is checked, not trusted', async (t) => {
  t.equal(formatDevice(DEVICE), '        device /dev/ttyUSB0 at 115200 baud: qkt-fw 0.1.0; 1048576 bytes in 95.21 s, 88.1 kbit/s, 0.956 of the line rate');
  t.equal(
    formatDevice({ ...DEVICE, port: 'tcp:127.0.0.1:7000', baud: null, bulk: { ...DEVICE.bulk, lineRateFraction: null, restarts: 3 } }),
    '        device tcp:127.0.0.1:7000: qkt-fw 0.1.0; 1048576 bytes in 95.21 s, 88.1 kbit/s, 3 go-backs',
  );
  t.equal(formatDevice({ ...DEVICE, firmware: null, maxFrame: null, window: null, maxChunk: null, bulk: null }), '        device /dev/ttyUSB0 at 115200 baud: no PARAMS answer; bulk transfer did not complete');
  t.same(checkDeviceReport(JSON.parse(JSON.stringify(DEVICE))), DEVICE, 'a good report comes through as is');
  t.same(checkDeviceReport({ ...DEVICE, extra: 1, bulk: { ...DEVICE.bulk, extra: 2 } }), DEVICE, 'unknown fields are left out');
  t.same(checkDeviceReport({ ...DEVICE, bulk: null }), { ...DEVICE, bulk: null }, 'no bulk transfer');
  t.equal(checkDeviceReport({ ...DEVICE, port: 7 }), undefined, 'a port not a string');
  t.equal(checkDeviceReport({ ...DEVICE, baud: -1 }), undefined, 'a negative baud');
  t.equal(checkDeviceReport({ ...DEVICE, bulk: { ...DEVICE.bulk, seconds: 'slow' } }), undefined, 'seconds not a number');
  t.equal(checkDeviceReport({ ...DEVICE, bulk: { ...DEVICE.bulk, restarts: 0.5 } }), undefined, 'restarts not a count');
  t.equal(checkDeviceReport(null), undefined, 'not an object');
});

t.test('the device suite is one of the rig, last before noise', async (t) => {
  t.equal(pickSuites(undefined, false).at(-1), DEVICE_SUITE);
  t.same(pickSuites('device', false), [DEVICE_SUITE]);
  t.same(pickSuites('noise,device', true), [DEVICE_SUITE, NOISE_SUITE]);
  const r: HilResult = { passed: true, exitCode: 0, transports: ['pty'], suites: [DEVICE_SUITE], results: [], carrier: null, junit: null, device: DEVICE };
  t.equal(hil.render!(r), 'HIL suite passed over pty, device /dev/ttyUSB0');
});
