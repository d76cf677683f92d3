// `qkt monitor` as a bench engineer runs it: between a `qkt terminal run` on TCP and a
// `qkt inject` (and a `qkt status` after it, on the same monitor), every frame both ways comes out
// as a --json line and in the pcap, which tshark with docs/wireshark/qkt.lua decodes to the same
// frames with good CRCs; then on a real serial path (a socat pty) with a new pty for the host;
// garbage and bad frames passed through byte for byte and reported; a frame in FEC shards shown
// once, its shards in the pcap; a wrong command line refused.
import t from 'tap';
import type { Test } from 'tap';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { loadFrameFixtures } from '../fixtures/frames.js';
import { cobsDecode, cobsEncode } from '../firmware/link/cobs.js';
import { encodeShards } from '../firmware/link/fec.js';
import { runQkt, startQkt } from './cli.js';
import type { Background } from './cli.js';
import { createPtyPair, socatSkipReason } from './pty.js';
import { tsharkFields, tsharkSkipReason } from './tshark.js';

interface Line {
  event: string;
  [k: string]: unknown;
}
const lines = (out: string): Line[] =>
  out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);

async function qktOk(t: Test, args: string[]) {
  const r = await runQkt([...args, '--json']);
  t.equal(r.code, 0, `qkt ${args.join(' ')}: ${r.stderr}`);
}

t.test('monitor between terminal run and inject: --json lines and a pcap tshark decodes', async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'home');
  const flash = join(dir, 't1.img');
  const carrier = join(dir, 'car');
  const pcap = join(dir, 'inject.pcap');
  await qktOk(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  await qktOk(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', flash]);
  await qktOk(t, ['carrier', 'load', '--init', '--home', home, '--carrier', carrier, '--terminal', 'T1', '--bits', '96Kbit']);

  const term = await startQkt(['terminal', 'run', '--flash', flash, '--listen', 'tcp:127.0.0.1:0']);
  t.teardown(() => term.stop());
  const device = (term.ready['port'] as string).replace(/^tcp:/, 'connect:');
  const mon = await startQkt(['monitor', device, 'tcp:127.0.0.1:0', '--pcap', pcap]);
  t.teardown(() => mon.stop());
  t.match(mon.ready, { event: 'ready', a: device, b: /^tcp:127\.0\.0\.1:\d+$/, pcap, pid: mon.child.pid });

  const inject = await runQkt(['inject', '--carrier', carrier, '--port', mon.ready['b'] as string, '--json']);
  t.equal(inject.code, 0, inject.stderr);
  t.match(JSON.parse(inject.stdout), { terminalId: 'T1', bits: 96 * 1024 });
  // The host's connection closed; the monitor serves the next one (a second host program).
  const status = await runQkt(['status', '--json', '--port', mon.ready['b'] as string]);
  t.equal(status.code, 0, status.stderr);
  t.match(JSON.parse(status.stdout), { terminalId: 'T1', pool: { storedKeyBits: 96 * 1024 } });
  t.equal(await mon.stop(), 0, mon.stderr());
  t.match(mon.stderr(), /disconnected; waiting for the next connection/);

  const out = lines(mon.stdout());
  const frames = out.filter((l) => l.event === 'frame');
  const end = out.at(-1)!;
  t.equal(end.event, 'end');
  t.match(end, { reason: 'stopped', pcapRecords: frames.length, 'host->device': { problems: {} }, 'device->host': { problems: {} } });
  t.ok(frames.every((f) => f['ok'] === true && f['problem'] === undefined), 'every frame whole, no framing errors');
  const names = (dir: string) => frames.filter((f) => f['dir'] === dir).map((f) => `${f['groupName']}.${f['commandName']}`);
  for (const dir of ['host->device', 'device->host']) {
    const n = names(dir);
    t.ok(n.includes('INJECT.BEGIN') && n.includes('INJECT.CHUNK') && n.includes('INJECT.COMMIT'), `${dir}: BEGIN, CHUNK, COMMIT in ${n.join(' ')}`);
  }
  t.equal(frames.at(-1)!['commandName'], 'STATUS', "the second program's frames are there too");
  const chunks = frames.filter((f) => f['commandName'] === 'CHUNK' && f['kind'] === 'request');
  t.ok(chunks.length >= 2, '96 kbit is two chunks or more');
  t.ok(chunks.every((c) => /"d": h'\.\.'\(\d+ bytes\)/.test(c['payload'] as string)), 'sealed chunk bytes: their length only');
  t.ok(frames.every((f) => typeof f['t'] === 'number' && typeof f['seq'] === 'number' && typeof f['wireBytes'] === 'number'));

  await t.test('tshark decodes the capture to the same frames', { skip: tsharkSkipReason() }, async (t) => {
    const rows = await tsharkFields(pcap, ['qkt.direction', 'qkt.group', 'qkt.command_name', 'qkt.seq', 'qkt.crc.good', 'qkt.flags']);
    t.equal(rows.length, frames.length, 'a record per frame');
    t.same(
      rows.map((r) => [r['qkt.direction'] === '0' ? 'host->device' : 'device->host', Number(r['qkt.group']), r['qkt.command_name'], Number(r['qkt.seq'])]),
      frames.map((f) => [f['dir'], f['group'], f['commandName'], f['seq']]),
    );
    t.ok(rows.every((r) => r['qkt.crc.good'] === '1' && r['qkt.flags'] === '0x00'), 'every CRC good');
    t.ok(rows.some((r) => r['qkt.command_name'] === 'COMMIT' && r['qkt.direction'] === '1'), "the module's COMMIT reply is there");
  });
});

