// The running station from the CLI (issue 10 item 7), every step the real `qkt` against a real
// `qkt station run` and `qkt terminal run`: `qkt station uplink` sends a test uplink (OTP, then
// AEAD with a downlink back) and shows what the station answered; `qkt station status` shows each
// terminal's key account, generation and last uplink, page by page past 16 terminals; refusals
// (an operator's certificate used for an uplink, another terminal's certificate, no certificate)
// are named with their exit code. And `qkt status --port tcp:...` pointed at something that is not
// a terminal (the station, a KMD download port, an HTTP server, silence, a socket that hangs up)
// says what it found and exits 3, never a TypeError.
import t from 'tap';
import http from 'node:http';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { background, failsWith, qktJson, runQkt } from './e2e-rig.js';
import { StationStore } from '../host-tools/station/store.js';
import { LinkClient } from '../host-tools/link/client.js';
import { connectTcp, parseTcpAddress } from '../host-tools/transports/tcp.js';
import { Group, StationCmd, SystemCmd } from '../firmware/link/groups.js';
import { connectStation } from '../host-tools/station/connect.js';
import { readClientPems } from '../host-tools/station/certs.js';

t.setTimeout(240_000);

const NO_DEVICE = 3;
const REFUSED = 4;
const STATE = 6;

interface Row {
  terminalId: string;
  generation: number | null;
  storedKeyBits: number;
  maxKeyBits: number;
  consumedKeyBits: number;
  activeBatches: number;
  inactiveBatches: number;
  activeKeyBits: number;
  inactiveKeyBits: number;
  lastUplink: { at: string; mode: string; counter: number; bytes: number; keyBits: number } | null;
  forecast: { keyBitsPerDay: number; basisDays: number; daysLeft: number } | null;
}

