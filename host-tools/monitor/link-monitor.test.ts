// The monitor's view of a cable (link-monitor.ts): the frozen frames decode to their headers,
// names and payloads whatever the chunking; framing faults each get a view of their own; refusals
// are named; sealed batch bytes show only their length; PARAMS's maxFrame is learnt.
import t from 'tap';
import { loadFrameFixtures } from '../../fixtures/frames.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { encodeFrame, Kind } from '../../firmware/link/frame.js';
import { Group, InjectCmd, SystemCmd } from '../../firmware/link/groups.js';
import { LinkMonitor, MAX_KEPT, formatFrame, inspectFrame } from './link-monitor.js';
import type { Direction, FrameView } from './link-monitor.js';
import type { PcapFrame } from './pcap.js';

function rig() {
  const seen: { view: FrameView; raw: PcapFrame }[] = [];
  let now = 1_000_000;
  const m = new LinkMonitor({ onFrame: (view, raw) => seen.push({ view, raw }), nowUs: () => (now += 1500) });
  return { m, seen };
}
const dirOf = (kind: number): Direction => (kind === Kind.REQUEST ? 'host->device' : 'device->host');

t.test('the frozen frames, in one chunk and split at every byte', async (t) => {
  const fixtures = loadFrameFixtures();
  const whole = rig();
  for (const f of fixtures) whole.m.push(dirOf(f.message.kind), f.wire);
  t.same(
    whole.seen.map((s) => [s.view.ok, s.view.kind, s.view.groupName, s.view.commandName, s.view.seq]),
    [
      [true, 'request', 'SYSTEM', 'PARAMS', 1],
      [true, 'response', 'SYSTEM', 'PARAMS', 1],
      [true, 'request', 'SYSTEM', 'STATUS', 2],
      [true, 'error', '9', '7', 0x1234],
      [true, 'error', 'DIAG', 'SINK_CHUNK', 7],
      [true, 'request', 'DIAG', 'SINK_CHUNK', 3],
    ],
  );
  t.same(whole.seen[0]!.view.payload, '{"versions": [1]}');
  t.same(whole.seen[3]!.view.error, { group: 9, rc: 2, name: 'NOT_SUPPORTED', words: 'it does not know this request (older firmware, or not a qkt module)', reason: 'group 9 command 7' });
  t.same(whole.seen[5]!.view.payload, `{"t": 1, "o": 0, "d": h'0001020000ff'}`);
  t.same(whole.seen[1]!.view.t, 0.003, 'seconds since start, to the ms');
  t.equal(whole.m.maxFrame, 8256, 'maxFrame learnt from the PARAMS reply');
  for (const s of whole.seen) {
    t.equal(s.raw.flags, 0);
    t.equal(s.raw.direction, s.view.dir === 'host->device' ? 0 : 1);
  }
  t.same(whole.m.stats['device->host'], { frames: 3, problems: {}, bytes: fixtures.filter((f) => f.message.kind !== Kind.REQUEST).reduce((n, f) => n + f.wire.length, 0) });

  for (const f of fixtures) {
    for (let cut = 1; cut < f.wire.length; cut++) {
      const r = rig();
      r.m.push('device->host', f.wire.subarray(0, cut));
      r.m.push('device->host', f.wire.subarray(cut));
      if (r.seen.length !== 1 || r.seen[0]!.view.seq !== f.message.seq || !r.seen[0]!.view.ok) t.fail(`${f.name} split at ${cut}`);
      // The raw record is the frame between its delimiters: the wire minus the two 0x00.
      if (Buffer.compare(r.seen[0]!.raw.bytes, f.wire.subarray(1, -1)) !== 0) t.fail(`${f.name} raw bytes at ${cut}`);
    }
  }
  t.pass('every split decodes the same');
});

