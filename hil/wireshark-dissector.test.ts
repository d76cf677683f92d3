// The Wireshark dissector (docs/wireshark/qkt.lua) under tshark: the frozen frames of
// fixtures/frames/, written to a pcap by the monitor's own writer, decode to their header fields,
// names and CBOR values with good CRCs; a corrupted CRC, bad COBS and garbage are flagged; and the
// dissector's name tables agree with firmware/link/groups.ts and errors.ts, id for id; FEC shards
// show their fields and check, and a frame the monitor put together from them decodes as any frame.
import t from 'tap';
import { join } from 'node:path';
import { loadFrameFixtures } from '../fixtures/frames.js';
import { encodeMessage } from '../firmware/link/codec.js';
import { Kind, encodeFrame } from '../firmware/link/frame.js';
import { AdminCmd, DiagCmd, DownloadCmd, Group, InjectCmd, KeysCmd, StationCmd, SystemCmd, SystemEvent } from '../firmware/link/groups.js';
import { Rc } from '../firmware/link/errors.js';
import { PcapWriter } from '../host-tools/monitor/pcap.js';
import { LinkMonitor } from '../host-tools/monitor/link-monitor.js';
import { cobsDecode, cobsEncode } from '../firmware/link/cobs.js';
import { encodeNeed, encodeShards } from '../firmware/link/fec.js';
import { tshark, tsharkFields, tsharkSkipReason } from './tshark.js';

/** A capture of these wire frames (each with its delimiters, as encodeFrame makes them). */
function capture(path: string, frames: { wire: Uint8Array; toHost: boolean; flags?: number }[]): string {
  const w = PcapWriter.open(path);
  frames.forEach((f, i) => w.write({ timeUs: 1_700_000_000_000_000 + i * 1000, direction: f.toHost ? 1 : 0, flags: f.flags ?? 0, bytes: f.wire.subarray(1, -1) }));
  w.close();
  return path;
}

const skip = tsharkSkipReason();

t.test('the frozen frames decode to their fields', { skip }, async (t) => {
  const fixtures = loadFrameFixtures();
  const pcap = capture(join(t.testdir({}), 'frames.pcap'), fixtures.map((f) => ({ wire: f.wire, toHost: f.message.kind !== Kind.REQUEST })));
  const rows = await tsharkFields(pcap, ['qkt.direction', 'qkt.version', 'qkt.kind', 'qkt.group', 'qkt.command', 'qkt.command_name', 'qkt.seq', 'qkt.crc.good', 'qkt.rc', 'qkt.reason', 'qkt.cbor.key', 'qkt.cbor.uint', 'qkt.cbor.text', '_ws.col.Info']);
  t.equal(rows.length, fixtures.length);
  fixtures.forEach((f, i) => {
    const r = rows[i]!;
    const h = f.message;
    t.match(r, { 'qkt.direction': h.kind === Kind.REQUEST ? '0' : '1', 'qkt.version': '1', 'qkt.kind': String(h.kind), 'qkt.group': String(h.group), 'qkt.command': String(h.command), 'qkt.seq': String(h.seq), 'qkt.crc.good': '1' }, f.name);
  });
  t.same(rows.map((r) => r['_ws.col.Info']), [
    'host->device request SYSTEM.PARAMS seq=1',
    'device->host response SYSTEM.PARAMS seq=1',
    'host->device request SYSTEM.STATUS seq=2',
    'device->host error NOT_SUPPORTED (9.7) seq=4660 "group 9 command 7"',
    'device->host error OUT_OF_ORDER (DIAG.SINK_CHUNK) seq=7 "expected offset 4096"',
    'host->device request DIAG.SINK_CHUNK seq=3',
  ]);
  t.same(rows.map((r) => r['qkt.command_name']), ['PARAMS', 'PARAMS', 'STATUS', '7', 'SINK_CHUNK', 'SINK_CHUNK']);
  // CBOR values: the PARAMS reply's map, the errors' codes and reasons, nested maps.
  t.equal(rows[1]!['qkt.cbor.key'], 'versions|maxFrame|window|maxChunk|firmware');
  t.equal(rows[1]!['qkt.cbor.uint'], '1|8256|4|8206');
  t.equal(rows[1]!['qkt.cbor.text'], 'qkt-fw 0.1.0');
  t.match(rows[3], { 'qkt.rc': '2', 'qkt.reason': 'group 9 command 7' });
  t.match(rows[4], { 'qkt.rc': '12', 'qkt.cbor.key': 'g|rc|r|d|committed', 'qkt.cbor.uint': '1|12|4096' });
  // The tree as a person sees it (-V): labels with keys, nesting, byte strings with their length.
  const text = await tshark(pcap, ['-V']);
  t.match(text, /"maxFrame": 8256/);
  t.match(text, /"d": map of 1\n\s+"committed": 4096/);
  t.match(text, /"d": byte string, 6 bytes: h'0001020000ff'/);
  t.match(text, /Group: DIAG \(1\)/);
  t.match(text, /Refusal code: OUT_OF_ORDER \(12\)\n\s+\[Expert Info \(Note\/Response\): refused: OUT_OF_ORDER \(expected offset 4096\)\]/);
});

