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

t.test('a named pipe nobody reads is refused at once, not waited on where no signal stops it', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const fifo = join(t.testdir({}), 'live.pcap');
  if (spawnSync('mkfifo', [fifo]).status !== 0) {
    t.comment('no mkfifo here');
    return;
  }
  // In a child: before, openSync blocked for good (the monitor ignored Ctrl-C and SIGTERM).
  const url = new URL('../../dist/host-tools/monitor/pcap.js', import.meta.url).href; // built (npm test builds first)
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const { PcapWriter } = await import(${JSON.stringify(url)}); try { PcapWriter.open(process.argv[1]); console.log('opened'); } catch (e) { console.log(e.message); }`, fifo], { encoding: 'utf8', timeout: 5000 });
  t.equal(r.signal, null, 'returned by itself');
  t.match(r.stdout, /a pipe that no program reads yet: start the reader first/);
});

t.test('a named pipe with a reader gets the capture; a reader that stops reading stops it, never blocks', async (t) => {
  const { spawnSync, spawn } = await import('node:child_process');
  const fifo = join(t.testdir({}), 'live.pcap');
  if (spawnSync('mkfifo', [fifo]).status !== 0) {
    t.comment('no mkfifo here');
    return;
  }
  // A reader that takes the first bytes and then sleeps without reading (a stalled Wireshark).
  const reader = spawn('sh', ['-c', `exec 3<"${fifo}"; head -c 24 <&3 >/dev/null; sleep 30`], { stdio: 'ignore' });
  t.teardown(() => reader.kill('SIGKILL'));
  let w: PcapWriter | undefined;
  for (let i = 0; i < 100 && !w; i++) {
    try {
      w = PcapWriter.open(fifo);
    } catch {
      await new Promise((r) => setTimeout(r, 20)); // the reader is not there yet
    }
  }
  t.ok(w, 'opened once the reader is there');
  const t0 = Date.now();
  const err = (() => {
    try {
      for (let i = 0; i < 1000; i++) w!.write({ timeUs: 1, direction: PcapDirection.HOST_TO_DEVICE, flags: 0, bytes: new Uint8Array(8192) });
    } catch (e) {
      return e as Error;
    }
    return undefined;
  })();
  w!.close();
  t.match(err?.message, /its reader does not keep up/);
  t.ok(Date.now() - t0 < 2000, 'without waiting for the reader');
});
