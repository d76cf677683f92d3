// The shaped link end to end on 127.0.0.1: the TCP relay with an echo server behind it (bytes intact
// both ways, throughput held to the rate, close passed on both ways), mutual TLS 1.3 through it, and
// the in-process shaped pair with TLS over its Duplex ends. No wall-clock limit is asserted: only a
// lower bound on transfer time (the rate is not exceeded), as a ratio.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCa, issueServerCert, issueSaeCert, readServerTls } from '../kmd/pki.js';
import { connectTls, listenTls } from './tls.js';
import { startShapedRelay, connectionSeed } from './shaped-relay.js';
import { createShapedPair } from './shaped-duplex.js';
import { ShapedChannel } from './shaped-channel.js';
import type { TimerClock } from './shaped-channel.js';

async function listen(onSocket: (s: net.Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true }, onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** Read everything until the peer's FIN (by events: a for-await loop would destroy the socket at the end, killing a half-close). */
const readAll = (s: net.Socket | tls.TLSSocket): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });

t.test('relay: an echo through it gets every byte back, in order, both ways shaped', async (t) => {
  const echo = await listen((s) => s.pipe(s));
  t.teardown(() => echo.close());
  const relay = await startShapedRelay({
    listen: '127.0.0.1:0',
    target: `127.0.0.1:${echo.port}`,
    up: { rate: 2_000_000, latencyMs: 2, jitterMs: 1, loss: 0.02, seed: 5 },
    down: { rate: 2_000_000, latencyMs: 2, jitterMs: 1, loss: 0.02 },
  });
  t.teardown(() => relay.close());
  const data = randomBytes(48 * 1024);
  const c = net.connect({ host: '127.0.0.1', port: relay.address.port, allowHalfOpen: true });
  c.on('error', () => undefined);
  await once(c, 'connect');
  const back = readAll(c);
  for (let i = 0; i < data.length; i += 1000) c.write(data.subarray(i, i + 1000)); // many small writes
  c.end();
  const got = await back;
  t.equal(got.length, data.length);
  t.ok(got.equals(data), 'bytes intact after two shaped directions with loss');
  const st = relay.stats;
  t.equal(st.connections, 1);
  t.equal(st.up.bytesIn, data.length);
  t.equal(st.up.bytesOut, data.length);
  t.equal(st.down.bytesOut, data.length);
  t.ok(st.up.segments >= Math.ceil(data.length / 536), `segments ${st.up.segments}`);
  t.ok(st.up.lostSegments + st.down.lostSegments > 0, 'at 2% some were lost (and resent)');
  t.equal(st.up.retransmissions >= st.up.lostSegments, true);
});

t.test('relay: throughput is not above the rate (ratio over a few KB)', async (t) => {
  let received = 0;
  let lastAt = 0;
  const done = new Promise<void>((resolve) => {
    void listen((s) => {
      s.on('data', (c: Buffer) => {
        received += c.length;
        lastAt = performance.now();
      });
      s.on('end', () => {
        s.end();
        resolve();
      });
    }).then((sink) => {
      t.teardown(() => sink.close());
      start(sink.port);
    });
  });
  const rate = 256_000;
  const n = 12 * 1024;
  let startedAt = 0;
  const start = (port: number) =>
    void (async () => {
      const relay = await startShapedRelay({ listen: '127.0.0.1:0', target: `127.0.0.1:${port}`, up: { rate }, down: { rate } });
      t.teardown(() => relay.close());
      const c = net.connect({ host: '127.0.0.1', port: relay.address.port });
      c.on('error', () => undefined);
      await once(c, 'connect');
      startedAt = performance.now();
      c.end(Buffer.alloc(n, 7));
    })();
  await done;
  t.equal(received, n);
  const segments = Math.ceil(n / 536);
  const wireSeconds = ((n + segments * 40) * 8) / rate;
  const seconds = (lastAt - startedAt) / 1000;
  const ratio = wireSeconds / seconds; // achieved rate (with headers) over the rate
  t.ok(ratio <= 1.05, `achieved ${(ratio * 100).toFixed(1)}% of ${rate} bit/s (${seconds.toFixed(3)} s for ${wireSeconds.toFixed(3)} s of wire time)`);
});

