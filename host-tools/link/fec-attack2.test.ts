// Regression (second outside review of the FEC change): the fix for stray shards (7b803da, 76bb23b)
// counts an unfinished frame in the line estimate when "half its k shards" arrived whole. A
// stranger's frame that claims k = 2 and n = 255 needs ONE shard for that: one whole shard with
// index 254 is then counted as 255 sent, 1 arrived, when 8 newer frame ids push it out. 16 such
// shards (224 line bytes) put the module's estimate at about 0.24 hits per byte, and every small
// answer to a genuine host using shards is planned as 255 shards (about 3,500 line bytes).
import t from 'tap';
import { crc32 } from 'node:zlib';
import { SHARD_MARK, ShardCollector, encodeShards, frameAsShards, planShards } from '../../firmware/link/fec.js';
import { createInProcessPair } from '../transports/inproc.js';
import { createTerminal } from '../../firmware/terminal.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { DiagCmd, Group } from '../../firmware/link/groups.js';
import { cobsEncodeInto, cobsMaxEncodedLength } from '../../firmware/link/cobs.js';

function shard(id: number, k: number, n: number, i: number, s: number): Uint8Array {
  const b = new Uint8Array(6 + s + 2);
  b.set([SHARD_MARK, id, k, n, i, 0]);
  for (let x = 0; x < s; x++) b[6 + x] = (i * 31 + x * 7 + 1) & 0xff;
  const c = crc32(b.subarray(0, 6 + s)) & 0xffff;
  b[6 + s] = c >>> 8;
  b[7 + s] = c & 0xff;
  return b;
}

function onWire(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(cobsMaxEncodedLength(body.length) + 2);
  const n = cobsEncodeInto(body, out.subarray(1));
  return out.subarray(0, n + 2);
}

t.test('stray one-shard frames claiming k = 2 do not make the receiver believe the line is at its worst', async (t) => {
  const col = new ShardCollector(8256);
  for (let f = 0; f < 100; f++) {
    const body = new Uint8Array(64).map((_, i) => (i * 13 + f) & 0xff);
    new DataView(body.buffer).setUint32(60, crc32(body.subarray(0, 60)), false);
    for (const sh of encodeShards(body, 100 + f, planShards(64, 0.005)!)) col.push(sh);
  }
  t.ok(col.line.lambda < 0.005, `estimate after 100 clean frames: ${col.line.lambda.toFixed(4)}`);
  for (let id = 0; id < 16; id++) col.push(shard(id, 2, 255, 254, 4));
  t.ok(col.line.lambda < 0.05, `estimate after 16 stray k = 2 shards: ${col.line.lambda.toFixed(3)} hits per byte (bound 0.05)`);
  t.ok(col.sendLambda(40) < 0.1, `small answers planned for ${col.sendLambda(40).toFixed(3)} hits per byte`);
});

t.test('the module: 224 bytes of stray shards do not make its answers to a genuine host 255 shards', async (t) => {
  const [host, device] = createInProcessPair();
  createTerminal({ transport: device });
  const got: Uint8Array[] = [];
  host.onData((b) => got.push(b));
  const echo = (seq: number, id: number) => {
    const f = encodeMessage({ kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.ECHO, seq, payload: { d: new Uint8Array(8) } });
    return frameAsShards(f, id, planShards(f.length - 2, 0.001)!);
  };
  // A genuine host on a clean line, in shards: 20 echoes to settle the module's estimate.
  for (let i = 0; i < 20; i++) {
    await host.write(echo(i + 1, 100 + i));
    await new Promise((r) => setTimeout(r, 5));
  }
  got.splice(0);
  await host.write(echo(50, 150));
  await new Promise((r) => setTimeout(r, 20));
  const before = got.splice(0).reduce((n, b) => n + b.length, 0);
  // The stranger: 16 shards of 14 line bytes.
  let sent = 0;
  for (let id = 0; id < 16; id++) {
    const w = onWire(shard(id, 2, 255, 254, 4));
    sent += w.length;
    await host.write(w);
  }
  await new Promise((r) => setTimeout(r, 20));
  got.splice(0);
  await host.write(echo(51, 151));
  await new Promise((r) => setTimeout(r, 50));
  const after = got.splice(0).reduce((n, b) => n + b.length, 0);
  t.ok(after < 4 * before, `an 8-byte ECHO answer: ${before} line bytes before, ${after} after ${sent} bytes of stray shards (bound 4x)`);
  await host.close();
});
