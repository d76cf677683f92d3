// Incremental redundancy end to end (docs/protocol.md 2.6): a host and a module over an
// in-process line paced at 460800 baud with the noise of `qkt link --noise` both ways. Chunks go
// as a prefix of shards for the line's mean loss; the module asks for the rest with NEEDs and the
// host answers; the transfer lands whole and exactly once. A host that does not answer NEEDs
// still lands (by go-back), and after its first loss sends whole plans.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { createInProcessPair } from '../transports/inproc.js';
import { ByteNoise, backSeed } from '../transports/cable.js';
import type { DirectionStats } from '../transports/cable.js';
import { paced } from '../transports/pacing.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkClient } from './client.js';
import { sendBulk } from './bulk-sender.js';
import { DiagCmd, Group } from '../../firmware/link/groups.js';

function noisy(inner: Transport, rate: number, seed: number): Transport {
  const st: DirectionStats = { bytesIn: 0, bytesOut: 0, corrupted: 0, dropped: 0, inserted: 0 };
  const noise = new ByteNoise(rate, seed, st);
  return {
    description: `${inner.description} (noise ${rate})`,
    write: (b) => inner.write(noise.apply(b)),
    onData: (l) => inner.onData(l),
    onClose: (l) => inner.onClose(l),
    close: () => inner.close(),
  };
}

const BAUD = 460_800;

async function transfer(rate: number, seed: number, harq: boolean, bytes: number) {
  const [host, device] = createInProcessPair({ names: ['host', 'module'] });
  const terminal = createTerminal({ transport: paced(noisy(device, rate, backSeed(seed)), { baud: BAUD, receive: false }) });
  const client = new LinkClient(paced(noisy(host, rate, seed), { baud: BAUD, receive: false }), { baud: BAUD, baseTimeoutMs: 400, fec: 'on', harq });
  const params = await client.negotiate();
  const data = new Uint8Array(bytes).map((_, i) => (i * 131 + (i >>> 8)) & 0xff);
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
    lineMsPerByte: client.lineMsPerByte,
  });
  const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
  await client.close();
  return { res, st, data, client, terminal };
}

t.test('0.1% noise: chunks go with NEED rounds, the module asks, the host answers, the bytes land whole once', async (t) => {
  const { res, st, data, client, terminal } = await transfer(0.001, 5, true, 160 * 1024);
  t.equal(res.committed, data.length);
  t.equal(st['c'], data.length, 'the module holds exactly the bytes sent, no more');
  t.equal(st['crc'], crc32(data), 'and they are the bytes sent');
  const r = client.repairStats;
  t.equal(r.harq, 'yes', 'the module asked for shards');
  t.ok(r.harqFrames > 0, `${r.harqFrames} frames sent with NEED rounds`);
  t.ok(r.answered > 0 && r.shards > 0, `${r.answered} NEEDs answered with ${r.shards} shards`);
  t.ok(r.answered <= 2 * r.harqFrames + 16, 'at most 2 rounds a frame');
  t.ok((terminal.link.stats as { corrupt: number }).corrupt > 0, 'the line did damage shards');
});

t.test('a host that does not answer NEEDs (harq off) still lands the transfer whole', async (t) => {
  const { res, st, data, client } = await transfer(0.001, 6, false, 64 * 1024);
  t.equal(res.committed, data.length);
  t.equal(st['crc'], crc32(data));
  t.equal(client.repairStats.harqFrames, 0, 'whole plans only');
  t.equal(client.repairStats.answered, 0);
});
