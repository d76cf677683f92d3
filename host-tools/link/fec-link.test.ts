// FEC shards end to end (docs/protocol.md 2.6): host and module over an in-process cable with the
// noise of `qkt link --noise` (per byte: a bit flipped at R, dropped at R/2, garbage inserted at
// R/10), both ways. The handshake and requests get through at 5% only as shards; a clean line
// never switches; a bulk transfer lands whole at 1%; the module answers in the request's framing.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { createInProcessPair } from '../transports/inproc.js';
import { ByteNoise, backSeed } from '../transports/cable.js';
import type { DirectionStats } from '../transports/cable.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkClient } from './client.js';
import { LinkTimeoutError } from './errors.js';
import { sendBulk } from './bulk-sender.js';
import { DiagCmd, Group, SystemCmd } from '../../firmware/link/groups.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { frameAsShards, planShards, SHARD_MARK } from '../../firmware/link/fec.js';
import { cobsDecode } from '../../firmware/link/cobs.js';

const stats = (): DirectionStats => ({ bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 });

/** `inner` with every write passed through seeded byte noise first. */
function noisy(inner: Transport, rate: number, seed: number): Transport & { noise: DirectionStats } {
  const st = stats();
  const noise = new ByteNoise(rate, seed, st);
  return {
    description: `${inner.description} (noise ${rate})`,
    write: (b) => inner.write(noise.apply(b)),
    onData: (l) => inner.onData(l),
    onClose: (l) => inner.onClose(l),
    close: () => inner.close(),
    noise: st,
  };
}

function rig(rate: number, seed: number, fec: 'auto' | 'off' = 'auto') {
  const [host, device] = createInProcessPair({ names: ['host', 'module'] });
  const terminal = createTerminal({ transport: noisy(device, rate, backSeed(seed)) });
  const client = new LinkClient(noisy(host, rate, seed), { baseTimeoutMs: 150, fec });
  return { terminal, client };
}

t.test('5% noise: plain frames never get a PARAMS through; shards do, and requests after it', async (t) => {
  const off = rig(0.05, 3, 'off');
  await t.rejects(off.client.negotiate(), LinkTimeoutError, 'fec off: no session');
  t.equal(off.client.shards, false);
  await off.client.close();

  const on = rig(0.05, 3);
  const params = await on.client.negotiate();
  t.equal(params.versions[0], 1);
  t.equal(on.client.shards, true, 'the host went to shards');
  t.ok(on.client.shardStats.framesDecoded >= 1, 'the answer came as shards');
  for (let i = 0; i < 10; i++) {
    const d = new Uint8Array(randomBytes(120));
    const p = await on.client.request(Group.DIAG, DiagCmd.ECHO, { d });
    t.same(p['d'], d, `echo ${i} whole`);
  }
  t.ok(on.client.shardStats.badShards > 0, `damaged shards seen and dropped: ${on.client.shardStats.badShards}`);
  await on.client.close();
});

t.test('a clean line stays plain: no shard is sent or received', async (t) => {
  const { client, terminal } = rig(0, 1);
  await client.negotiate();
  for (let i = 0; i < 5; i++) await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.equal(client.shards, false);
  t.equal(client.shardStats.shards, 0);
  t.equal(terminal.link.stats.corrupt, 0);
  await client.close();
});

t.test('1% noise: a 64 KiB bulk transfer lands whole, with chunks sized for the shards', async (t) => {
  const { client } = rig(0.01, 7);
  const params = await client.negotiate();
  const data = new Uint8Array(randomBytes(64 * 1024));
  const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'] as number;
  const res = await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: params.maxChunk,
    window: params.window,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: (o, d, timeoutMs) => client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d }, { expectBytes: 16, retries: 0, ...(timeoutMs ? { timeoutMs } : {}) }),
    queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    chunkCap: () => client.bestChunk(params.maxChunk, 30),
    onLoss: () => client.lineLost(),
  });
  const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
  t.equal(res.committed, data.length);
  t.equal(st['crc'], crc32(data), 'the module holds the bytes sent');
  t.equal(client.shards, true);
  t.ok(res.smallestChunk < params.maxChunk, `chunks sized to the line: smallest ${res.smallestChunk}`);
  await client.close();
});

t.test('the module answers in the framing of the request: shards for shards, plain for plain', async (t) => {
  const [host, device] = createInProcessPair();
  createTerminal({ transport: device });
  const got: Uint8Array[] = [];
  host.onData((b) => got.push(b));
  const req = (seq: number) => encodeMessage({ kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.ECHO, seq, payload: { d: new Uint8Array(10) } });
  await host.write(req(1));
  await new Promise((r) => setTimeout(r, 20));
  const plain = Buffer.concat(got.splice(0));
  t.equal(cobsDecode(plain.subarray(1, plain.length - 1))![0], 1, 'plain answer to a plain request');
  const frame = req(2);
  await host.write(frameAsShards(frame, 9, planShards(frame.length, 0.01)!));
  await new Promise((r) => setTimeout(r, 20));
  const sharded = Buffer.concat(got.splice(0));
  const first = sharded.subarray(1, sharded.indexOf(0, 1));
  t.equal(cobsDecode(first)![0], SHARD_MARK, 'shards answer shards');
  await host.close();
});

t.test('a loss on a clean line (a stall, not noise) costs shards only until the module has seen the line is clean', async (t) => {
  const { client, terminal } = rig(0, 5);
  const params = await client.negotiate();
  client.lineLost(); // as after a timeout while the module was busy
  t.equal(client.shards, true);
  const data = new Uint8Array(randomBytes(2 * 1024 * 1024));
  const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'] as number;
  let plainAgainAt: number | undefined;
  await sendBulk({
    total: data.length,
    startOffset: 0,
    chunkSize: params.maxChunk,
    window: params.window,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: (o, d) => {
      if (plainAgainAt === undefined && !client.shards) plainAgainAt = o;
      return client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d }, { expectBytes: 16, retries: 0 });
    },
    queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    chunkCap: () => client.bestChunk(params.maxChunk, 30),
    onLoss: () => client.lineLost(),
  });
  t.equal(client.shards, false, 'plain frames again');
  t.ok(plainAgainAt !== undefined && plainAgainAt < data.length / 2, `plain again after ${plainAgainAt} of ${data.length} bytes`);
  t.equal(terminal.link.stats.corrupt, 0, 'nothing damaged on the way');
  // The next loss brings shards back, and they stay until the device reports again.
  client.lineLost();
  await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.equal(client.shards, true, 'shards again after a new loss: the old clean report does not end them');
  await client.close();
});