t.test('relay: a FIN is passed on both ways, after the data; a reset resets the other side', async (t) => {
  const waiting: ((s: net.Socket) => void)[] = [];
  const arrived: net.Socket[] = [];
  const target = await listen((s) => (waiting.shift() ?? ((x: net.Socket) => void arrived.push(x)))(s));
  t.teardown(() => target.close());
  const accepted = () => new Promise<net.Socket>((r) => (arrived.length ? r(arrived.shift()!) : waiting.push(r)));
  const relay = await startShapedRelay({ listen: '127.0.0.1:0', target: `127.0.0.1:${target.port}`, up: { rate: 1_000_000, latencyMs: 5 }, down: { rate: 1_000_000, latencyMs: 5 } });
  t.teardown(() => relay.close());
  const c = net.connect({ host: '127.0.0.1', port: relay.address.port, allowHalfOpen: true });
  const serverSide = await accepted();
  const atServer = readAll(serverSide);
  c.end('from client');
  t.equal((await atServer).toString(), 'from client', 'client -> server bytes, then its FIN');
  const atClient = readAll(c);
  serverSide.end('and back'); // half-close: the server may still send after the client's FIN
  t.equal((await atClient).toString(), 'and back', 'server -> client bytes, then its FIN');
  if (!c.destroyed) await once(c, 'close');
  while (relay.stats.open > 0) await new Promise((r) => setTimeout(r, 5));
  t.match(relay.stats, { connections: 1, open: 0, up: { bytesOut: 11 }, down: { bytesOut: 8 } });

  // A reset from the client resets the server's socket at once (no FIN, nothing delivered late).
  const c2 = net.connect({ host: '127.0.0.1', port: relay.address.port });
  c2.on('error', () => undefined);
  const s2 = await accepted();
  s2.on('error', () => undefined);
  const s2closed = new Promise((r) => s2.once('close', r));
  c2.resetAndDestroy();
  await s2closed;
  t.ok(s2.destroyed, 'the server side went too');
});

t.test('relay: mutual TLS 1.3 through a shaped, lossy link', async (t) => {
  const dir = join(t.testdir({}), 'pki');
  await createCa(dir);
  await issueServerCert(dir, ['127.0.0.1']);
  const c = await issueSaeCert(dir, 'client1');
  const server = readServerTls(dir);
  const received: Uint8Array[] = [];
  const listener = await listenTls('127.0.0.1', 0, server, (tr) => {
    tr.onData((d) => {
      received.push(d);
      void tr.write(d); // echo
    });
  });
  t.teardown(() => listener.close());
  const relay = await startShapedRelay({
    listen: '127.0.0.1:0',
    target: `127.0.0.1:${listener.address.port}`,
    up: { rate: 64_000, latencyMs: 10, jitterMs: 3, loss: 0.01, seed: 9 },
    down: { rate: 64_000, latencyMs: 10, jitterMs: 3, loss: 0.01 },
  });
  t.teardown(() => relay.close());
  const client = await connectTls('127.0.0.1', relay.address.port, { caCertPem: server.caCertPem, certPem: readFileSync(c.certPath, 'utf8'), keyPem: readFileSync(c.keyPath, 'utf8'), servername: '127.0.0.1' });
  const msg = randomBytes(2000);
  const echoed: Uint8Array[] = [];
  let total = 0;
  const all = new Promise<void>((r) =>
    client.onData((d) => {
      echoed.push(d);
      total += d.length;
      if (total >= msg.length) r();
    }),
  );
  await client.write(msg);
  await all;
  t.ok(Buffer.concat(echoed).equals(msg), 'the TLS records came through whole: decrypted and echoed');
  await client.close();
  t.ok(relay.stats.up.bytesIn > msg.length, 'handshake and records counted');
});