t.test('a corrupted CRC, bad COBS and garbage are flagged', { skip }, async (t) => {
  const good = loadFrameFixtures()[0]!.wire;
  const badCrc = good.slice();
  badCrc[badCrc.length - 2]! ^= 0x10;
  const pcap = capture(join(t.testdir({}), 'bad.pcap'), [
    { wire: badCrc, toHost: false, flags: 0x02 },
    { wire: Uint8Array.of(0, 9, 1, 2, 0), toHost: true, flags: 0x01 },
    { wire: Uint8Array.of(0, 2, 0x42, 0), toHost: true, flags: 0x04 },
    { wire: good, toHost: false },
  ]);
  const rows = await tsharkFields(pcap, ['qkt.crc.good', 'qkt.flags', '_ws.expert.message', '_ws.col.Info']);
  t.match(rows[0], { 'qkt.crc.good': '0', 'qkt.flags': '0x02', '_ws.expert.message': /^bad CRC-32: frame says 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}$/, '_ws.col.Info': 'host->device bad CRC' });
  t.match(rows[1], { 'qkt.crc.good': '', '_ws.expert.message': 'Not valid COBS', '_ws.col.Info': 'device->host bad COBS (3 bytes)' });
  t.match(rows[2], { '_ws.expert.message': /^too short: 1 bytes decoded/, '_ws.col.Info': /too short/ });
  t.match(rows[3], { 'qkt.crc.good': '1', '_ws.expert.message': '', '_ws.col.Info': 'host->device request SYSTEM.PARAMS seq=1' });
  const filtered = await tshark(pcap, ['-Y', 'qkt.crc.good == 0', '-T', 'fields', '-e', 'frame.number']);
  t.equal(filtered.trim(), '1', 'a display filter finds the bad frame');
});

t.test("the dissector's names match groups.ts and errors.ts", { skip }, async (t) => {
  const tables: [number, Record<string, number>][] = [
    [Group.SYSTEM, SystemCmd],
    [Group.DIAG, DiagCmd],
    [Group.INJECT, InjectCmd],
    [Group.KEYS, KeysCmd],
    [Group.ADMIN, AdminCmd],
    [Group.DOWNLOAD, DownloadCmd],
    [Group.STATION, StationCmd],
  ];
  const groupNames = new Map(Object.entries(Group).map(([k, v]) => [v as number, k]));
  const want: string[] = [];
  const frames: { wire: Uint8Array; toHost: boolean }[] = [];
  let seq = 0;
  for (const [g, cmds] of tables) {
    for (const [name, c] of Object.entries(cmds)) {
      frames.push({ wire: encodeMessage({ kind: Kind.REQUEST, group: g, command: c, seq: ++seq, payload: {} }), toHost: false });
      want.push(`host->device request ${groupNames.get(g)}.${name} seq=${seq}`);
    }
  }
  for (const [name, c] of Object.entries(SystemEvent)) {
    frames.push({ wire: encodeMessage({ kind: Kind.EVENT, group: Group.SYSTEM, command: c, seq: ++seq, payload: {} }), toHost: true });
    want.push(`device->host event SYSTEM.${name} seq=${seq}`);
  }
  for (const [name, rc] of Object.entries(Rc)) {
    frames.push({ wire: encodeMessage({ kind: Kind.ERROR, group: 0, command: 1, seq: ++seq, payload: { g: 0, rc } }), toHost: true });
    want.push(`device->host error ${name} (SYSTEM.STATUS) seq=${seq}`);
  }
  t.ok(Object.keys(Group).every((g) => tables.some(([id]) => groupNames.get(id) === g)), 'every group of groups.ts is in the list');
  const pcap = capture(join(t.testdir({}), 'names.pcap'), frames);
  const rows = await tsharkFields(pcap, ['_ws.col.Info']);
  t.same(rows.map((r) => r['_ws.col.Info']), want);
});

