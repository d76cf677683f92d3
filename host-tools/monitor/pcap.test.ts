// The pcap writer (pcap.ts): the classic libpcap layout byte by byte, the pseudo-header, records
// cut to the snaplen with their real length kept, and a file that reads after every record.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LINKTYPE_USER0, PCAP_SNAPLEN, PcapDirection, PcapFlag, PcapWriter, pcapGlobalHeader, pcapRecord } from './pcap.js';

/** Parse a classic little-endian pcap into its records (a reader written from the format spec). */
function readPcap(buf: Buffer) {
  if (buf.readUInt32LE(0) !== 0xa1b2c3d4) throw new Error('not a little-endian classic pcap');
  const records: { sec: number; usec: number; incl: number; orig: number; data: Buffer }[] = [];
  let at = 24;
  while (at + 16 <= buf.length) {
    const incl = buf.readUInt32LE(at + 8);
    if (at + 16 + incl > buf.length) break;
    records.push({ sec: buf.readUInt32LE(at), usec: buf.readUInt32LE(at + 4), incl, orig: buf.readUInt32LE(at + 12), data: buf.subarray(at + 16, at + 16 + incl) });
    at += 16 + incl;
  }
  return { linktype: buf.readUInt32LE(20), snaplen: buf.readUInt32LE(16), records, rest: buf.length - at };
}

t.test('global header: magic, v2.4, UTC, snaplen 65535, LINKTYPE_USER0', async (t) => {
  t.equal(Buffer.from(pcapGlobalHeader()).toString('hex'), 'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + 'ffff0000' + '93000000');
  t.equal(LINKTYPE_USER0, 147);
});

t.test('a record: time, lengths, pseudo-header, frame bytes', async (t) => {
  const r = Buffer.from(pcapRecord({ timeUs: 1_700_000_000_123_456, direction: PcapDirection.DEVICE_TO_HOST, flags: PcapFlag.BAD_CRC, bytes: Uint8Array.of(2, 1, 9) }));
  t.equal(r.readUInt32LE(0), 1_700_000_000);
  t.equal(r.readUInt32LE(4), 123_456);
  t.equal(r.readUInt32LE(8), 7, 'incl_len: 4 + 3');
  t.equal(r.readUInt32LE(12), 7, 'orig_len');
  t.equal(r.subarray(16).toString('hex'), '01' + '01' + '02' + '00' + '020109', 'version 1, device->host, BAD_CRC, reserved, bytes');
  t.throws(() => pcapRecord({ timeUs: -1, direction: 0, flags: 0, bytes: new Uint8Array(1) }), RangeError);
});

t.test('an oversize frame is cut to the snaplen and keeps its real length', async (t) => {
  const bytes = new Uint8Array(70_000).fill(7);
  const r = Buffer.from(pcapRecord({ timeUs: 1, direction: 0, flags: PcapFlag.OVERSIZE, bytes: bytes.subarray(0, 65_531), origLength: 70_000 }));
  t.equal(r.readUInt32LE(8), PCAP_SNAPLEN);
  t.equal(r.readUInt32LE(12), 70_004);
  t.equal(r.length, 16 + PCAP_SNAPLEN);
  const r2 = Buffer.from(pcapRecord({ timeUs: 1, direction: 0, flags: 0, bytes }));
  t.equal(r2.readUInt32LE(8), PCAP_SNAPLEN, 'cut at the snaplen even when given more');
  t.equal(r2.readUInt32LE(12), 70_004);
});

t.test('the writer streams: after each record the file reads whole', async (t) => {
  const dir = t.testdir({ old: 'not a capture' });
  const path = join(dir, 'old');
  const w = PcapWriter.open(path);
  t.same(readPcap(readFileSync(path)), { linktype: 147, snaplen: 65_535, records: [], rest: 0 }, 'an existing file is truncated: just the header');
  for (let i = 0; i < 3; i++) {
    w.write({ timeUs: 2_000_000 + i, direction: (i % 2) as 0 | 1, flags: 0, bytes: Uint8Array.of(i + 1, 0xaa) });
    const p = readPcap(readFileSync(path));
    t.equal(p.records.length, i + 1, `record ${i + 1} is on disk before close`);
    t.equal(p.rest, 0);
  }
  w.close();
  w.close();
  t.equal(w.records, 3);
  const p = readPcap(readFileSync(path));
  t.same(p.records.map((r) => [r.sec, r.usec, r.data.toString('hex')]), [
    [2, 0, '01000000' + '01aa'],
    [2, 1, '01010000' + '02aa'],
    [2, 2, '01000000' + '03aa'],
  ]);
  t.throws(() => w.write({ timeUs: 0, direction: 0, flags: 0, bytes: Uint8Array.of(1) }), /closed/);
  t.throws(() => PcapWriter.open(join(dir, 'no', 'such', 'dir.pcap')), { code: 'ENOENT' });
});