/** A TCP server on 127.0.0.1 that does `onSocket` with each connection; closed when the test ends. */
async function server(t: Test, onSocket: (s: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onSocket(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return `tcp:127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
}

t.test('station status and a test uplink from the CLI; status against what is not a terminal', async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '4Mbit']);
  for (const id of ['T1', 'T2']) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', join(dir, `${id}.img`)]);
  await qktJson(t, ['carrier', 'load', '--home', home, '--carrier', join(dir, 'car'), '--terminal', 'T1', '--bits', '1Mbit', '--init']);
  await qktJson(t, ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1')]);
  await qktJson(t, ['station', 'cert', '--home', home, '--terminal', 'T2', '--out', join(dir, 't2')]);
  await qktJson(t, ['station', 'cert', '--home', home, '--operator', 'ops', '--out', join(dir, 'ops')]);

  const st = await background(t, ['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  const station = st.ready['listen'] as string;
  const term = await background(t, ['terminal', 'run', '--flash', join(dir, 'T1.img'), '--listen', 'tcp:127.0.0.1:0']);
  const port = term.ready['port'] as string;
  await qktJson(t, ['inject', '--carrier', join(dir, 'car'), '--port', port]);

  // Before any uplink: T1's keys are at the station, awaiting proof of delivery.
  const before = await qktJson<{ station: string; terminals: Row[] }>(t, ['station', 'status', '--station', station, '--cert', join(dir, 'ops')]);
  t.equal(before.station, station);
  t.same(
    before.terminals.map((r) => [r.terminalId, r.generation, r.storedKeyBits, r.consumedKeyBits, r.activeBatches, r.inactiveBatches, r.activeKeyBits, r.inactiveKeyBits, r.lastUplink]),
    [['T1', 1, 1 << 20, 0, 0, 1, 0, 1 << 20, null]],
    'one terminal, its batch inactive, no uplink yet',
  );
  t.ok(before.terminals[0]!.maxKeyBits >= 1 << 20, 'its pool size');
  t.equal(before.terminals[0]!.forecast, null, 'no forecast before any key is used');

  // A test uplink, OTP: the station opened it, and says so.
  const otp = await qktJson<Record<string, unknown>>(t, ['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--data', 'hello station']);
  t.same(otp, { port, station, terminalId: 'T1', mode: 'otp', accepted: true, decrypted: true, counter: 0, bytes: 13, stationKeyBits: 256 + 13 * 8 });
  // AEAD, with a downlink back under the same session key, in words.
  const aead = await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--mode', 'aead']);
  t.equal(aead.code, 0, aead.stderr);
  t.match(aead.stdout, /^uplink from T1 \(tcp:127\.0\.0\.1:\d+\) to the station tls:127\.0\.0\.1:\d+: accepted, decrypted ok\n  aead message #0, 23 bytes, 256 bit of key at the station\n  downlink under the same session key: opened ok by the terminal\n$/);

  // The accounts: both uplinks counted, the batch active by first use, the last uplink named.
  const after = await qktJson<{ terminals: Row[] }>(t, ['station', 'status', '--station', station, '--cert', join(dir, 'ops')]);
  const row = after.terminals[0]!;
  const pool = (await qktJson<{ pool: { consumedKeyBits: number } }>(t, ['status', '--port', port])).pool;
  t.equal(row.consumedKeyBits, 256 + 13 * 8 + 256, 'the station accounts both uplinks');
  t.equal(row.consumedKeyBits, pool.consumedKeyBits, 'and the terminal used the same key bits');
  t.equal(row.storedKeyBits, (1 << 20) - row.consumedKeyBits);
  t.same([row.activeBatches, row.inactiveBatches, row.activeKeyBits, row.inactiveKeyBits], [1, 0, row.storedKeyBits, 0], 'the batch is active: its first use proved delivery');
  t.match(row.lastUplink, { mode: 'aead', counter: 0, bytes: 23, keyBits: 256 });
  t.ok(Math.abs(Date.parse(row.lastUplink!.at) - Date.now()) < 600_000 && /Z$/.test(row.lastUplink!.at), 'its time, ISO 8601 UTC');
  // The forecast: today's 616 key bits a day (two days' worth if the uplinks straddled midnight UTC).
  const f = row.forecast!;
  t.ok(f && f.basisDays >= 1 && f.basisDays <= 2 && f.keyBitsPerDay === Math.ceil(row.consumedKeyBits / f.basisDays), `the use per day: ${JSON.stringify(f)}`);
  t.equal(f.daysLeft, Math.floor(row.storedKeyBits / f.keyBitsPerDay), 'the days the remaining keys last');
  const human = await runQkt(['station', 'status', '--station', station, '--cert', join(dir, 'ops')]);
  t.equal(human.code, 0);
  t.match(human.stdout, /^terminal\s+gen\s+remaining\s+usable\s+awaiting\s+used\s+batches\s+lasts\s+last uplink$/m);
  t.match(human.stdout, new RegExp(`^T1\\s+1\\s+\\S+ \\S+\\s+\\S+ \\S+\\s+0 bit\\s+\\S+ \\S+\\s+1\\+0\\s+${f.daysLeft} d\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ aead #0, 23 B$`, 'm'));
  // A terminal's certificate sees its own row only.
  const own = await qktJson<{ terminals: Row[] }>(t, ['station', 'status', '--station', station, '--cert', join(dir, 't2')]);
  t.same(own.terminals, [], "T2's certificate: T2 has no keys at the station, and T1's row is not shown");

  // Refusals, named, with their exit codes. A certificate that cannot send this terminal's uplink
  // is refused before the terminal spends a key on the message.
  const spent = async () => (await qktJson<{ pool: { consumedKeyBits: number } }>(t, ['status', '--port', port])).pool.consumedKeyBits;
  const spentBefore = await spent();
  failsWith(t, await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 'ops')]), 2, /^qkt: --cert: the certificate is operator ops's, not terminal T1's: give its own \(qkt station cert --terminal T1\); usage: qkt station uplink /, 'uplink with an operator certificate');
  failsWith(t, await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't2')]), 2, /^qkt: --cert: the certificate is terminal T2's; the terminal on the port is T1: give its own/, "uplink with another terminal's certificate");
  t.equal(await spent(), spentBefore, 'no key spent at the terminal for either');
  const t2 = await background(t, ['terminal', 'run', '--flash', join(dir, 'T2.img'), '--listen', 'tcp:127.0.0.1:0']);
  failsWith(t, await runQkt(['station', 'uplink', '--port', t2.ready['port'] as string, '--station', station, '--cert', join(dir, 't2')]), REFUSED, /^qkt: the station holds no keys for terminal T2: nothing sent/, 'uplink for a terminal the station holds no keys for');
  failsWith(t, await runQkt(['station', 'status', '--station', station, '--cert', join(dir, 'nothing')]), STATE, /^qkt: --cert .*nothing: no client\.key there; issue a certificate with qkt station cert/, 'no certificate');
  failsWith(t, await runQkt(['station', 'status', '--station', 'tcp:127.0.0.1:1', '--cert', join(dir, 'ops')]), 2, /^qkt: --station: this service speaks TLS only/, 'a tcp: address for the station');
  failsWith(t, await runQkt(['station', 'uplink', '--port', port, '--station', station, '--cert', join(dir, 't1'), '--mode', 'xor']), 2, /^qkt: --mode must be otp or aead, got "xor"; usage: /, 'an unknown mode');

  // Past one page: 20 more terminals with keys at the station (pre-applied straight into its store).
  const store = new StationStore(join(home, 'station'));
  for (let i = 0; i < 20; i++) {
    store.addBatch(`X${String(i).padStart(2, '0')}`, { batchId: new Uint8Array(randomBytes(16)), seq: 1, purpose: 'any', bits: 4096 }, new Uint8Array(512));
  }
  store.close();
  const all = await qktJson<{ terminals: Row[] }>(t, ['station', 'status', '--station', station, '--cert', join(dir, 'ops')]);
  t.same(
    all.terminals.map((r) => r.terminalId),
    ['T1', ...Array.from({ length: 20 }, (_, i) => `X${String(i).padStart(2, '0')}`)].sort(),
    'every terminal, in id order, over two pages',
  );
  t.match(all.terminals.find((r) => r.terminalId === 'X07'), { generation: null, storedKeyBits: 4096, lastUplink: null }, 'not enrolled at the KMD: generation null');
  // --home: the same accounts read from the store itself, no service needed.
  const local = await qktJson<{ station: string; terminals: Row[] }>(t, ['station', 'status', '--home', home]);
  t.equal(local.station, join(home, 'station'));
  t.same(local.terminals, all.terminals, '--home reads the same rows the station serves');
  failsWith(t, await runQkt(['station', 'status'], { env: { QKT_HOME: '' } }), 2, /^qkt: give --station \[tls:\]HOST:PORT --cert DIR \(a running station\) or --home H \(its store\); usage: /, 'neither a station nor a home');
  failsWith(t, await runQkt(['station', 'status', '--station', station]), 2, /^qkt: --station needs --cert DIR/, '--station without --cert');
  // The pages on the wire: at most 16 rows, `next` to go on; a terminal's certificate gets its own row whatever it asks.
  const ops = new LinkClient(await connectStation(station, readClientPems(join(dir, 'ops'))));
  await ops.negotiate();
  const p1 = await ops.request(Group.STATION, StationCmd.STATUS, { max: 5 });
  t.same([(p1['terminals'] as Row[]).map((r) => r.terminalId), p1['next']], [['T1', 'X00', 'X01', 'X02', 'X03'], 'X03'], 'max 5: five rows and next');
  const p2 = await ops.request(Group.STATION, StationCmd.STATUS, { after: 'X02', max: 1000 });
  t.same([(p2['terminals'] as Row[]).length, p2['next']], [16, 'X18'], 'capped at 16 rows');
  const p3 = await ops.request(Group.STATION, StationCmd.STATUS, { after: 'X18' });
  t.same([(p3['terminals'] as Row[]).map((r) => r.terminalId), p3['next']], [['X19'], undefined], 'the last page: no next');
  const p4 = await ops.request(Group.STATION, StationCmd.STATUS, { after: 'X19' });
  t.same([p4['terminals'], p4['next']], [[], undefined], 'past the end: no rows, no next');
  await ops.close();
  const mine = new LinkClient(await connectStation(station, readClientPems(join(dir, 't1'))));
  await mine.negotiate();
  const own1 = await mine.request(Group.STATION, StationCmd.STATUS, { after: 'X00', max: 16 });
  t.same([(own1['terminals'] as Row[]).map((r) => r.terminalId), own1['next']], [['T1'], undefined], "a terminal's own row only");
  await mine.close();

  // `qkt status` pointed at things that are not terminals: named, exit 3, one line.
  const stationTcp = station.replace(/^tls:/, 'tcp:');
  failsWith(t, await runQkt(['status', '--port', stationTcp]), NO_DEVICE, new RegExp(`^qkt: ${stationTcp} is a qkt station, not a terminal: use qkt station status --station ${station}`), 'status against the station');
  const kmd = await background(t, ['kmd', 'serve', '--home', home, '--listen', '127.0.0.1:0', '--plain-http', '--download', 'tcp:127.0.0.1:0']);
  const download = kmd.ready['download'] as string;
  failsWith(t, await runQkt(['status', '--port', download]), NO_DEVICE, new RegExp(`^qkt: ${download} is a qkt KMD download port \\(qkt-kmd [^)]+\\), not a terminal: use qkt carrier load --kmd ${download}$`), 'status against a KMD download port');
  const web = http.createServer((_q, r) => r.end('hi'));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => web.close());
  const webPort = `tcp:127.0.0.1:${(web.address() as net.AddressInfo).port}`;
  failsWith(t, await runQkt(['status', '--port', webPort]), NO_DEVICE, new RegExp(`^qkt: ${webPort} is an HTTP server, not a terminal$`), 'status against an HTTP server');
  // A TLS server that is not the station (the KMD's own server certificate, a plain TLS echo).
  const other = tls.createServer({ key: readFileSync(join(home, 'pki', 'server.key')), cert: readFileSync(join(home, 'pki', 'server.crt')) }, (c) => c.on('error', () => undefined).pipe(c));
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => other.close());
  const otherPort = `tcp:127.0.0.1:${(other.address() as net.AddressInfo).port}`;
  failsWith(t, await runQkt(['status', '--port', otherPort]), NO_DEVICE, new RegExp(`^qkt: ${otherPort} speaks TLS, not the qkt link protocol: it is not a terminal$`), 'status against another TLS server');
  const silent = await server(t, () => undefined);
  failsWith(t, await runQkt(['status', '--port', silent]), NO_DEVICE, new RegExp(`^qkt: ${silent} did not answer as a terminal: the connection opened but nothing answered PARAMS$`), 'status against silence');
  const hangup = await server(t, (s) => s.destroy());
  failsWith(t, await runQkt(['status', '--port', hangup]), NO_DEVICE, new RegExp(`^qkt: ${hangup} did not answer as a terminal: it closed the connection without a reply$`), 'status against a socket that hangs up');
  // And the terminal itself still answers as one.
  t.match(await qktJson(t, ['status', '--port', port]), { terminalId: 'T1' });

  // The KMD download port under a flood: 40 sockets that never send hold no slot against a real
  // carrier, and a stranger's STATUS does not tell how many batches wait.
  const { host: dlHost, port: dlPort } = parseTcpAddress(download);
  const flood: net.Socket[] = [];
  t.teardown(() => flood.forEach((s) => s.destroy()));
  for (let i = 0; i < 40; i++) {
    const s = net.connect({ host: dlHost, port: dlPort });
    s.on('error', () => undefined);
    s.resume();
    flood.push(s);
    await new Promise((r) => s.once('connect', r));
  }
  const peek = new LinkClient(await connectTcp(dlHost, dlPort));
  await peek.negotiate();
  t.same(Object.keys(await peek.request(Group.SYSTEM, SystemCmd.STATUS, {})).sort(), ['firmware', 'kmdId'], "a stranger's STATUS: no pending count");
  await peek.close();
  await qktJson(t, ['kmd', 'carrier', 'add', '--home', home, '--carrier', 'car2', '--dir', join(dir, 'car2'), '--init']);
  const loaded = await qktJson<{ loaded: Array<{ terminalId: string }> }>(t, ['carrier', 'load', '--kmd', download, '--carrier', join(dir, 'car2'), '--terminal', 'T2', '--bits', '8192']);
  t.same(loaded.loaded.map((l) => l.terminalId), ['T2'], 'the carrier loaded its batch through the flood');
  // T2's module is replaced (enrolled again): its old certificate is refused at the STATUS check,
  // before the module spends a key.
  await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T2', '--flash', join(dir, 'T2b.img'), '--again']);
  failsWith(t, await runQkt(['station', 'uplink', '--port', t2.ready['port'] as string, '--station', station, '--cert', join(dir, 't2')]), REFUSED, /^qkt: the station refused STATUS: .*cert generation 1 retired \(now 2\)/, 'a certificate of a retired generation');
  t.ok(flood.filter((s) => s.destroyed || s.readableEnded).length >= 25, 'silent sockets were closed to make room');
  t.match(kmd.stderr(), /download: tcp [^ ]+ closed to make room \(no valid frame yet; 16 connections open\)/, 'and the KMD logged it');
});