t.test('CBOR in the tree: 64-bit and negative integers, floats, tags, indefinite lengths; malformed CBOR flagged', { skip }, async (t) => {
  const payloads = [
    'a261613bffffffffffffffff61621bffffffffffffffff', // {"a": -2^64, "b": 2^64 - 1}
    'a5616ef93c00616bfb3ff199999999999a6174c11a514b67b061699f0102ff616dbf6178a161796161ff',
    'a1616c5f42010243030405ff', // an indefinite byte string in two chunks
    'a2616161', // cut short
    '81'.repeat(100) + '00', // 100 levels deep
    'a36161f461624061636078', // a trailing byte
  ];
  const pcap = capture(
    join(t.testdir({}), 'cbor.pcap'),
    payloads.map((h, i) => ({ wire: encodeFrame({ version: 1, kind: Kind.RESPONSE, group: Group.DIAG, command: DiagCmd.ECHO, seq: i }, Buffer.from(h, 'hex')), toHost: true })),
  );
  const text = await tshark(pcap, ['-V']);
  const frames = text.split(/\n(?=Frame \d+:)/);
  t.equal(frames.length, payloads.length);
  t.match(frames[0], /"a": -18446744073709551616\n\s+"b": 18446744073709551615\n/);
  t.match(frames[1], /"n": 1\n\s+"k": 1\.1\n\s+"t": tag 1\n\s+1363896240\n\s+"i": array \(indefinite\)\n\s+\[0\]: 1\n\s+\[1\]: 2\n\s+"m": map \(indefinite\)\n\s+"x": map of 1\n\s+"y": "a"\n/);
  t.match(frames[2], /"l": \(_ indefinite-length string\)\n\s+chunk: byte string, 2 bytes: h'0102'[\s\S]*chunk: byte string, 3 bytes: h'030405'/);
  const rows = await tsharkFields(pcap, ['_ws.expert.message', 'qkt.crc.good']);
  t.same(rows.map((r) => r['_ws.expert.message']), [
    '',
    '',
    '',
    'malformed CBOR at body byte 10: string length runs past the end',
    'malformed CBOR at body byte 39: nested deeper than 32 levels',
    'malformed CBOR at body byte 16: 1 bytes after the CBOR item',
  ]);
  t.ok(rows.every((r) => r['qkt.crc.good'] === '1'), 'the frames themselves are whole');
});

t.test("the monitor's own verdicts: a cut oversize record, a body over maxFrame", { skip }, async (t) => {
  const path = join(t.testdir({}), 'big.pcap');
  const w = PcapWriter.open(path);
  w.write({ timeUs: 1, direction: 0, flags: 0x08, bytes: new Uint8Array(65_531).fill(0x41), origLength: 70_000 });
  w.write({ timeUs: 2, direction: 0, flags: 0x08, bytes: loadFrameFixtures()[0]!.wire.subarray(1, -1) });
  w.close();
  const rows = await tsharkFields(path, ['frame.len', 'frame.cap_len', '_ws.expert.message', '_ws.col.Info']);
  t.match(rows[0], { 'frame.len': '70004', 'frame.cap_len': '65535', '_ws.expert.message': 'frame cut: 70000 bytes on the wire, 65531 captured', '_ws.col.Info': 'host->device oversize frame (70000 bytes on the wire)' });
  t.match(rows[1], { '_ws.expert.message': 'the monitor saw a body larger than the maxFrame the module announced', '_ws.col.Info': 'host->device request SYSTEM.PARAMS seq=1' });
});

t.test('a refusal code out of the field range is named as sent, never shown wrapped in qkt.rc', { skip }, async (t) => {
  const payloads = [
    'a1627263 1b0000000100000000', // {"rc": 2^32}: not "OK (0)"
    'a1627263 1bffffffffffffffff', // {"rc": 2^64 - 1}
    'a1627263 20', // {"rc": -1}: not 4294967295
    'a1627263 fb3ff8000000000000', // {"rc": 1.5}: not INTERNAL (1)
    'a1627263 0c', // {"rc": 12}: OUT_OF_ORDER as before
  ];
  const pcap = capture(
    join(t.testdir({}), 'rc.pcap'),
    payloads.map((h, i) => ({ wire: encodeFrame({ version: 1, kind: Kind.ERROR, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: i }, Buffer.from(h.replace(/ /g, ''), 'hex')), toHost: true })),
  );
  const rows = await tsharkFields(pcap, ['qkt.rc', '_ws.col.Info']);
  t.same(
    rows.map((r) => [r['qkt.rc'], r['_ws.col.Info']]),
    [
      ['', 'device->host error RC_4294967296 (SYSTEM.PARAMS) seq=0'],
      ['', 'device->host error RC_18446744073709551615 (SYSTEM.PARAMS) seq=1'],
      ['', 'device->host error RC_-1 (SYSTEM.PARAMS) seq=2'],
      ['', 'device->host error RC_1.5 (SYSTEM.PARAMS) seq=3'],
      ['12', 'device->host error OUT_OF_ORDER (SYSTEM.PARAMS) seq=4'],
    ],
  );
});

