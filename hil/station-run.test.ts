// `qkt station run` as the master station service: a module injected from a carrier sends OTP and
// AEAD uplinks over the station's link (mutual TLS, a terminal certificate from `qkt station cert`),
// gets an AEAD downlink back, and both sides account the same key bits; a replayed uplink finds its
// keys gone. Under --json its log goes to stderr, stdout holds only JSON. After `kmd void --in-use`
// the AEAD session under the voided batch ends: no downlink is sealed, no uplink opened under it.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQkt, startQkt } from './cli.js';
import { moduleOn } from './e2e-rig.js';
import { Group, KeysCmd, StationCmd, SystemCmd } from '../firmware/link/groups.js';
import { LinkError, Rc } from '../firmware/link/errors.js';
import { decodeServiceHeader } from '../firmware/crypto/service.js';
import { connectStation } from '../host-tools/station/connect.js';
import { readClientPems } from '../host-tools/station/certs.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Carrier } from '../host-tools/carrier/carrier.js';

t.setTimeout(120_000);

async function rc(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e instanceof LinkError ? e.rc : -1;
  }
}

t.test('station run opens uplinks, seals downlinks, accounts key use', async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  for (const args of [
    ['kmd', 'init', '--home', home, '--rate', '11kbit/s', '--stock', '4Mbit'],
    ['kmd', 'enroll', '--home', home, '--terminal', 'T1', '--flash', join(dir, 't1.img')],
    ['carrier', 'load', '--init', '--home', home, '--carrier', join(dir, 'car'), '--terminal', 'T1', '--bits', '1Mbit'],
    ['station', 'cert', '--home', home, '--terminal', 'T1', '--out', join(dir, 't1-station')],
  ]) {
    const r = await runQkt(args);
    t.equal(r.code, 0, `qkt ${args.slice(0, 2).join(' ')}: ${r.stderr}`);
  }
  // The field visit, in process: the module on its flash image, injected from the carrier.
  const { client: module, params } = await moduleOn(t, join(dir, 't1.img'));
  const carrier = Carrier.open(join(dir, 'car'));
  const r = await injectBatch(module, params, carrier.readBatch(carrier.batchFor('T1')!));
  carrier.recordReceipt('T1', r.batchId, r.receipt);

  const st = await startQkt(['station', 'run', '--home', home, '--listen', '127.0.0.1:0']);
  t.teardown(() => st.stop());
  t.match(st.ready, { listen: /^tls:127\.0\.0\.1:\d+$/, serverNames: ['localhost', '127.0.0.1', '::1'] });
  const station = new LinkClient(await connectStation(st.ready['listen'] as string, readClientPems(join(dir, 't1-station'))));
  t.teardown(() => station.close());
  await station.negotiate();

  // OTP uplink: the station opens it with the keys the header names, and files the data.
  const otp = (await module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  const reading = new TextEncoder().encode('{"ua":230.4,"ia":12.1}');
  const m1 = (await module.request(Group.KEYS, KeysCmd.SEAL, { s: otp, d: reading }))['m'] as Uint8Array;
  const up = await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: m1 });
  t.same(up, { n: reading.length, keyBits: 256 + reading.length * 8 });
  const inbox = readFileSync(st.ready['inbox'] as string, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { terminal: string; data: string });
  t.equal(inbox.length, 1);
  t.equal(Buffer.from(inbox[0]!.data, 'base64').toString(), '{"ua":230.4,"ia":12.1}');
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: m1 })), Rc.KEY_NOT_AVAILABLE, 'a replayed uplink finds its keys consumed');

  // AEAD session: uplink, then a downlink under the session key the terminal named.
  const aead = (await module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' }))['s'];
  const m2 = (await module.request(Group.KEYS, KeysCmd.SEAL, { s: aead, d: reading }))['m'] as Uint8Array;
  await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: m2 });
  // A forged message under the session key with a far-ahead counter is refused and blocks nothing.
  const forged = Uint8Array.from(m2);
  new DataView(forged.buffer).setUint32(2, 0xfffffff0);
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: forged })), Rc.AUTH_FAILED, 'forged uplink refused');
  const m3 = (await module.request(Group.KEYS, KeysCmd.SEAL, { s: aead, d: reading }))['m'] as Uint8Array;
  t.match(await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: m3 }), { n: reading.length }, 'the next genuine uplink still opens');
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: '..', m: m3 })), Rc.DENIED, 'a terminal id that is not the certificate\'s is DENIED (never a path)');
  const key = decodeServiceHeader(m2).header.keyIds[0]!;
  const cmd = new TextEncoder().encode('{"cmd":"trip"}');
  const down = (await station.request(Group.STATION, StationCmd.DOWNLINK, { t: 'T1', b: key.batchId, o: key.bitOffset, d: cmd }))['m'] as Uint8Array;
  const opened = (await module.request(Group.KEYS, KeysCmd.OPEN, { s: aead, m: down }))['d'] as Uint8Array;
  t.equal(Buffer.from(opened).toString(), '{"cmd":"trip"}');

  // Accounting: both sides used the same key bits.
  const pool = (await module.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number };
  const ss = (await station.request(Group.STATION, StationCmd.STATUS, {}))['terminals'] as Array<{ terminalId: string; consumedKeyBits: number }>;
  t.equal(ss.length, 1);
  t.equal(ss[0]!.consumedKeyBits, pool.consumedKeyBits, 'station and terminal consumed the same key bits');
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T9', m: m1 })), Rc.DENIED, 'another terminal, known or not: DENIED');

  // --json: the service log is on stderr (one line per uplink), stdout holds JSON documents only.
  t.match(st.stderr(), /^station: T1 otp uplink, 22 bytes, \d+ key bits$/m, 'under --json the service log goes to stderr');
  t.match(st.stderr(), /^station: T1 aead uplink, 22 bytes/m);
  for (const line of st.stdout().trim().split('\n')) t.doesNotThrow(() => JSON.parse(line), `stdout line is JSON: ${line.slice(0, 40)}`);

  // The KMD voids the batch in use (the terminal was zeroized): the running station ends the
  // session under it, although the key is still in its memory.
  const before = (await station.request(Group.STATION, StationCmd.STATUS, {}))['terminals'];
  const m4 = (await module.request(Group.KEYS, KeysCmd.SEAL, { s: aead, d: reading }))['m'] as Uint8Array;
  const v = await runQkt(['kmd', 'void', '--home', home, '--terminal', 'T1', '--in-use', '--reason', 'zeroized', '--json']);
  t.equal(v.code, 0, `kmd void --in-use: ${v.stderr}`);
  t.match(JSON.parse(v.stdout), { voided: [{ batchId: Buffer.from(key.batchId).toString('hex') }] });
  const refused = await station.request(Group.STATION, StationCmd.DOWNLINK, { t: 'T1', b: key.batchId, o: key.bitOffset, d: cmd }).then(
    () => undefined,
    (e: Error) => e,
  );
  t.match(refused, { rc: Rc.KEY_NOT_AVAILABLE, message: /session ended: batch [0-9a-f]{8} of T1 is void at the station/ }, 'no downlink is sealed under the voided batch');
  t.equal(await rc(station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: m4 })), Rc.KEY_NOT_AVAILABLE, 'nor an uplink opened under it');
  t.equal(await rc(station.request(Group.STATION, StationCmd.DOWNLINK, { t: 'T1', b: key.batchId, o: key.bitOffset, d: cmd })), Rc.AUTH_FAILED, 'and the session stays gone (no AEAD session under that key)');
  t.not(JSON.stringify((await station.request(Group.STATION, StationCmd.STATUS, {}))['terminals']), JSON.stringify(before), 'the station store shows the batch gone');
});