t.test('monitor on a serial path with a new pty for the host', { skip: socatSkipReason() }, async (t) => {
  const pair = await createPtyPair();
  t.teardown(() => pair.close());
  const term = await startQkt(['terminal', 'run', '--flash', join(t.testdir({}), 't.img'), '--create-image', '--port', pair.b]);
  t.teardown(() => term.stop());
  const mon = await startQkt(['monitor', pair.a, 'pty']);
  t.teardown(() => mon.stop());
  t.match(mon.ready, { a: pair.a, b: /^\/dev\//, pcap: null });
  const r = await runQkt(['status', '--json', '--port', mon.ready['b'] as string]);
  t.equal(r.code, 0, r.stderr);
  t.equal(await mon.stop(), 0, 'stops cleanly on SIGTERM');
  const out = lines(mon.stdout());
  const frames = out.filter((l) => l.event === 'frame');
  t.same(frames.map((f) => [f['dir'], f['kind'], `${f['groupName']}.${f['commandName']}`]), [
    ['host->device', 'request', 'SYSTEM.PARAMS'],
    ['device->host', 'response', 'SYSTEM.PARAMS'],
    ['host->device', 'request', 'SYSTEM.STATUS'],
    ['device->host', 'response', 'SYSTEM.STATUS'],
  ]);
  t.match(out.at(-1), { event: 'end', reason: 'stopped', pcapRecords: null });
});

/** Resolves once the monitor has printed a line that `done` accepts (on its stdout 'data' events). */
function untilLine(mon: Background, done: (l: Line) => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (lines(mon.stdout().slice(0, mon.stdout().lastIndexOf('\n') + 1)).some(done)) {
        mon.child.stdout!.off('data', check);
        resolve();
      }
    };
    mon.child.stdout!.on('data', check);
    check();
  });
}

const dial = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });

t.test('garbage, bad CRCs and bad COBS pass through unchanged and are reported', async (t) => {
  const mon = await startQkt(['monitor', 'tcp:127.0.0.1:0', 'tcp:127.0.0.1:0']);
  t.teardown(() => mon.stop());
  const port = (end: unknown) => Number(String(end).split(':').at(-1));
  const device = await dial(port(mon.ready['a']));
  const host = await dial(port(mon.ready['b']));
  t.teardown(() => {
    device.destroy();
    host.destroy();
  });
  const [params, , status] = loadFrameFixtures();
  const badCrc = params!.wire.slice();
  badCrc[badCrc.length - 2]! ^= 0x10;
  const noise = Uint8Array.from({ length: 300 }, (_, i) => (i * 97 + 13) & 0xff); // zeros included
  const stream = Buffer.concat([Uint8Array.of(0x41, 0x42, 0x43), badCrc, noise, status!.wire, Uint8Array.of(0, 2, 1, 0), params!.wire]);
  const received: Buffer[] = [];
  const all = new Promise<void>((resolve) =>
    device.on('data', (d: Buffer) => {
      received.push(d);
      if (Buffer.concat(received).length >= stream.length) resolve();
    }),
  );
  // Both connections taken before the bytes go (until then a tcp: end drops what it is sent).
  await new Promise<void>((resolve) => {
    const check = () => (mon.stderr().match(/: connected \(/g)?.length === 2 ? (mon.child.stderr!.off('data', check), resolve()) : undefined);
    mon.child.stderr!.on('data', check);
    check();
  });
  host.write(stream);
  await all;
  t.same(Buffer.concat(received), stream, 'the device end got every byte, unchanged');
  await untilLine(mon, (l) => l.event === 'frame' && l['seq'] === 1 && l['ok'] === true && l['commandName'] === 'PARAMS');
  t.equal(await mon.stop(), 0);
  const frames = lines(mon.stdout()).filter((l) => l.event === 'frame');
  t.ok(frames.every((f) => f['dir'] === 'host->device'));
  const problems = frames.map((f) => f['problem'] ?? (f['ok'] ? 'ok' : '?'));
  t.same(problems.slice(0, 2), ['bad COBS', 'bad CRC'], 'the garbage ends at the bad-CRC frame (its leading 0x00), which is its own line');
  t.ok(problems.includes('too short'), problems.join(','));
  t.same(frames.filter((f) => f['ok'] === true).map((f) => f['commandName']), ['STATUS', 'PARAMS'], 'the good frames after the noise decode');
  const end = lines(mon.stdout()).at(-1)!;
  t.match(end, { event: 'end', 'host->device': { bytes: stream.length, problems: { 'bad CRC': 1 } }, 'device->host': { frames: 0, bytes: 0 } });
});

t.test('a frame in FEC shards: one --json line with its fec, no line per shard; shards and the frame in the pcap', async (t) => {
  const pcap = join(t.testdir({}), 'fec.pcap');
  const mon = await startQkt(['monitor', 'tcp:127.0.0.1:0', 'tcp:127.0.0.1:0', '--pcap', pcap]);
  t.teardown(() => mon.stop());
  const port = (end: unknown) => Number(String(end).split(':').at(-1));
  const device = await dial(port(mon.ready['a']));
  const host = await dial(port(mon.ready['b']));
  t.teardown(() => {
    device.destroy();
    host.destroy();
  });
  const status = loadFrameFixtures()[2]!.wire;
  const shards = encodeShards(cobsDecode(status.subarray(1, -1))!, 3, { s: 4, k: 4, n: 9 }, 60);
  const onWire = (b: Uint8Array) => Buffer.concat([cobsEncode(b), Buffer.of(0)]);
  const damaged = Uint8Array.from(shards[0]!);
  // Three bytes from the frame's version byte on (one flipped bit would be put right by the receiver).
  for (const i of [6, 7, 8]) damaged[i]! ^= 0x08;
  // Shard 0 damaged, 1 lost; 2, 3 and parity 4, 5 make the frame; 6 comes late.
  const stream = Buffer.concat([Buffer.of(0), onWire(damaged), ...[2, 3, 4, 5, 6].map((i) => onWire(shards[i]!))]);
  await new Promise<void>((resolve) => {
    const check = () => (mon.stderr().match(/: connected \(/g)?.length === 2 ? (mon.child.stderr!.off('data', check), resolve()) : undefined);
    mon.child.stderr!.on('data', check);
    check();
  });
  const received: Buffer[] = [];
  const all = new Promise<void>((resolve) =>
    device.on('data', (d: Buffer) => {
      received.push(d);
      if (Buffer.concat(received).length >= stream.length) resolve();
    }),
  );
  host.write(stream);
  await all;
  t.same(Buffer.concat(received), stream, 'the shards pass unchanged');
  await untilLine(mon, (l) => l.event === 'frame' && l['commandName'] === 'STATUS');
  t.equal(await mon.stop(), 0);
  const out = lines(mon.stdout());
  const frames = out.filter((l) => l.event === 'frame');
  t.equal(frames.length, 1, 'one line: the frame, none per shard');
  t.match(frames[0], { dir: 'host->device', ok: true, seq: 2, commandName: 'STATUS', fec: { k: 4, n: 9, s: 4, shards: 4 }, wireBytes: 4 * 13 });
  t.match(out.at(-1), { event: 'end', pcapRecords: 7, 'host->device': { frames: 1, problems: { 'bad shard': 1 }, shards: { good: 5, bad: 1 } } });
  t.notOk('shards' in (out.at(-1)!['device->host'] as object), 'no shards: no shard counts');

  await t.test('tshark decodes the shards and the reassembled frame', { skip: tsharkSkipReason() }, async (t) => {
    const rows = await tsharkFields(pcap, ['qkt.flags', 'qkt.fec.index', 'qkt.fec.check.good', 'qkt.fec.reassembled', 'qkt.command_name', 'qkt.crc.good']);
    t.same(
      rows.map((r) => [r['qkt.flags'], r['qkt.fec.index'], r['qkt.fec.check.good'], r['qkt.fec.reassembled'], r['qkt.command_name']]),
      [
        ['0x22', '0', '0', '', ''],
        ['0x20', '2', '1', '', ''],
        ['0x20', '3', '1', '', ''],
        ['0x20', '4', '1', '', ''],
        ['0x20', '5', '1', '', ''],
        ['0x40', '', '', '1', 'STATUS'],
        ['0x20', '6', '1', '', ''],
      ],
    );
  });
});

t.test('monitor refuses a bad command line and an absent device', async (t) => {
  const one = await runQkt(['monitor', 'pty']);
  t.equal(one.code, 2);
  t.match(one.stderr, /give two ends/);
  const bad = await runQkt(['monitor', 'serial', 'pty']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /not pty, tcp:HOST:PORT, connect:HOST:PORT or a serial device path/);
  const port = await runQkt(['monitor', 'connect:127.0.0.1:99999', 'pty']);
  t.equal(port.code, 2);
  t.match(port.stderr, /port must be 0\.\.65535/);
  // A closed port: nothing to connect to (port 1 on loopback is not served in the test rig).
  const none = await runQkt(['monitor', 'connect:127.0.0.1:1', 'tcp:127.0.0.1:0']);
  t.equal(none.code, 3, none.stderr);
  t.match(none.stderr, /cannot connect to connect:127\.0\.0\.1:1/);
});