t.test('FEC shards: their fields and check; a frame put together from them decodes as any frame', { skip }, async (t) => {
  // What the monitor writes for an INJECT chunk sent as shards (one damaged, one repeated) and a
  // plain frame after it: its own records, through its own writer.
  const secretish = Uint8Array.from({ length: 100 }, (_, i) => 0xc0 + (i % 16));
  const chunk = encodeMessage({ kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.CHUNK, seq: 41, payload: { t: 1, o: 0, d: secretish } });
  const body = cobsDecode(chunk.subarray(1, -1))!;
  const k = Math.ceil((body.length + 2) / 16);
  const shards = encodeShards(body, 7, { s: 16, k, n: k + 2 }, 44);
  const onWire = (b: Uint8Array) => Buffer.concat([cobsEncode(b), Buffer.of(0)]);
  const damagedBody = Uint8Array.from(shards[0]!);
  // Three bytes from the frame's version byte on, none becoming 0x00 (one flipped bit would be put
  // right by the monitor, and shown as a whole shard).
  for (const i of [8, 9, 10]) damagedBody[i]! ^= 0x04;
  const damaged = onWire(damagedBody);
  const path = join(t.testdir({}), 'fec.pcap');
  const w = PcapWriter.open(path);
  let now = 1_700_000_000_000_000;
  const m = new LinkMonitor({ onFrame: (_v, raw) => raw && w.write(raw), onShard: (raw) => w.write(raw), nowUs: () => (now += 1000) });
  m.push('host->device', Buffer.concat([Buffer.of(0), damaged, ...shards.slice(1, k + 1).map(onWire), onWire(shards[1]!)]));
  m.push('device->host', loadFrameFixtures()[1]!.wire);
  w.close();
  const rows = await tsharkFields(path, ['qkt.flags', 'qkt.fec.id', 'qkt.fec.k', 'qkt.fec.n', 'qkt.fec.index', 'qkt.fec.seen', 'qkt.fec.data', 'qkt.fec.check', 'qkt.fec.check.good', 'qkt.fec.reassembled', 'qkt.seq', 'qkt.crc.good', '_ws.expert.message', '_ws.col.Info']);
  t.equal(rows.length, k + 4, 'k + 1 shards, the reassembled frame, a late shard, the plain frame');
  const want = (i: number) => {
    const sh = shards[i]!;
    return { 'qkt.fec.id': '7', 'qkt.fec.k': String(k), 'qkt.fec.n': String(k + 2), 'qkt.fec.index': String(i), 'qkt.fec.seen': '44', 'qkt.fec.data': '16', 'qkt.fec.check': '0x' + Buffer.from(sh.subarray(-2)).toString('hex'), 'qkt.fec.check.good': '1', 'qkt.seq': '', 'qkt.crc.good': '' };
  };
  t.match(rows[0], { 'qkt.flags': '0x22', 'qkt.fec.index': '0', 'qkt.fec.check.good': '0', '_ws.expert.message': /^bad shard check: shard says 0x[0-9a-f]{4}, computed 0x[0-9a-f]{4}$/, '_ws.col.Info': `host->device FEC shard 0 of ${k + 2}, frame id 7, k ${k}, s 16 [bad check]` });
  for (let i = 1; i <= k; i++) t.match(rows[i], { 'qkt.flags': '0x20', '_ws.expert.message': '', '_ws.col.Info': `host->device FEC shard ${i} of ${k + 2}, frame id 7, k ${k}, s 16`, ...want(i) }, `shard ${i}`);
  t.match(rows[k + 1], { 'qkt.flags': '0x40', 'qkt.fec.reassembled': '1', 'qkt.fec.id': '', 'qkt.seq': '41', 'qkt.crc.good': '1', '_ws.expert.message': '', '_ws.col.Info': 'host->device request INJECT.CHUNK seq=41 [reassembled from FEC shards]' });
  t.match(rows[k + 2], { 'qkt.flags': '0x20', ...want(1) }, 'a shard after its frame was complete');
  t.match(rows[k + 3], { 'qkt.flags': '0x00', 'qkt.fec.reassembled': '', 'qkt.fec.id': '', '_ws.col.Info': 'device->host response SYSTEM.PARAMS seq=1' });
  // The tree: shard data and sealed chunk bytes by length only, in the shard and in the frame.
  const text = await tshark(path, ['-V']);
  t.match(text, /Shard data length: 16\n/);
  t.match(text, /Shard index: 1 \(data\)/);
  t.match(text, new RegExp(`Shard index: ${k} \\(parity\\)`));
  t.match(text, /Reassembled from FEC shards: the monitor put this frame together/);
  t.match(text, /"d": byte string, 100 bytes\n/);
  t.same(text.split('\n').filter((l) => /Shard data/.test(l) && /c0c1/.test(l)), [], 'shard data by length only');
  // No label shows the sealed bytes: not the shard records, not the payload or record of the frame.
  t.same(text.split('\n').filter((l) => /c0c1c2c3/.test(l)), [], 'no line shows the chunk bytes');
  t.match(text, /Payload \(CBOR\), \d+ bytes; byte strings shown by length only/);
  // A body that starts 0xFE is a shard even without the flag; a record too short for one is flagged.
  const path2 = join(t.testdir({}), 'mark.pcap');
  const w2 = PcapWriter.open(path2);
  w2.write({ timeUs: 1, direction: 1, flags: 0, bytes: cobsEncode(shards[2]!) });
  w2.write({ timeUs: 2, direction: 1, flags: 0x22, bytes: cobsEncode(Uint8Array.of(0xfe, 1, 2)) });
  w2.close();
  const rows2 = await tsharkFields(path2, ['qkt.fec.index', 'qkt.fec.check.good', '_ws.expert.message', '_ws.col.Info']);
  t.match(rows2[0], { 'qkt.fec.index': '2', 'qkt.fec.check.good': '1', '_ws.col.Info': /^device->host FEC shard 2 of / });
  t.match(rows2[1], { 'qkt.fec.index': '', '_ws.expert.message': /^too short for a FEC shard: 3 bytes decoded/, '_ws.col.Info': 'device->host FEC shard, too short (3 bytes)' });
});

