// The station on an MQTT broker (broker.ts, serve.ts serveBroker) with the embedded aedes broker:
// the broker's rules for strangers, a worker's answers to lying and malformed messages (nothing
// taken, nothing filed), a message sent again (answered again, filed once), the refusal of the
// pool-image store, and a sender's resends and give-up.
import t from 'tap';
import type { Test } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import mqtt from 'mqtt';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { createTerminal } from '../../firmware/terminal.js';
import { Group, KeysCmd, StationCmd } from '../../firmware/link/groups.js';
import { decodePayload, encodePayload } from '../../firmware/link/codec.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { LinkTimeoutError } from '../link/errors.js';
import { injectBatch } from '../link/inject.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal } from '../kmd/enroll.js';
import { exportBatch, readOutbox } from '../kmd/export.js';
import { InputError } from '../input-error.js';
import { openStationStore } from './open-store.js';
import { startStationServer } from './serve.js';
import { BROKER_PASSWORD_ENV, BrokerStation, MAX_REQUEST_BYTES, MAX_SUBSCRIPTIONS, answerTopic, connectBroker, checkBrokerUrl, startEmbeddedBroker, terminalOfTopic, upTopic } from './broker.js';

t.setTimeout(60_000);

async function terminal(t: Test, home: KmdHome, dir: string, id: string) {
  enrollTerminal(home, id, join(dir, `${id}.img`));
  const e = exportBatch(home, id, 2 ** 16);
  const flash = NorFlash.fromImage(readFileSync(join(dir, `${id}.img`)));
  const [host, device] = createInProcessPair();
  createTerminal({ flash, transport: device });
  const module = new LinkClient(host);
  t.teardown(() => module.close());
  await injectBatch(module, await module.negotiate(), readOutbox(e));
  const s = (await module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number;
  return { module, seal: async (n: number) => (await module.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(40).fill(n) }))['m'] as Uint8Array };
}

/** A SQLite home with terminal T1 loaded (a its module), served by a worker on the embedded broker. */
async function embeddedWorker(t: Test) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 2 ** 20, stationStore: 'sqlite' });
  const a = await terminal(t, home, dir, 'T1');
  const logs: string[] = [];
  const server = await startStationServer({ stationDir: home.path('station'), broker: 'embedded', listen: '127.0.0.1:0', log: (l) => logs.push(l) });
  t.teardown(() => server.close());
  return { home, a, logs, server };
}

/** A raw MQTT 3.1.1 client (as a stranger would have), connected to `url`. */
async function raw(t: Test, url: string, o: mqtt.IClientOptions = {}) {
  const c = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...o });
  t.teardown(() => c.endAsync(true));
  return c;
}

t.test('addresses and topics', async (t) => {
  t.equal(checkBrokerUrl('mqtt://127.0.0.1:1883').port, '1883');
  for (const bad of ['http://x:1', 'mqtt://', 'mqtt://h:1/path', 'mqtt://h:1?x=1', 'not a url']) t.throws(() => checkBrokerUrl(bad), InputError, bad);
  t.notMatch(String((() => { try { checkBrokerUrl('mqtt://u:SeCrEt@h:1/p'); } catch (e) { return (e as Error).message; } })()), /SeCrEt/, 'no password in an error');
  t.equal(terminalOfTopic(upTopic('T-1')), 'T-1');
  for (const bad of ['qkt/v1/up/..', 'qkt/v1/up/a/b', 'qkt/v1/up/', `qkt/v1/up/${'x'.repeat(33)}`, 'qkt/v1/answer/x']) t.equal(terminalOfTopic(bad), undefined, bad);
});