t.test('in-process shaped pair: TLS over its Duplex ends, FIN both ways, stats', async (t) => {
  const dir = join(t.testdir({}), 'pki');
  await createCa(dir);
  await issueServerCert(dir, ['127.0.0.1']);
  const server = readServerTls(dir);
  const pair = createShapedPair({ up: { rate: 512_000, latencyMs: 3, loss: 0.02, seed: 3 }, down: { rate: 512_000, latencyMs: 3 } });
  const s = new tls.TLSSocket(pair.b, { isServer: true, cert: server.certPem, key: server.keyPem, minVersion: 'TLSv1.3' });
  const c = tls.connect({ socket: pair.a, ca: server.caCertPem, servername: '127.0.0.1', minVersion: 'TLSv1.3' });
  await once(c, 'secureConnect');
  const data = randomBytes(20_000);
  s.on('data', (d: Buffer) => s.write(d)); // echo
  const back: Buffer[] = [];
  let n = 0;
  const echoed = new Promise<void>((r) => c.on('data', (d: Buffer) => (back.push(d), (n += d.length) >= data.length && r())));
  c.write(data);
  await echoed;
  t.ok(Buffer.concat(back).equals(data), 'decrypted whole at the server and echoed back whole');
  const serverEnded = new Promise((r) => s.once('end', r));
  c.end();
  await serverEnded;
  t.pass("the client's end reached the server after its data");
  t.ok(pair.stats.up.bytesOut > data.length);
  t.equal(pair.stats.up.pendingBytes, 0);
});

t.test('in-process pair: a writer is held while its direction holds more than the bound; destroy resets the peer', async (t) => {
  const pair = createShapedPair({ up: { rate: 80_000 }, down: { rate: 80_000 }, highWaterBytes: 2048 });
  let acked = 0;
  pair.a.write(Buffer.alloc(1000), () => acked++);
  pair.a.write(Buffer.alloc(1500), () => acked++); // 2500 pending > 2048: this callback waits
  await new Promise((r) => setImmediate(r));
  t.equal(acked, 1, 'second write held');
  pair.b.resume();
  await new Promise<void>((r) => {
    const iv = setInterval(() => acked === 2 && (clearInterval(iv), r()), 5);
  });
  t.ok(pair.stats.up.pendingBytes <= 2048, 'released once the link delivered enough');
  const closed = once(pair.b, 'close');
  pair.a.destroy();
  await closed;
  t.ok(pair.b.destroyed, 'peer destroyed');
});

t.test('ShapedChannel on an injected clock: timers at the scheduled times, FIN after the data', async (t) => {
  let now = 0;
  const timers: { at: number; fn: () => void; live: boolean }[] = [];
  const clock: TimerClock = {
    now: () => now,
    setTimer: (fn, ms) => {
      const tm = { at: now + ms, fn, live: true };
      timers.push(tm);
      return () => void (tm.live = false);
    },
  };
  const run = () => {
    for (;;) {
      const next = timers.filter((x) => x.live).sort((a, b) => a.at - b.at)[0];
      if (!next) return;
      next.live = false;
      now = Math.max(now, next.at);
      next.fn();
    }
  };
  const got: [number, number][] = [];
  let endedAt = -1;
  const ch = new ShapedChannel({ shape: { rate: 8000, overheadBytes: 0, latencyMs: 10 }, clock, onData: (b) => got.push([now, b.length]) });
  ch.write(new Uint8Array(100)); // 1 byte/ms: wire 0..100, + 10
  ch.end(() => (endedAt = now));
  run();
  t.same(got, [[110, 100]]);
  t.equal(endedAt, 110);
});

t.test('connection seeds: per connection and direction, from the one seed', async (t) => {
  t.equal(connectionSeed(7, 0, 'up'), 7);
  t.not(connectionSeed(7, 1, 'up'), connectionSeed(7, 0, 'up'));
  t.not(connectionSeed(7, 0, 'down'), connectionSeed(7, 0, 'up'));
  t.equal(connectionSeed(7, 3, 'down'), connectionSeed(7, 3, 'down'));
});
