// The station over an MQTT broker (issue 13, item 3; docs/protocol.md 3.12.5): terminals publish their
// sealed uplinks to `qkt/v1/up/<terminal>`, station workers take them from one shared subscription
// and answer on the asker's own answer topic. What the broker carries is the UPLINK only: each
// message authenticates itself under its terminal's keys (a forged or replayed one takes nothing),
// so the broker needs no certificate per terminal, and a fleet shares one connection.
//
// Routing is in the payload (a reply tag and a correlation number), not in MQTT 5's Response Topic
// and Correlation Data: the same messages then work on MQTT 3.1.1 brokers (the embedded aedes
// speaks only 3.1.1) and on MQTT 5 ones (Mosquitto), whose shared subscriptions spread the
// uplinks over several workers.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
// mqtt and aedes are loaded when first used: the commands that load this file without a broker start no slower.
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Client as AedesClient } from 'aedes';
import { decodePayload, encodePayload } from '../../firmware/link/codec.js';
import type { Payload } from '../../firmware/link/codec.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { Group, StationCmd } from '../../firmware/link/groups.js';
import { LinkTimeoutError, NoDeviceError } from '../link/errors.js';
import { InputError } from '../input-error.js';
import { redactUrl } from '../redact-url.js';
import type { DeviceParams, RequestOptions } from '../link/client.js';

/** Topic prefix of this protocol's version. */
export const TOPIC_PREFIX = 'qkt/v1';
/** The topic a terminal's uplinks go to. */
export const upTopic = (terminalId: string) => `${TOPIC_PREFIX}/up/${terminalId}`;
/** The topic an asker's answers come back on (its reply tag). */
export const answerTopic = (tag: string) => `${TOPIC_PREFIX}/answer/${tag}`;
/** The station workers' subscription: shared by group where the broker can, else plain (one worker). */
export const workerTopic = (share: string | undefined) => (share ? `$share/${share}/${TOPIC_PREFIX}/up/+` : `${TOPIC_PREFIX}/up/+`);
/** The default share group of station workers. */
export const DEFAULT_SHARE = 'qkt-station';
/** A reply tag: 16 to 64 of A-Z a-z 0-9 _ - (a random one is unguessable: 128 bits as 32 hex digits). */
export const TAG_RE = /^[A-Za-z0-9_-]{16,64}$/;
const TERMINAL_TOPIC_RE = /^qkt\/v1\/up\/([A-Za-z0-9._-]{1,32})$/;
/** Largest request payload a worker reads (a sealed chunk is at most maxChunk bytes, with room for the map). */
export const MAX_REQUEST_BYTES = 8192;

/** The terminal id a request topic names, or undefined for any other topic. */
export function terminalOfTopic(topic: string): string | undefined {
  const m = TERMINAL_TOPIC_RE.exec(topic);
  return m && !/^\.+$/.test(m[1]!) ? m[1] : undefined;
}

/** `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (user and password allowed, never printed). */
export function checkBrokerUrl(url: string): URL {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    // refused below
  }
  if (!u || (u.protocol !== 'mqtt:' && u.protocol !== 'mqtts:') || u.hostname === '' || (u.pathname !== '' && u.pathname !== '/') || u.search !== '' || u.hash !== '') {
    throw new InputError(`--broker must be mqtt://HOST:PORT, mqtts://HOST:PORT or embedded, got ${JSON.stringify(redactUrl(url))}`);
  }
  return u;
}

/**
 * Where a broker's password may come from besides its address: an address on a command line is
 * visible to every user of the machine (ps), the environment is not. Used when the address names
 * a user and no password.
 */
export const BROKER_PASSWORD_ENV = 'QKT_MQTT_PASSWORD';

export interface BrokerConnection {
  client: MqttClient;
  /** 5 (MQTT 5) or 4 (3.1.1: the broker refused 5). */
  version: 4 | 5;
  /** The broker offers shared subscriptions (MQTT 5, not refused in its CONNACK). */
  shared: boolean;
}

const connectOnce = async (url: string, o: IClientOptions, timeoutMs: number): Promise<{ client: MqttClient; properties: Record<string, unknown> | undefined }> => {
  const mqtt = (await import('mqtt')).default;
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { ...o, reconnectPeriod: 0, connectTimeout: timeoutMs });
    const fail = (e: Error) => {
      // Only this function's listeners: the client's own (its 'close' clears its connect timer)
      // stay, or the process would linger until that timer fires after the error is reported.
      client.removeListener('connect', connected);
      client.removeListener('error', fail);
      client.removeListener('close', closed);
      client.on('error', () => undefined);
      client.end(true);
      reject(e);
    };
    const connected = (packet: { properties?: unknown }) => {
      client.removeListener('error', fail);
      client.removeListener('close', closed);
      resolve({ client, properties: packet.properties as Record<string, unknown> | undefined });
    };
    client.once('connect', connected);
    const closed = () => fail(Object.assign(new Error('the connection closed before the broker answered'), { code: 'ECONNRESET' }));
    client.once('error', fail);
    client.once('close', closed);
  });
};

