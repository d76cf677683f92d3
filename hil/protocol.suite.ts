// The link protocol as one suite, written once and run against every transport (in-process,
// mock serial binding, pty pair, TCP, ...): a host LinkClient talking to an emulated terminal.
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { LinkClient } from '../host-tools/link/client.js';
import { sendBulk } from '../host-tools/link/bulk-sender.js';
import { createTerminal } from '../firmware/terminal.js';
import type { Terminal } from '../firmware/terminal.js';
import { encodeFrame, Kind } from '../firmware/link/frame.js';
import { decodeMessage, encodeMessage } from '../firmware/link/codec.js';
import { Deframer } from '../firmware/link/framer.js';
import { DiagCmd, Group, SystemCmd } from '../firmware/link/groups.js';
import { LinkError, Rc, rcName } from '../firmware/link/errors.js';
import type { Transport } from '../firmware/link/transport.js';

export interface LinkPair {
  /** The host's end. */
  host: Transport;
  /** The device's end. */
  device: Transport;
  cleanup?: () => Promise<void>;
}

export interface ProtocolSuiteOptions {
  /** Bytes for the bulk transfer test. Default 256 KiB. */
  bulkBytes?: number;
}

interface Rig {
  client: LinkClient;
  terminal: Terminal;
  pair: LinkPair;
}

async function withRig(makePair: () => Promise<LinkPair>, fn: (r: Rig) => Promise<void>): Promise<void> {
  const pair = await makePair();
  const terminal = createTerminal({ transport: pair.device });
  const client = new LinkClient(pair.host, { baseTimeoutMs: 3000 });
  try {
    await fn({ client, terminal, pair });
  } finally {
    await client.close().catch(() => undefined);
    await pair.device.close().catch(() => undefined);
    await pair.cleanup?.();
  }
}

/**
 * Send raw bytes and wait for the first frame with this seq. Takes the host transport's receiver
 * over from the client, then gives the rig a fresh client on the same transport.
 */