t.test('a worker on the embedded broker: strangers, lies, resends', async (t) => {
  const { home, a, logs, server } = await embeddedWorker(t);
  const url = server.address;
  t.match(url, /^mqtt:\/\/127\.0\.0\.1:\d+$/);
  t.same({ version: server.broker!.version, share: server.broker!.share, filer: server.broker!.filer }, { version: 4, share: undefined, filer: true }, 'aedes: MQTT 3.1.1, one worker, which files');

  // The embedded broker's rules for anyone but the station's own worker.
  const stranger = await raw(t, url);
  await t.rejects(stranger.subscribeAsync('qkt/v1/answer/#', { qos: 1 }), /Subscribe error/, "no wildcard on answers: no one reads another's");
  await t.rejects(stranger.subscribeAsync('qkt/v1/up/+', { qos: 1 }), /Subscribe error/, 'no one but the station reads uplinks');
  await t.rejects(stranger.subscribeAsync('qkt/v1/answer/short', { qos: 1 }), /Subscribe error/, 'an answer tag too short to be unguessable');
  await t.rejects(mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, username: 'qkt-station', password: 'guess' }), 'the station\'s login is not guessed');
  const refused = (await connectBroker(url, { username: 'qkt-station', password: 'guess' }).catch((e: unknown) => e)) as Error;
  t.equal(refused.name, 'Error');
  t.match(refused.message, /^the MQTT broker at mqtt:\/\/127\.0\.0\.1:\d+ refused the login/, 'a refused login: its own words (exit 1), not "nothing there"');
  const rogue = await raw(t, url);
  const closed = new Promise<void>((r) => rogue.once('close', () => r()));
  rogue.publish('qkt/v1/answer/abcdefabcdefabcdef0123', Buffer.from('x'), { qos: 1 });
  await closed;
  t.pass('a publish to an answer topic (or any but qkt/v1/up/<t>) closes the connection');

  // A lying client with a reply topic of its own.
  const tag = 'abcdefabcdefabcdef0123';
  const liar = await raw(t, url);
  t.same((await liar.subscribeAsync(answerTopic(tag), { qos: 1 })).map((g) => g.qos), [1]);
  const answers: Array<Record<string, unknown>> = [];
  liar.on('message', (_topic, p) => answers.push(decodePayload(p)!));
  const before = openStationStore(home.path('station'));
  const account = before.account('T1');
  before.close();
  const dropped0 = server.counters.brokerDropped;
  const send = (topic: string, body: Record<string, unknown> | Buffer) => liar.publishAsync(topic, Buffer.isBuffer(body) ? body : Buffer.from(encodePayload(body)), { qos: 1 });
  await send(upTopic('T1'), Buffer.from('not cbor'));
  await send(upTopic('T1'), { t: 'T1', m: new Uint8Array(10) }); // no reply tag: dropped
  await send(upTopic('T1'), { t: 'T1', m: new Uint8Array(10), a: 'short', k: 1 }); // tag too short
  const forged = await a.seal(1);
  forged[forged.length - 1]! ^= 1;
  await send(upTopic('T1'), { t: 'T1', m: forged, a: tag, k: 1 });
  await send(upTopic('T1'), { t: 'T2', m: forged, a: tag, k: 2 }); // topic and field disagree
  await send(upTopic('T9'), { t: 'T9', m: forged, a: tag, k: 3 }); // no such terminal
  await send(upTopic('T1'), { t: 'T1', m: 'text', a: tag, k: 4 });
  for (let i = 0; i < 100 && answers.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(server.counters.brokerDropped - dropped0, 3, 'malformed and untagged messages dropped (an oversized one the embedded broker refuses: below)');
  const rc = Object.fromEntries(answers.map((x) => [x['k'], x['rc']]));
  t.same(rc, { 1: Rc.AUTH_FAILED, 2: Rc.BAD_REQUEST, 3: Rc.WRONG_TERMINAL, 4: Rc.BAD_REQUEST }, 'each lie answered with its refusal');
  const after = openStationStore(home.path('station'));
  t.same(after.account('T1'), account, 'nothing taken');
  after.close();

  // A genuine uplink sent twice (a resend: its answer was lost): answered twice, opened once.
  const bs = await BrokerStation.connect(url);
  t.teardown(() => bs.close());
  const req = bs.forTerminal('T1');
  t.equal(req.params?.window, 1, 'one uplink in flight per terminal');
  const m = await a.seal(2);
  const first = await req.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m });
  t.equal(first['n'], 40);
  await send(upTopic('T1'), { t: 'T1', m, a: tag, k: 5 });
  for (let i = 0; i < 100 && !answers.some((x) => x['k'] === 5); i++) await new Promise((r) => setTimeout(r, 20));
  const again = answers.find((x) => x['k'] === 5)!;
  t.same({ rc: again['rc'], n: again['n'], keyBits: again['keyBits'] }, { rc: Rc.OK, n: first['n'], keyBits: first['keyBits'] }, 'the resend gets the same answer');
  await t.rejects(req.request(Group.STATION, StationCmd.STATUS, {}), LinkError, 'only UPLINK goes over the broker');
  await t.rejects(req.request(Group.STATION, StationCmd.UPLINK, { t: 'T2', m }), LinkError, 'a requester speaks for its terminal only');
  await server.close();
  const lines = readFileSync(home.path('station', 'inbox.jsonl'), 'utf8').trim().split('\n');
  t.equal(lines.length, 1, 'filed once');
  t.ok(logs.some((l) => /opened before/.test(l)), 'the resend is logged as one');
});