/**
 * Connect to the broker: MQTT 5 first, 3.1.1 when the broker refuses 5 (the embedded aedes). A
 * broker that cannot be reached is a NoDeviceError (exit 3), its address shown without password.
 * After this, the client reconnects by itself (every `reconnectMs`) when the broker goes away.
 */
export async function connectBroker(url: string, o: { clientId?: string; username?: string; password?: string; timeoutMs?: number; reconnectMs?: number } = {}): Promise<BrokerConnection> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const u = checkBrokerUrl(url);
  const password = o.password ?? (u.username !== '' && u.password === '' ? process.env[BROKER_PASSWORD_ENV] : undefined);
  const base: IClientOptions = {
    clean: true,
    keepalive: 30,
    ...(o.clientId ? { clientId: o.clientId } : {}),
    ...(o.username !== undefined ? { username: o.username } : {}),
    ...(password !== undefined ? { password } : {}),
  };
  const shown = redactUrl(url);
  let version: 4 | 5 = 5;
  let r;
  try {
    r = await connectOnce(url, { ...base, protocolVersion: 5, properties: { sessionExpiryInterval: 0 } }, timeoutMs);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    // "Unacceptable protocol version": 1 in a 3.1.1 CONNACK, 132 in a 5 one.
    if (code === 1 || code === 132) {
      version = 4;
      try {
        r = await connectOnce(url, { ...base, protocolVersion: 4 }, timeoutMs);
      } catch (e2) {
        throw brokerError(shown, e2);
      }
    } else throw brokerError(shown, e);
  }
  const client = r.client;
  client.options.reconnectPeriod = o.reconnectMs ?? 1000;
  // Small messages both ways: without TCP_NODELAY, Nagle's wait for the peer's delayed ACK adds
  // about 40 ms to an answer (measured on loopback). Set again on every reconnect.
  const noDelay = () => (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
  noDelay();
  client.on('connect', noDelay);
  // Errors after the connect (a refused reconnect) are the reconnect loop's: not thrown at the process.
  client.on('error', () => undefined);
  return { client, version, shared: version === 5 && r.properties?.['sharedSubscriptionAvailable'] !== false };
}

function brokerError(shown: string, e: unknown): Error {
  const code = (e as { code?: unknown }).code;
  const why = typeof code === 'string' ? code : (e as Error).message;
  // A refused login is not "nothing there" (exit 3): exit 1, as a PostgreSQL login refused.
  if (code === 4 || code === 5 || code === 134 || code === 135) return new Error(`the MQTT broker at ${shown} refused the login (${(e as Error).message})`);
  return new NoDeviceError(shown, `cannot reach the MQTT broker at ${shown}: ${why}`, typeof code === 'string' ? code : undefined);
}

/**
 * Largest MQTT packet the embedded broker takes from a client: an uplink (MAX_REQUEST_BYTES) with
 * its topic and headers, or a CONNECT. aedes's parser has no bound of its own: it would buffer a
 * packet of up to 256 MiB, even before CONNECT (so from anyone), until it is complete.
 */
export const MAX_PACKET_BYTES = MAX_REQUEST_BYTES + 1024;

/**
 * Close `socket` as soon as the bytes read from it (aedes reads them with `read()`, in paused
 * mode) announce an MQTT packet longer than `max`, or a malformed length: checked as the fixed
 * headers go by, before the parser buffers the packet's body.
 */
export function boundPackets(socket: Socket, max: number): void {
  let phase: 'type' | 'length' | 'body' = 'type';
  let length = 0;
  let mult = 1;
  let lengthBytes = 0;
  let left = 0;
  const read = socket.read.bind(socket);
  socket.read = (size?: number) => {
    if (socket.destroyed) return null;
    const buf = read(size) as Buffer | string | null;
    if (!Buffer.isBuffer(buf)) return buf;
    for (let i = 0; i < buf.length; ) {
      if (phase === 'type') {
        phase = 'length';
        length = 0;
        mult = 1;
        lengthBytes = 0;
        i++;
      } else if (phase === 'length') {
        const b = buf[i++]!;
        length += (b & 0x7f) * mult;
        mult *= 128;
        lengthBytes++;
        if (b & 0x80) {
          if (lengthBytes < 4) continue;
          length = Infinity; // a fifth length byte: malformed
        }
        if (length > max) {
          socket.destroy();
          return null;
        }
        left = length;
        phase = left > 0 ? 'body' : 'type';
      } else {
        const n = Math.min(left, buf.length - i);
        left -= n;
        i += n;
        if (left === 0) phase = 'type';
      }
    }
    return buf;
  };
}