function rawRequest(r: Rig, bytes: Uint8Array, seq: number): Promise<{ kind: number; payload: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to raw seq ${seq}`)), 5000);
    const d = new Deframer(65536);
    r.pair.host.onData((chunk) => {
      for (const body of d.push(chunk)) {
        const m = decodeMessage(body);
        if (m.ok && m.message.seq === seq) {
          clearTimeout(timer);
          r.client = new LinkClient(r.pair.host, { baseTimeoutMs: 3000 });
          resolve({ kind: m.message.kind, payload: m.message.payload });
        }
      }
    });
    r.pair.host.write(bytes).catch(reject);
  });
}

/** Assert that `p` rejects with a LinkError carrying return code `rc`. */
export async function rejectsRc(t: Test, p: Promise<unknown>, rc: number): Promise<void> {
  try {
    await p;
    t.fail(`expected ${rcName(rc)}, got success`);
  } catch (e) {
    t.equal(e instanceof LinkError ? rcName(e.rc) : String(e), rcName(rc));
  }
}

export function protocolSuite(t: Test, makePair: () => Promise<LinkPair>, o: ProtocolSuiteOptions = {}): void {
  const bulkBytes = o.bulkBytes ?? 256 * 1024;

  t.test('negotiates the device parameters', (t) =>
    withRig(makePair, async ({ client, terminal }) => {
      const p = await client.negotiate();
      t.same(p.versions, [1]);
      t.equal(p.maxFrame, terminal.link.limits.maxBody);
      t.equal(p.window, terminal.link.limits.window);
      t.ok(p.maxChunk > 1024 && p.maxChunk < p.maxFrame, 'a chunk fits in a frame');
      t.match(p.firmware, /^qkt-fw /);
    }),
  );

  t.test('status answers with the contract fields', (t) =>
    withRig(makePair, async ({ client }) => {
      const s = await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
      t.hasStrict(s, { enrolled: false, terminalId: null });
      t.match(s['pool'], { storedKeyBits: Number, maxKeyBits: Number, consumedKeyBits: Number, batches: Array });
    }),
  );

  t.test('echo round-trips payloads of every size class up to maxChunk', (t) =>
    withRig(makePair, async ({ client }) => {
      const { maxChunk } = await client.negotiate();
      for (const n of [0, 1, 253, 254, 255, 1000, maxChunk]) {
        const d = randomBytes(n);
        const r = await client.request(Group.DIAG, DiagCmd.ECHO, { d });
        t.equal(Buffer.compare(r['d'] as Uint8Array, d), 0, `${n} bytes`);
      }
      await rejectsRc(t, client.request(Group.DIAG, DiagCmd.ECHO, { d: randomBytes(maxChunk + 1) }), Rc.TOO_LARGE);
    }),
  );

  t.test('unknown group and command answer NOT_SUPPORTED', (t) =>
    withRig(makePair, async ({ client }) => {
      await rejectsRc(t, client.request(99, 0, {}), Rc.NOT_SUPPORTED);
      await rejectsRc(t, client.request(Group.SYSTEM, 200, {}), Rc.NOT_SUPPORTED);
    }),
  );

  t.test('bad payloads and versions get error replies, and the device keeps answering', (t) =>
    withRig(makePair, async (r) => {
      await rejectsRc(t, r.client.request(Group.DIAG, DiagCmd.ECHO, { d: 'not bytes' }), Rc.BAD_REQUEST);
      const notCbor = encodeFrame({ version: 1, kind: Kind.REQUEST, group: 0, command: 1, seq: 0x7001 }, new Uint8Array([0xff, 0xff]));
      const a = await rawRequest(r, notCbor, 0x7001);
      t.equal(a.kind, Kind.ERROR);
      t.equal(a.payload['rc'], Rc.BAD_REQUEST);
      const v9 = encodeMessage({ version: 9, kind: Kind.REQUEST, group: 0, command: 1, seq: 0x7002, payload: {} });
      const b = await rawRequest(r, v9, 0x7002);
      t.equal(b.payload['rc'], Rc.BAD_VERSION);
      t.equal((await r.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['enrolled'], false, 'still answers');
    }),
  );

  t.test('a retried request (same seq) is answered again but executed once', (t) =>
    withRig(makePair, async (r) => {
      const begin = await r.client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: 8 });
      const id = begin['t'] as number;
      const chunk = encodeMessage({ kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.SINK_CHUNK, seq: 0x6000, payload: { t: id, o: 0, d: new Uint8Array([1, 2, 3, 4]) } });
      const first = await rawRequest(r, chunk, 0x6000);
      const again = await rawRequest(r, chunk, 0x6000);
      t.same(first.payload, { c: 4 });
      t.same(again.payload, { c: 4 }, 'same answer');
      t.equal(r.terminal.link.stats.duplicates, 1, 'counted as a duplicate');
    }),
  );

  t.test(`windowed bulk transfer of ${bulkBytes} bytes arrives intact, pipelined`, (t) =>
    withRig(makePair, async ({ client, terminal }) => {
      const { maxChunk, window } = await client.negotiate();
      const data = randomBytes(bulkBytes);
      const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'] as number;
      const progress: number[] = [];
      const res = await sendBulk({
        total: data.length,
        startOffset: 0,
        chunkSize: maxChunk,
        window,
        read: (o, n) => data.subarray(o, o + n),
        sendChunk: (o, d) => client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d }, { expectBytes: 16 }),
        queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
        onProgress: (c) => progress.push(c),
      });
      t.equal(res.committed, data.length);
      t.equal(res.restarts, 0);
      const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
      t.equal(st['crc'], crc32(data), 'device checksum matches');
      t.equal(terminal.link.stats.busy, 0, 'never overran the window');
      t.same(progress, [...progress].sort((a, b) => a - b), 'progress is monotonic');
    }),
  );

  t.test('bulk resumes from the device offset after a go-back', (t) =>
    withRig(makePair, async ({ client }) => {
      const { window } = await client.negotiate();
      const data = randomBytes(64 * 1024);
      const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'] as number;
      // Drop the 3rd chunk once, as line noise would: the device sees a gap and answers OUT_OF_ORDER.
      let dropped = false;
      const res = await sendBulk({
        total: data.length,
        startOffset: 0,
        chunkSize: 4096,
        window,
        read: (o, n) => data.subarray(o, o + n),
        sendChunk: (o, d) => {
          if (o === 8192 && !dropped) {
            dropped = true;
            return Promise.reject(new LinkError(Rc.OUT_OF_ORDER, 'simulated', { committed: 8192 }));
          }
          return client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o, d });
        },
        queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
      });
      t.equal(res.committed, data.length);
      t.ok(res.restarts >= 1, 'went back at least once');
      const st = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
      t.equal(st['crc'], crc32(data));
    }),
  );

  t.test('random garbage on the line: counted, dropped, and the device still answers', (t) =>
    withRig(makePair, async ({ client, pair, terminal }) => {
      for (let i = 0; i < 25; i++) await pair.host.write(randomBytes(4096));
      await pair.host.write(new Uint8Array([0]));
      const s = await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
      t.equal(s['enrolled'], false);
      const st = terminal.link.stats;
      t.ok(st.corrupt + st.oversize > 0, 'garbage was counted');
    }),
  );
}
