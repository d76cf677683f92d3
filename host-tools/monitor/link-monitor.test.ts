// The monitor's view of a cable (link-monitor.ts): the frozen frames decode to their headers,
// names and payloads whatever the chunking; framing faults each get a view of their own; refusals
// are named; sealed batch bytes show only their length; PARAMS's maxFrame is learnt.
import t from 'tap';
import { loadFrameFixtures } from '../../fixtures/frames.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { encodeFrame, Kind } from '../../firmware/link/frame.js';
import { cobsEncode } from '../../firmware/link/cobs.js';
import { encodeShards } from '../../firmware/link/fec.js';
import { PcapFlag } from './pcap.js';
import { Group, InjectCmd, SystemCmd } from '../../firmware/link/groups.js';
import { cobsDecode } from '../../firmware/link/cobs.js';
import { crc32 } from 'node:zlib';
import { LinkMonitor, MAX_KEPT, formatFrame, inspectFrame } from './link-monitor.js';
import type { Direction, FrameView } from './link-monitor.js';
import type { PcapFrame } from './pcap.js';

/** Flags of a frame the monitor gave no capture record. */
const NO_RECORD = -1;

function rig() {
  const seen: { view: FrameView; raw: PcapFrame }[] = [];
  /** Every capture record, frames and shards, in order. */
  const records: PcapFrame[] = [];
  let now = 1_000_000;
  const m = new LinkMonitor({
    onFrame: (view, raw) => {
      if (raw) records.push(raw);
      seen.push({ view, raw: raw ?? { timeUs: 0, direction: 0, flags: NO_RECORD, bytes: new Uint8Array(0) } });
    },
    onShard: (raw) => records.push(raw),
    nowUs: () => (now += 1500),
  });
  return { m, seen, records };
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

/** A shard body on the wire: COBS, then its 0x00. */
const onWire = (shard: Uint8Array) => Buffer.concat([cobsEncode(shard), Buffer.of(0)]);

t.test('FEC shards: one view for the frame they make, with what it took; none per shard', async (t) => {
  const secretish = Uint8Array.from({ length: 100 }, (_, i) => 0xc0 + (i % 16));
  const chunk = encodeMessage({ kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.CHUNK, seq: 41, payload: { t: 1, o: 0, d: secretish } });
  const body = cobsDecode(chunk.subarray(1, -1))!;
  const k = Math.ceil((body.length + 2) / 16);
  const shards = encodeShards(body, 5, { s: 16, k, n: k + 4 }, 40);
  // The device's answer comes in shards under the same id: each direction collects its own.
  const reply = encodeMessage({ kind: Kind.RESPONSE, group: Group.INJECT, command: InjectCmd.CHUNK, seq: 41, payload: { c: 100 } });
  const replyShards = encodeShards(cobsDecode(reply.subarray(1, -1))!, 5, { s: 8, k: 3, n: 5 });
  const damaged = onWire(shards[1]!);
  damaged[10]! ^= 0x04; // three data bytes (non-zero either way): one flipped bit would be put right
  damaged[11]! ^= 0x04;
  damaged[12]! ^= 0x04;
  const plain = loadFrameFixtures()[2]!.wire; // status-request
  const { m, seen, records } = rig();
  const host: Uint8Array[] = [Buffer.of(0), onWire(shards[0]!), Buffer.of(0x02, 0x42, 0), damaged, plain, onWire(shards[2]!), onWire(shards[2]!)];
  // Shard 1 damaged and 3 lost: data 0, 2, 4..k-1 and parity k, k+1 make the k.
  for (let i = 4; i < k; i++) host.push(onWire(shards[i]!));
  host.push(onWire(shards[k]!));
  m.push('device->host', Buffer.concat([Buffer.of(0), onWire(replyShards[0]!), onWire(replyShards[4]!)]));
  host.push(onWire(shards[k + 1]!), onWire(shards[k + 2]!)); // the last one after the frame is complete
  for (const b of host) m.push('host->device', b);
  m.push('device->host', onWire(replyShards[2]!));

  t.same(
    seen.map((s) => [s.view.dir, s.view.problem ?? 'ok', s.view.commandName, s.view.fec]),
    [
      ['host->device', 'too short', undefined, undefined],
      ['host->device', 'ok', 'STATUS', undefined],
      ['host->device', 'ok', 'CHUNK', { k, n: k + 4, s: 16, shards: k + 1 }],
      ['device->host', 'ok', 'CHUNK', { k: 3, n: 5, s: 8, shards: 3 }],
    ],
    'the noise and the plain frame as before; a view per frame from shards, none per shard',
  );
  const v = seen[2]!.view;
  t.match(v, { ok: true, kind: 'request', seq: 41, wireBytes: (k + 1) * (16 + 9), payload: `{"t": 1, "o": 0, "d": h'..'(100 bytes)}` });
  t.notMatch(JSON.stringify(seen.map((s) => s.view)), /c0c1c2/, 'sealed bytes: their length only, from shards too');
  t.match(formatFrame(v), new RegExp(`seq 41 +request +INJECT\\.CHUNK \\{.*\\} \\[fec ${k} of ${k + 4}, s 16, ${k + 1} seen\\]$`));
  t.same(seen[3]!.view.payload, '{"c": 100}');
  t.same(m.stats['host->device'], {
    frames: 3,
    problems: { 'too short': 1, 'bad shard': 1 },
    bytes: host.reduce((n, b) => n + b.length, 0),
    shards: { good: k + 2, bad: 1 },
  });
  t.same(m.stats['device->host'].shards, { good: 3, bad: 0 });

  // The capture: every shard as on the wire, then the frame they made, re-encoded as a plain frame.
  const h2d = records.filter((r) => r.direction === 0);
  const F = PcapFlag;
  t.same(
    h2d.map((r) => r.flags),
    [F.FEC_SHARD, F.SHORT, F.FEC_SHARD | F.BAD_CRC, 0, F.FEC_SHARD, F.FEC_SHARD, ...Array(k - 4).fill(F.FEC_SHARD), F.FEC_SHARD, F.FEC_SHARD, F.FEC_REASSEMBLED, F.FEC_SHARD],
  );
  t.same(Buffer.from(h2d[h2d.length - 2]!.bytes), Buffer.from(chunk.subarray(1, -1)), 'the reassembled record is the frame as encodeFrame writes it');
  t.same(Buffer.from(h2d[0]!.bytes), onWire(shards[0]!).subarray(0, -1), 'a shard record: its bytes between the delimiters');
  t.same(Buffer.from(h2d[2]!.bytes), damaged.subarray(0, -1));
  t.equal(records.filter((r) => r.direction === 1).length, 4, 'three shards and the reply');
});

t.test('shards that make no good frame: a bad CRC shown with its fec; an impossible length with no record', async (t) => {
  const good = loadFrameFixtures()[2]!.wire;
  const body = Uint8Array.from(cobsDecode(good.subarray(1, -1))!);
  body[body.length - 1]! ^= 0xff; // the frame's CRC-32: the shards are whole, the frame is not
  const { m, seen, records } = rig();
  for (const sh of encodeShards(body, 1, { s: 8, k: 3, n: 3 })) m.push('device->host', onWire(sh));
  t.match(seen[0]!.view, { ok: false, problem: 'bad CRC', fec: { k: 3, n: 3, s: 8, shards: 3 }, wireBytes: 3 * 17 });
  t.equal(seen[0]!.raw.flags, PcapFlag.FEC_REASSEMBLED | PcapFlag.BAD_CRC);
  t.match(formatFrame(seen[0]!.view), /device->host bad CRC: CRC-32 [0-9a-f]{8} does not match the 7 bytes before it \[fec 3 of 3, s 8, 3 seen\]$/);
  // One shard (k = 1) with a valid check whose length field says more than it holds.
  const forged = Uint8Array.of(0xfe, 2, 1, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0);
  const check = crc32(forged.subarray(0, 10)) & 0xffff;
  forged[10] = check >>> 8;
  forged[11] = check & 0xff;
  m.push('device->host', onWire(forged));
  t.match(seen[1]!.view, { ok: false, problem: 'bad shard', detail: /^1 whole shards of frame 2 do not make a frame/, fec: { k: 1, n: 1, s: 4, shards: 1 } });
  t.equal(seen[1]!.raw.flags, NO_RECORD, 'no capture record: there is no frame to show');
  t.equal(records.length, 5, 'the three shards, the bad-CRC frame, the forged shard');
  // Hostile runs of 0xFE bodies never throw and are counted as bad shards.
  for (let len = 1; len < 40; len++) m.push('device->host', onWire(new Uint8Array(len).fill(0xfe)));
  t.equal(m.stats['device->host'].problems['bad shard'], 39 + 1);
  t.equal(seen.length, 2);
});