/** Subscriptions the embedded broker grants one stranger's connection in its life (the reference client takes one). */
export const MAX_SUBSCRIPTIONS = 16;

/** Where `station run --broker embedded` listens when --listen is not given: MQTT's own port, on loopback. */
export const EMBEDDED_BROKER_PORT = 1883;

/** Connections the embedded broker holds at once (a fleet shard or a worker holds one each). */
export const EMBEDDED_MAX_CONNECTIONS = 1024;

export interface EmbeddedBroker {
  /** `mqtt://HOST:PORT` */
  url: string;
  /** The login of the station's own worker (the one client that may read uplinks and publish answers). */
  stationLogin: { username: string; password: string };
  close(): Promise<void>;
}

/**
 * An MQTT broker in this process (aedes, MQTT 3.1.1) on HOST:PORT, for a station that needs no
 * broker of its own. Its rules, for any client but the station's own worker (who logs in with a
 * random password made here): publish only to `qkt/v1/up/<terminal id>`, subscribe only to one
 * exact answer topic (no wildcards: no one reads another's answers), never as the station's user.
 */
export async function startEmbeddedBroker(host: string, port: number): Promise<EmbeddedBroker> {
  const username = 'qkt-station';
  const password = randomBytes(24).toString('hex');
  const stationClients = new WeakSet<AedesClient>();
  const subscriptions = new WeakMap<AedesClient, number>();
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker({
    authenticate: (client, user, pass, done) => {
      if (user !== username) return done(null, true);
      const ok = pass !== undefined && pass.length === password.length && timingSafeEqual(Buffer.from(pass), Buffer.from(password));
      if (ok) stationClients.add(client);
      done(ok ? null : Object.assign(new Error('bad login'), { returnCode: 4 }), ok);
    },
    authorizePublish: (client, packet, done) => {
      if (client && stationClients.has(client)) return done(packet.topic.startsWith(`${TOPIC_PREFIX}/answer/`) ? null : new Error('topic not allowed'));
      // A stranger's uplink: no retained message (the broker would keep it, one per topic, for
      // ever: memory anyone could fill) and no payload a worker would drop unread anyway.
      if (terminalOfTopic(packet.topic) !== undefined && !packet.retain && packet.payload.length <= MAX_REQUEST_BYTES) return done(null);
      done(new Error('publish not allowed'));
    },
    authorizeSubscribe: (client, sub, done) => {
      if (client && stationClients.has(client)) return done(null, sub.topic === workerTopic(undefined) ? sub : null);
      // A stranger: one exact answer topic, and a few per connection (the broker holds each one:
      // memory a stranger could otherwise fill, a subscription at a time).
      const granted = client ? (subscriptions.get(client) ?? 0) : 0;
      if (client && granted < MAX_SUBSCRIPTIONS && sub.topic.startsWith(`${TOPIC_PREFIX}/answer/`) && TAG_RE.test(sub.topic.slice(TOPIC_PREFIX.length + 8))) {
        subscriptions.set(client, granted + 1);
        return done(null, sub);
      }
      done(null, null); // refused in the SUBACK (0x80); the client stays connected
    },
  });
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true); // as the clients (connectBroker)
    boundPackets(socket, MAX_PACKET_BYTES);
    broker.handle(socket);
  });
  // A fleet shard holds one connection: a stranger opening thousands is turned away at accept.
  server.maxConnections = EMBEDDED_MAX_CONNECTIONS;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await new Promise<void>((r) => broker.close(() => r()));
    throw e;
  }
  const a = server.address() as AddressInfo;
  const shownHost = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `mqtt://${shownHost}:${a.port}`,
    stationLogin: { username, password },
    close: async () => {
      await new Promise<void>((r) => broker.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** What a terminal's traffic needs of its station: `request` (UPLINK only here) and the window. */
export interface StationRequester {
  readonly params: DeviceParams | undefined;
  request(group: number, command: number, payload: Payload, opts?: RequestOptions): Promise<Payload>;
}

interface Pending {
  resolve: (p: Payload) => void;
  reject: (e: Error) => void;
  terminalId: string;
  /** The next resend (undefined once given up). */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Uplinks a terminal keeps in flight over the broker: one. On TLS its connection keeps them in
 * order, but the workers of a shared subscription may open two in flight in either order, and the
 * station burns the keys an authentic message skips (docs/station.md): the earlier one would
 * then be refused. One at a time, and a message sent again after a worker died comes before the
 * next.
 */
export const BROKER_WINDOW = 1;

/**
 * The terminal side: one broker connection for many terminals (a fleet shard), each uplink
 * published with this connection's reply tag and a fresh correlation number, and published
 * again, the same bytes, while no answer came (a worker died with it: the next one answers, the
 * station knows a message it opened before and answers it again, unopened).
 */
export class BrokerStation {
  readonly tag = randomBytes(16).toString('hex');
  private next = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  private constructor(
    private readonly conn: BrokerConnection,
    private readonly resendMs: number,
  ) {
    conn.client.on('message', (topic, payload) => this.onAnswer(topic, payload));
  }

  /** Connect and subscribe to this connection's answer topic. `resendMs`: first resend after it (default 1 s), doubling to 8 s. */
  static async connect(url: string, o: { resendMs?: number; timeoutMs?: number } = {}): Promise<BrokerStation> {
    const conn = await connectBroker(url, o.timeoutMs ? { timeoutMs: o.timeoutMs } : {});
    const s = new BrokerStation(conn, o.resendMs ?? 1000);
    await conn.client.subscribeAsync(answerTopic(s.tag), { qos: 1 });
    return s;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** The requester one terminal's traffic uses. */
  forTerminal(terminalId: string): StationRequester {
    const params: DeviceParams = { versions: [1], maxFrame: 0, window: BROKER_WINDOW, maxChunk: MAX_REQUEST_BYTES - 256, firmware: 'mqtt' };
    return {
      params,
      request: (group, command, payload, opts = {}) => {
        if (group !== Group.STATION || command !== StationCmd.UPLINK) return Promise.reject(new LinkError(Rc.NOT_SUPPORTED, 'only UPLINK goes over the broker'));
        if (payload['t'] !== terminalId) return Promise.reject(new LinkError(Rc.BAD_REQUEST, 'field "t" must be this terminal'));
        return this.uplink(terminalId, payload['m'] as Uint8Array, opts.timeoutMs ?? 30_000);
      },
    };
  }

  private uplink(terminalId: string, m: Uint8Array, timeoutMs: number): Promise<Payload> {
    if (this.closed) return Promise.reject(new LinkError(Rc.BAD_STATE, 'the broker connection is closed'));
    const k = this.next++;
    const body = Buffer.from(encodePayload({ t: terminalId, m, a: this.tag, k }));
    const topic = upTopic(terminalId);
    const started = Date.now();
    return new Promise<Payload>((resolve, reject) => {
      let wait = this.resendMs;
      let attempts = 0;
      const send = (): NodeJS.Timeout | undefined => {
        const left = timeoutMs - (Date.now() - started);
        if (left <= 0) {
          this.pending.delete(k);
          reject(new LinkTimeoutError(Group.STATION, StationCmd.UPLINK, timeoutMs, attempts, 'no answer over the MQTT broker'));
          return undefined;
        }
        // QoS 1 to the broker; the answer is the end-to-end acknowledgement.
        attempts++;
        this.conn.client.publish(topic, body, { qos: 1 }, () => undefined);
        const timer = setTimeout(() => {
          const p = this.pending.get(k);
          if (p) p.timer = send();
        }, Math.min(wait, left));
        wait = Math.min(wait * 2, 8000);
        return timer;
      };
      const timer = send();
      if (timer) this.pending.set(k, { resolve, reject, terminalId, timer });
    });
  }

  private onAnswer(topic: string, payload: Buffer): void {
    if (topic !== answerTopic(this.tag) || payload.length > 1024) return;
    const p = decodePayload(payload);
    const k = p?.['k'];
    if (typeof k !== 'number') return;
    const w = this.pending.get(k);
    // An answer for another terminal than asked, or to a request long given up: a stray.
    if (!w || p!['t'] !== w.terminalId) return;
    this.pending.delete(k);
    clearTimeout(w.timer);
    const rc = p!['rc'];
    if (rc === Rc.OK) {
      const { k: _k, t: _t, rc: _rc, ...answer } = p!;
      w.resolve(answer);
    } else w.reject(new LinkError(typeof rc === 'number' ? rc : Rc.INTERNAL, typeof p!['r'] === 'string' ? p!['r'] : undefined));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.pending.values()) {
      clearTimeout(w.timer);
      w.reject(new LinkError(Rc.BAD_STATE, 'the broker connection closed'));
    }
    this.pending.clear();
    await this.conn.client.endAsync(true).catch(() => undefined);
  }
}
