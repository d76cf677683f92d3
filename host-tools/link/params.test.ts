// A device's PARAMS limits are checked before use: a window of 0, a chunk larger than the frame,
// a frame past what the host accepts, a fraction or a missing field is a PeerDataError (exit 4),
// not an internal error or a transfer that retries for minutes.
import t from 'tap';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from './client.js';
import { PeerDataError } from './errors.js';
import { Deframer } from '../../firmware/link/framer.js';
import { decodeMessage, encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import type { Payload } from '../../firmware/link/codec.js';

/** A device that answers every PARAMS with `reply`. */
async function negotiateWith(reply: Payload): Promise<unknown> {
  const [host, device] = createInProcessPair({ names: ['host', 'device'] });
  const d = new Deframer(65536);
  device.onData((chunk) => {
    for (const body of d.push(chunk)) {
      const m = decodeMessage(body);
      if (m.ok) void device.write(encodeMessage({ kind: Kind.RESPONSE, group: m.message.group, command: m.message.command, seq: m.message.seq, payload: reply }));
    }
  });
  const client = new LinkClient(host, { baseTimeoutMs: 500 });
  try {
    return await client.negotiate();
  } catch (e) {
    return e;
  } finally {
    await client.close();
    await device.close();
  }
}

const good = { versions: [1], maxFrame: 8256, window: 4, maxChunk: 8206, firmware: 'x' };

t.test('sane limits are taken', async (t) => {
  t.match(await negotiateWith(good), { maxChunk: 8206, window: 4 });
});

for (const [what, bad] of [
  ['window 0', { window: 0 }],
  ['maxChunk 0', { maxChunk: 0 }],
  ['maxChunk past maxFrame', { maxChunk: 9000 }],
  ['maxFrame past the host', { maxFrame: 2 ** 40, maxChunk: 2 ** 39 }],
  ['a fractional window', { window: 1.5 }],
  ['a text maxChunk', { maxChunk: '8206' }],
  ['no maxFrame', { maxFrame: undefined }],
] as const) {
  t.test(`${what} is a PeerDataError`, async (t) => {
    const e = await negotiateWith(JSON.parse(JSON.stringify({ ...good, ...bad })) as Payload);
    t.type(e, PeerDataError);
    t.match((e as Error).message, /the device's parameters are unusable: \w+ .* is not a whole number from \d+ to \d+/);
  });
}

t.test('a request persists while the device is heard (here: stray answers), and fails after 3 attempts where nothing answers', async (t) => {
  const [host, device] = createInProcessPair({ names: ['host', 'device'] });
  const d = new Deframer(65536);
  let seen = 0;
  device.onData((chunk) => {
    for (const body of d.push(chunk)) {
      const m = decodeMessage(body);
      if (!m.ok) continue;
      // The first 5 copies get a stray answer (another seq), as when the real one is garbled; the 6th the answer.
      const seq = ++seen <= 5 ? (m.message.seq + 1) & 0xffff : m.message.seq;
      void device.write(encodeMessage({ kind: Kind.RESPONSE, group: m.message.group, command: m.message.command, seq, payload: good }));
    }
  });
  const client = new LinkClient(host, { baseTimeoutMs: 30 });
  t.match(await client.negotiate(), { maxChunk: 8206 });
  t.equal(seen, 6, 'answered at the 6th attempt, past the usual 3');
  await client.close();
  await device.close();

  const [host2, silent] = createInProcessPair({ names: ['host', 'device'] });
  let copies = 0;
  const d2 = new Deframer(65536);
  silent.onData((chunk) => (copies += d2.push(chunk).length));
  const c2 = new LinkClient(host2, { baseTimeoutMs: 30 });
  await t.rejects(c2.negotiate(), { name: 'LinkTimeoutError' });
  t.equal(copies, 3, 'a silent port: the usual 3 attempts');
  await c2.close();
  await silent.close();
});