t.test('a NEED (0xFD) decodes as a NEED with its fields and check, not as a corrupt frame', { skip }, async (t) => {
  const need = encodeNeed({ id: 9, k: 78, n: 255, need: 4 });
  const bad = Uint8Array.from(need);
  bad[4] = 5; // the count changed, the check not
  const path = join(t.testdir({}), 'need.pcap');
  const w = PcapWriter.open(path);
  // Through the monitor, as `qkt monitor` writes them: a whole NEED and a damaged one, device to host.
  const m = new LinkMonitor({ onFrame: (_v, raw) => raw && w.write(raw), onShard: (raw) => w.write(raw), nowUs: () => 1_700_000_000_000_000 });
  m.push('device->host', Buffer.concat([Buffer.of(0), cobsEncode(need), Buffer.of(0), cobsEncode(bad), Buffer.of(0)]));
  // And one without the monitor's flag: the mark alone says NEED.
  w.write({ timeUs: 3, direction: 1, flags: 0, bytes: cobsEncode(need) });
  w.close();
  t.same(m.stats['device->host'].needs, { good: 1, bad: 1 });
  t.equal(m.stats['device->host'].frames, 0, 'no frame reported, no frame problem');
  const rows = await tsharkFields(path, ['qkt.flags', 'qkt.fec.id', 'qkt.fec.k', 'qkt.fec.n', 'qkt.need.need', 'qkt.fec.check.good', 'qkt.crc.good', '_ws.expert.message', '_ws.col.Info']);
  t.equal(rows.length, 3);
  t.match(rows[0], { 'qkt.flags': '0x20', 'qkt.fec.id': '9', 'qkt.fec.k': '78', 'qkt.fec.n': '255', 'qkt.need.need': '4', 'qkt.fec.check.good': '1', 'qkt.crc.good': '', '_ws.expert.message': '', '_ws.col.Info': 'device->host FEC NEED: 4 more shards of frame id 9 (k 78, n 255)' });
  t.match(rows[1], { 'qkt.flags': '0x22', 'qkt.need.need': '5', 'qkt.fec.check.good': '0', '_ws.expert.message': /^bad NEED check/, '_ws.col.Info': /\[bad check\]$/ });
  t.match(rows[2], { 'qkt.flags': '0x00', 'qkt.need.need': '4', 'qkt.fec.check.good': '1', '_ws.col.Info': 'device->host FEC NEED: 4 more shards of frame id 9 (k 78, n 255)' });
});