t.test('the embedded broker holds nothing big for strangers: no retained messages, no packet over its bound, even before CONNECT', async (t) => {
  const b = await startEmbeddedBroker('127.0.0.1', 0);
  t.teardown(() => b.close());
  const port = Number(new URL(b.url).port);
  const closes = async (what: string, publish: (c: mqtt.MqttClient) => void) => {
    const c = await raw(t, b.url);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    publish(c);
    await closed;
    t.pass(what);
  };
  await closes('a retained uplink closes the connection (the broker would keep it for ever)', (c) => c.publish(upTopic('T1'), Buffer.alloc(100), { qos: 1, retain: true }));
  await closes('an uplink over MAX_REQUEST_BYTES closes the connection', (c) => c.publish(upTopic('T1'), Buffer.alloc(MAX_REQUEST_BYTES + 1), { qos: 1 }));
  // A stranger who never logs in announces a 256 MiB packet and streams it: closed at the header.
  const s = connect(port, '127.0.0.1');
  t.teardown(() => s.destroy());
  await new Promise<void>((r) => s.once('connect', () => r()));
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  s.on('error', () => undefined);
  s.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024);
  while (!s.destroyed && sent < 64 * 2 ** 20) {
    if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), closed]);
    sent += chunk.length;
  }
  await closed;
  t.ok(sent < 64 * 2 ** 20, `closed after ${sent} bytes, not after 64 MiB`);
  // Subscriptions: a few per connection, not a million (each one held by the broker).
  const subscriber = await raw(t, b.url);
  for (let i = 0; i < MAX_SUBSCRIPTIONS; i++) await subscriber.subscribeAsync(answerTopic(`tag${String(i).padStart(20, '0')}`), { qos: 1 });
  t.pass(`${MAX_SUBSCRIPTIONS} subscriptions granted`);
  await subscriber.subscribeAsync(answerTopic('x'.repeat(32)), { qos: 1 }).then(() => t.fail('granted'), () => t.pass('the next one refused'));
  // A genuine-sized uplink still goes through (the worker reads it).
  const spy = await mqtt.connectAsync(b.url, { protocolVersion: 4, reconnectPeriod: 0, ...b.stationLogin });
  t.teardown(() => spy.endAsync(true));
  await spy.subscribeAsync('qkt/v1/up/+', { qos: 1 });
  const got = new Promise<number>((r) => spy.once('message', (_t, p) => r(p.length)));
  const ok = await raw(t, b.url);
  await ok.publishAsync(upTopic('T1'), Buffer.alloc(MAX_REQUEST_BYTES), { qos: 1 });
  t.equal(await got, MAX_REQUEST_BYTES);
});

