// Regression (second outside review of the FEC change): the bulk sender's slow start (one chunk
// until the device has taken one) turns the loss of the FIRST chunk, or of its answer, into a full
// answer timeout: nothing else is in flight to draw an OUT_OF_ORDER or a later acknowledgement.
// With the client's defaults (base 1 s, 115200 baud) an 8 KiB first chunk lost costs ~2.5 s; the
// second chunk lost costs ~20 ms. On a 0.001% line an 8 KiB chunk and its answer are lost about 1
// time in 8, and every sendBulk (each resume of an inject too) starts again at one chunk.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { createInProcessPair } from '../transports/inproc.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkClient } from './client.js';
import { sendBulk } from './bulk-sender.js';
import { DiagCmd, Group } from '../../firmware/link/groups.js';

async function bulkLosing(dir: 'chunk' | 'answer', start: number) {
  const [host, device] = createInProcessPair({ names: ['host', 'module'] });
  let armed = false;
  let dropped = false;
  const dropOnce = (b: Uint8Array, min: number) => armed && !dropped && b.length >= min && (dropped = true);
  const h: Transport = {
    description: 'host',
    write: (b) => (dir === 'chunk' && dropOnce(b, 1000) ? Promise.resolve() : host.write(b)),
    onData: (l) => host.onData(l),
    onClose: (l) => host.onClose(l),
    close: () => host.close(),
  };
  const d: Transport = {
    description: 'module',
    write: (b) => (dir === 'answer' && dropOnce(b, 0) ? Promise.resolve() : device.write(b)),
    onData: (l) => device.onData(l),
    onClose: (l) => device.onClose(l),
    close: () => device.close(),
  };
  createTerminal({ transport: d });
  const client = new LinkClient(h);
  const params = await client.negotiate();
  const data = new Uint8Array(randomBytes(256 * 1024));
  const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'] as number;
  if (start > 0) await client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o: 0, d: data.subarray(0, start) });
  armed = true;
  const t0 = performance.now();
  await sendBulk({
    total: data.length,
    startOffset: start,
    chunkSize: params.maxChunk,
    window: params.window,
    read: (o, n) => data.subarray(o, o + n),
    sendChunk: (o, dd, timeoutMs) => client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d: dd }, { expectBytes: 16, retries: 0, ...(timeoutMs ? { timeoutMs } : {}) }),
    queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    chunkCap: () => client.bestChunk(params.maxChunk, 30),
    onLoss: () => client.lineLost(),
  });
  const ms = performance.now() - t0;
  const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
  await client.close();
  return { ms, whole: st['crc'] === crc32(data) };
}

for (const [dir, start] of [['chunk', 0], ['answer', 0], ['chunk', 8192]] as const) {
  // Known and left open (issue 11 note): the first answer is timed by the request layer's
  // timeout, 1 s + the line time; without slow start the same loss cost a window of chunks sent
  // again, about as long on a 115200-baud line. A wall-clock bound, so a todo, not a gate.
  t.test(`the first ${dir} of a bulk (from offset ${start}) lost: no full answer timeout`, { todo: 'slow start waits out the first answer timeout when the first chunk or its answer is lost' }, async (t) => {
    const r = await bulkLosing(dir, start);
    t.ok(r.whole, 'the module holds the bytes sent');
    t.ok(r.ms < 1000, `256 KiB over a clean in-process cable with the first ${dir} lost: ${r.ms.toFixed(0)} ms (bound 1000; the second lost: ~20 ms)`);
  });
}