t.test('framing faults: bad CRC, bad COBS, garbage, oversize; the next frame is fine', async (t) => {
  const good = loadFrameFixtures()[2]!.wire; // status-request
  const badCrc = good.slice();
  badCrc[badCrc.length - 2]! ^= 0x01; // last CRC byte (non-zero either way in this fixture)
  const { m, seen } = rig();
  m.push('host->device', badCrc);
  m.push('host->device', Uint8Array.of(0, 0x05, 0x01, 0x02, 0)); // COBS code 5 runs past the end
  m.push('host->device', Uint8Array.of(0x02, 0x42, 0)); // garbage: valid COBS, too short for a frame
  m.push('host->device', new Uint8Array(MAX_KEPT + 10).fill(0x7f));
  m.push('host->device', good);
  t.same(
    seen.map((s) => [s.view.problem ?? 'ok', s.raw.flags, s.view.wireBytes]),
    [
      ['bad CRC', 0x02, good.length - 2],
      ['bad COBS', 0x01, 3],
      ['too short', 0x04, 2],
      ['oversize', 0x08, MAX_KEPT + 10], // ended by the good frame's leading 0x00
      ['ok', 0, good.length - 2],
    ],
  );
  t.match(seen[0]!.view.detail, /^CRC-32 [0-9a-f]{8} does not match the 7 bytes before it$/);
  t.equal(seen[3]!.raw.bytes.length, MAX_KEPT, 'an oversize frame is kept cut');
  t.equal(seen[3]!.raw.origLength, MAX_KEPT + 10);
  t.match(formatFrame(seen[0]!.view), /^ +\d+\.\d{3} host->device bad CRC: CRC-32/);
  t.same(m.stats['host->device'].problems, { 'bad CRC': 1, 'bad COBS': 1, 'too short': 1, oversize: 1 });
});

t.test('a CRC-good frame that is not a v1 message is shown with its header', async (t) => {
  const v = inspectFrame(encodeFrame({ version: 1, kind: 3, group: 0, command: 0, seq: 5 }, Uint8Array.of(0x01)).subarray(1, -1));
  t.match(v, { ok: false, problem: 'bad message', detail: 'payload must be a CBOR map', kind: 'event', commandName: 'LOW_WATERMARK', payload: '1' });
  const k = inspectFrame(encodeFrame({ version: 1, kind: 9 as 0, group: 0, command: 0, seq: 5 }, Uint8Array.of(0xa0)).subarray(1, -1));
  t.match(k, { problem: 'bad message', kind: 9, detail: /kind 9/ });
  const bad = inspectFrame(encodeFrame({ version: 1, kind: 0, group: 0, command: 0, seq: 5 }, Uint8Array.of(0xa1, 0x61)).subarray(1, -1));
  t.match(bad, { problem: 'bad message', payloadError: /invalid CBOR/ });
});

t.test('INJECT bytes show only their length; a body over maxFrame is flagged', async (t) => {
  const secretish = Uint8Array.from({ length: 64 }, (_, i) => 0xc0 + (i % 16));
  const wire = encodeMessage({ kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.BEGIN, seq: 9, payload: { h: secretish } });
  const v = inspectFrame(wire.subarray(1, -1));
  t.equal(v.payload, `{"h": h'..'(64 bytes)}`);
  t.notMatch(JSON.stringify(v), /c0c1c2/);
  const { m, seen } = rig();
  m.push('device->host', encodeMessage({ kind: Kind.RESPONSE, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: 1, payload: { maxFrame: 64 } }));
  m.push('host->device', encodeMessage({ kind: Kind.REQUEST, group: Group.DIAG, command: 0, seq: 2, payload: { d: new Uint8Array(100) } }));
  t.match(seen[1]!.view, { ok: true, problem: 'oversize', detail: /over the advertised maxFrame 64/ });
  t.equal(seen[1]!.raw.flags, 0x08);
});

t.test('the human line escapes terminal controls a device puts in its text', async (t) => {
  const evil = 'ok\u001b[2J\u009b31m\u202eevil';
  const wire = encodeMessage({ kind: Kind.ERROR, group: 0, command: 1, seq: 3, payload: { g: 0, rc: 3, r: evil, x: evil } });
  const line = formatFrame({ t: 0, dir: 'device->host', ...inspectFrame(wire.subarray(1, -1)) });
  t.notMatch(line, /[\u001b\u009b\u202e]/u, 'no control reaches the terminal');
  t.ok(line.includes('BAD_REQUEST: it could not read the request (a fault of this tool or a garbled line) ("ok\\u001b[2J\\x9b31m\\u{202e}evil")'), line);
});