t.test('a store that fails (a commit refused): the uplink is left unanswered, not refused, and its resend is opened', async (t) => {
  const { home, a, logs, server } = await embeddedWorker(t);
  // Another connection holds the database's write lock past the store's busy timeout (10 s):
  // the group's commit fails (on PostgreSQL: two workers' groups deadlocked).
  const Database = (await import('better-sqlite3')).default;
  const blocker = new Database(home.path('station', 'station.sqlite'));
  blocker.exec('BEGIN EXCLUSIVE');
  const release = setTimeout(() => {
    blocker.exec('ROLLBACK');
    blocker.close();
  }, 11_000);
  t.teardown(() => clearTimeout(release));
  const bs = await BrokerStation.connect(server.address);
  t.teardown(() => bs.close());
  const m = await a.seal(1);
  const answer = await bs.forTerminal('T1').request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m }, { timeoutMs: 40_000 });
  t.equal(answer['n'], 40, 'opened once the store could commit again');
  t.ok(logs.some((l) => /left unanswered for its sender to send again/.test(l)), 'the failure is logged');
  await server.close();
  t.equal(readFileSync(home.path('station', 'inbox.jsonl'), 'utf8').trim().split('\n').length, 1, 'filed once');
});

t.test('the pool-image store is refused on a broker', async (t) => {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000 });
  await t.rejects(startStationServer({ stationDir: home.path('station'), broker: 'embedded', listen: '127.0.0.1:0' }), { name: 'InputError', message: /needs a database store/ });
});

t.test('a sender with no worker: resends, then gives up', async (t) => {
  const b = await startEmbeddedBroker('127.0.0.1', 0);
  t.teardown(() => b.close());
  const seen: number[] = [];
  const spy = await mqtt.connectAsync(b.url, { protocolVersion: 4, reconnectPeriod: 0, ...b.stationLogin });
  t.teardown(() => spy.endAsync(true));
  await spy.subscribeAsync('qkt/v1/up/+', { qos: 1 });
  spy.on('message', (_t, p) => seen.push(decodePayload(p)!['k'] as number));
  const bs = await BrokerStation.connect(b.url, { resendMs: 50 });
  t.teardown(() => bs.close());
  const e = await bs
    .forTerminal('T1')
    .request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: new Uint8Array(8) }, { timeoutMs: 400 })
    .catch((x: unknown) => x);
  t.type(e, LinkTimeoutError);
  t.ok(seen.length >= 3 && seen.every((k) => k === seen[0]), `the same message published ${seen.length} times`);
  t.equal(bs.inFlight, 0, 'nothing left waiting');
});

t.test('a password from QKT_MQTT_PASSWORD when the address names only the user', async (t) => {
  const b = await startEmbeddedBroker('127.0.0.1', 0);
  t.teardown(() => b.close());
  const user = b.url.replace('mqtt://', `mqtt://${b.stationLogin.username}@`);
  await t.rejects(connectBroker(user), /refused the login/, 'no password: refused');
  process.env[BROKER_PASSWORD_ENV] = b.stationLogin.password;
  t.teardown(() => delete process.env[BROKER_PASSWORD_ENV]);
  const c = await connectBroker(user);
  t.same((await c.client.subscribeAsync('qkt/v1/up/+', { qos: 1 })).map((g) => g.qos), [1], "logged in as the station's worker");
  await c.client.endAsync(true);
});

t.test('an unreachable broker: exit 3 material, no password shown', async (t) => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const e = await BrokerStation.connect('mqtt://u:SeCrEt@127.0.0.1:1', { timeoutMs: 60_000 }).catch((x: unknown) => x as Error);
  await new Promise((r) => setTimeout(r, 300));
  t.ok(timers() <= before, `${timers()} <= ${before}: no connect timer left behind (the process exits when it reports the error, not a timeout later)`);
  t.equal((e as Error).name, 'NoDeviceError');
  t.match((e as Error).message, /cannot reach the MQTT broker at mqtt:\/\/u:\*\*\*@127\.0\.0\.1:1/);
  t.notMatch((e as Error).message, /SeCrEt/);
});
