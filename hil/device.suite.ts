// The device suite: host-side protocol checks against whatever terminal module answers on a port
// (a real serial or USB CDC device, usb:VID:PID, tcp:HOST:PORT, or an emulated module on a pty),
// assuming neither that it is emulated nor that it is enrolled. Only what changes no state: PARAMS,
// STATUS, DIAG ECHO and the DIAG sink (RAM only, docs/protocol.md 3.7), an unknown command, garbage
// on the line. Never INJECT, ADMIN or KEYS. The bulk transfer's goodput comes back as a report.
import type { Test } from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { LinkClient, PARAMS_USED } from '../host-tools/link/client.js';
import { sendBulk } from '../host-tools/link/bulk-sender.js';
import { openLink } from '../host-tools/link/open.js';
import { Kind, SUPPORTED_VERSIONS } from '../firmware/link/frame.js';
import { decodeMessage, encodeMessage } from '../firmware/link/codec.js';
import { Deframer } from '../firmware/link/framer.js';
import { DiagCmd, Group, SystemCmd } from '../firmware/link/groups.js';
import { LinkError, Rc, rcName } from '../firmware/link/errors.js';
import type { Transport } from '../firmware/link/transport.js';
import type { DeviceReport } from '../host-tools/cli/commands/hil.js';

export interface DeviceSuiteOptions {
  /** The port as `qkt inject --port` takes it (already resolved: no `auto`). */
  port: string;
  /** The line rate (`--baud`): set on a serial port, paced on a pty or TCP; goodput is compared with it. */
  baud?: number;
  /** Bytes of the DIAG sink bulk transfer. */
  bulkBytes: number;
  /** Called once with the report, after the bulk transfer (whether or not other checks failed). */
  onReport?(r: DeviceReport): void;
}

/** Line rate a serial port runs at when none is given (serial.ts's default), for timeouts only. */
const DEFAULT_SERIAL_BAUD = 115_200;

interface Rig {
  transport: Transport;
  client: LinkClient;
}

const STATES = ['ready', 'unenrolled', 'selftest-failed', 'flash-error'];
const LINK_COUNTERS = ['frames', 'corrupt', 'oversize', 'droppedBytes', 'requests', 'duplicates', 'busy', 'ignored'] as const;

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/** The response frame with this seq, of a request sent as raw bytes (the client's receiver is taken over meanwhile). */
function rawExchange(rig: Rig, bytes: Uint8Array, seq: number, timeoutMs: number): Promise<{ kind: number; group: number; command: number; payload: Record<string, unknown>; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to the raw request with seq ${seq} in ${timeoutMs} ms`)), timeoutMs);
    const d = new Deframer(65_536);
    rig.transport.onData((chunk) => {
      for (const body of d.push(chunk)) {
        const m = decodeMessage(body);
        if (m.ok && m.message.seq === seq) {
          clearTimeout(timer);
          resolve({ kind: m.message.kind, group: m.message.group, command: m.message.command, payload: m.message.payload, body: Uint8Array.from(body) });
        }
      }
    });
    rig.transport.write(bytes).catch((e: unknown) => {
      clearTimeout(timer);
      reject(e as Error);
    });
  });
}

/** The error code a request was answered with, or `ok` for an answer. */
async function rcOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (e instanceof LinkError) return rcName(e.rc);
    throw e;
  }
}

export function deviceSuite(t: Test, o: DeviceSuiteOptions): void {
  const lineBaud = o.baud ?? DEFAULT_SERIAL_BAUD;
  /** Milliseconds `bytes` take on the line (8N1), at the given or the serial default rate. */
  const lineMs = (bytes: number) => (bytes * 10 * 1000) / lineBaud;
  const newClient = (transport: Transport) => new LinkClient(transport, { baud: lineBaud, baseTimeoutMs: 3000 });
  let rig: Rig | undefined;
  let params: { versions: number[]; maxFrame: number; window: number; maxChunk: number; firmware: string } | undefined;
  const report: DeviceReport = { port: o.port, baud: o.baud ?? null, firmware: null, maxFrame: null, window: null, maxChunk: null, bulk: null };

  t.teardown(async () => {
    await rig?.client.close().catch(() => undefined);
    await rig?.transport.close().catch(() => undefined);
  });
  const need = (): Rig => {
    if (!rig) throw new Error(`${o.port} is not open`);
    return rig;
  };
  const limits = () => {
    // Without PARAMS every other check would wait out its timeouts: each fails at once instead.
    if (!params) throw new Error(`PARAMS was not answered on ${o.port}: the other checks are not tried`);
    return params;
  };
  /** The open cable, once PARAMS has answered. */
  const ready = (): Rig => {
    limits();
    return need();
  };
  /** The STATUS link counters of this link (3.6.2). */
  const linkStats = async (r: Rig) => {
    const s = await r.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['link'] });
    const link = s['link'];
    if (!isObj(link) || !LINK_COUNTERS.every((k) => isCount(link[k]))) throw new Error(`STATUS link counters missing or not counts: ${JSON.stringify(link)}`);
    return link as Record<(typeof LINK_COUNTERS)[number], number>;
  };

  t.test('PARAMS: a protocol version this host speaks, and sane limits', async (t) => {
    // Opened here, not in a before hook: a port that cannot be opened fails this check, and the
    // others fail at once after it, the report still written.
    const transport = await openLink(o.port, o.baud ? { baud: o.baud } : {});
    rig = { transport, client: newClient(transport) };
    const r = need();
    const p = await r.client.negotiate();
    t.ok(Array.isArray(p.versions) && p.versions.some((v) => SUPPORTED_VERSIONS.includes(v)), `versions ${JSON.stringify(p.versions)} include one of ${SUPPORTED_VERSIONS.join(', ')}`);
    t.ok(isCount(p.maxFrame) && p.maxFrame >= 64 && p.maxFrame <= 16 * 1024 * 1024, `maxFrame ${p.maxFrame}: 64 bytes to 16 MiB`);
    t.ok(isCount(p.window) && p.window >= 1 && p.window <= 256, `window ${p.window}: 1 to 256`);
    t.ok(isCount(p.maxChunk) && p.maxChunk >= 1 && p.maxChunk < p.maxFrame, `maxChunk ${p.maxChunk}: at least 1, below maxFrame`);
    t.ok(typeof p.firmware === 'string' && p.firmware.length > 0, `firmware ${JSON.stringify(p.firmware)}`);
    // The host asked for only what it uses (3.6.1): nothing else comes back.
    const extra = Object.keys(p).filter((k) => k !== 'versions' && !(PARAMS_USED as readonly string[]).includes(k));
    t.same(extra, [], 'PARAMS with `only` answers versions and the named fields only');
    params = { versions: p.versions, maxFrame: p.maxFrame, window: p.window, maxChunk: p.maxChunk, firmware: p.firmware };
    Object.assign(report, { firmware: p.firmware, maxFrame: p.maxFrame, window: p.window, maxChunk: p.maxChunk });
    t.comment(`${o.port}: ${p.firmware}, protocol ${p.versions.join(',')}, maxFrame ${p.maxFrame}, window ${p.window}, maxChunk ${p.maxChunk}${typeof p['baud'] === 'number' ? `, baud ${p['baud']}` : ''}`);
  });

  t.test('STATUS: the fields of docs/protocol.md 3.6.2; `only` answers just those named', async (t) => {
    const r = ready();
    const s = await r.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    t.ok(s['terminalId'] === null || typeof s['terminalId'] === 'string', 'terminalId: a string or null');
    t.type(s['enrolled'], 'boolean', 'enrolled');
    if (s['enrolled'] === true) t.type(s['terminalId'], 'string', 'an enrolled module names itself');
    t.equal(s['firmware'], limits().firmware, 'firmware as in PARAMS');
    t.ok(STATES.includes(s['state'] as string), `state ${JSON.stringify(s['state'])} is one of ${STATES.join(', ')}`);
    const self = s['selfTest'];
    t.ok(isObj(self) && typeof self['ok'] === 'boolean' && Array.isArray(self['failed']), 'selfTest {ok, failed}');
    const pool = s['pool'];
    t.ok(isObj(pool), 'pool');
    if (isObj(pool)) {
      for (const k of ['storedKeyBits', 'maxKeyBits', 'consumedKeyBits']) t.ok(isCount(pool[k]), `pool.${k} is a count`);
      t.ok((pool['storedKeyBits'] as number) <= (pool['maxKeyBits'] as number), 'pool: stored <= max');
      t.ok(Array.isArray(pool['batches']), 'pool.batches');
      for (const b of Array.isArray(pool['batches']) ? (pool['batches'] as unknown[]) : []) {
        t.ok(isObj(b) && typeof b['batchId'] === 'string' && isCount(b['bits']) && isCount(b['consumedBits']) && b['consumedBits'] <= b['bits'], `batch ${JSON.stringify(b)}`);
      }
    }
    const audit = s['audit'];
    t.ok(isObj(audit) && isCount(audit['events']) && isCount(audit['pendingRefusals']), 'audit {events, pendingRefusals}');
    const area = s['secureArea'];
    t.ok(isObj(area) && typeof area['damaged'] === 'boolean', 'secureArea {damaged}');
    const link = s['link'];
    t.ok(isObj(link) && LINK_COUNTERS.every((k) => isCount(link[k])), `link {${LINK_COUNTERS.join(', ')}}`);

    const only = await r.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['terminalId', 'state'] });
    t.same(Object.keys(only).sort(), ['state', 'terminalId'], 'STATUS only [terminalId, state]: those two fields');
    t.equal(only['terminalId'], s['terminalId'], 'the same terminalId');
    const none = await r.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['noSuchField'] });
    t.same(none, {}, 'a name the module does not have is ignored');
  });

  t.test('ECHO: byte strings of 1 byte up to maxChunk come back unchanged; one more is TOO_LARGE', async (t) => {
    const r = ready();
    const { maxChunk } = limits();
    // COBS edges (253/254/255: a run of nonzero bytes at its maximum), zeros only, and the extremes.
    const sizes = [...new Set([1, 2, 253, 254, 255, 256, 1000, maxChunk - 1, maxChunk].filter((n) => n >= 1 && n <= maxChunk))];
    for (const n of sizes) {
      const d = randomBytes(n);
      const back = await r.client.request(Group.DIAG, DiagCmd.ECHO, { d }, { expectBytes: n + 16 });
      t.ok(back['d'] instanceof Uint8Array && Buffer.compare(back['d'], d) === 0, `${n} random bytes`);
    }
    for (const fill of [0x00, 0xff]) {
      const d = new Uint8Array(maxChunk).fill(fill);
      const back = await r.client.request(Group.DIAG, DiagCmd.ECHO, { d }, { expectBytes: maxChunk + 16 });
      t.ok(back['d'] instanceof Uint8Array && Buffer.compare(back['d'], d) === 0, `${maxChunk} bytes of 0x${fill.toString(16).padStart(2, '0')}`);
    }
    t.equal(await rcOf(r.client.request(Group.DIAG, DiagCmd.ECHO, { d: randomBytes(maxChunk + 1) })), 'TOO_LARGE', `${maxChunk + 1} bytes: TOO_LARGE`);
  });

  t.test('unknown groups and commands are answered NOT_SUPPORTED', async (t) => {
    const r = ready();
    t.equal(await rcOf(r.client.request(99, 0, {})), 'NOT_SUPPORTED', 'group 99');
    t.equal(await rcOf(r.client.request(Group.SYSTEM, 200, {})), 'NOT_SUPPORTED', 'SYSTEM command 200');
    t.equal(await rcOf(r.client.request(Group.DIAG, 200, {})), 'NOT_SUPPORTED', 'DIAG command 200');
    t.equal((await r.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['state'] }))['state'] !== undefined, true, 'and STATUS still answers');
  });

  t.test('a retried request (same seq, same bytes) is answered from the response cache, not run again', async (t) => {
    const r = ready();
    const before = await linkStats(r);
    // A raw PARAMS first: it clears the link's response cache (3.6.1), so no earlier answer of the client's can match.
    const s0 = randomInt(0, 0x10000);
    const s1 = (s0 + 1) & 0xffff;
    const wait = 5000 + 2 * lineMs(limits().maxFrame);
    const p = await rawExchange(r, encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: s0, payload: { versions: [...SUPPORTED_VERSIONS], only: ['maxChunk'] } }), s0, wait);
    t.equal(p.kind, Kind.RESPONSE, 'raw PARAMS answered');
    const d = randomBytes(32);
    const echo = encodeMessage({ kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.ECHO, seq: s1, payload: { d } });
    const first = await rawExchange(r, echo, s1, wait);
    const again = await rawExchange(r, echo, s1, wait);
    t.equal(first.kind, Kind.RESPONSE, 'the first copy is answered');
    t.ok(first.payload['d'] instanceof Uint8Array && Buffer.compare(first.payload['d'], d) === 0, 'with the echo');
    t.equal(Buffer.compare(again.body, first.body), 0, 'the retry gets the same answer, byte for byte');
    // The raw exchanges took the receiver over: a fresh client on the same cable.
    r.client = newClient(r.transport);
    await r.client.negotiate();
    const after = await linkStats(r);
    t.equal(after.duplicates - before.duplicates, 1, 'the module counted one duplicate (STATUS link.duplicates)');
  });

  t.test('garbage on the line is dropped, and a valid request after it is answered', async (t) => {
    const r = ready();
    const before = await linkStats(r);
    // At most about half a second of the line: a slow UART is not kept busy with noise.
    const n = Math.max(256, Math.min(4096, Math.floor(lineBaud / 20)));
    await r.transport.write(randomBytes(n));
    await r.transport.write(new Uint8Array([0])); // a delimiter: the module's deframer resyncs here
    const s = await r.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['state'] }, { timeoutMs: 5000 + 2 * lineMs(n) });
    t.ok(STATES.includes(s['state'] as string), `STATUS answered after ${n} random bytes`);
    const after = await linkStats(r);
    t.ok(after.corrupt + after.oversize > before.corrupt + before.oversize, `the garbage was counted as dropped frames (corrupt ${before.corrupt} -> ${after.corrupt}, oversize ${before.oversize} -> ${after.oversize})`);
    t.ok(after.droppedBytes > before.droppedBytes, 'and its bytes as dropped');
  });

  t.test(`DIAG sink: ${o.bulkBytes} bytes in a windowed bulk transfer, the module's CRC-32 matching`, { timeout: 120_000 + 4 * lineMs(o.bulkBytes) }, async (t) => {
    const r = ready();
    const { maxChunk, window } = limits();
    const data = randomBytes(o.bulkBytes);
    const id = (await r.client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: data.length }))['t'];
    t.ok(isCount(id) && id > 0, 'SINK_BEGIN gives a transfer id');
    const t0 = performance.now();
    const res = await sendBulk({
      total: data.length,
      startOffset: 0,
      chunkSize: maxChunk,
      window,
      read: (off, n) => data.subarray(off, off + n),
      sendChunk: (off, d, timeoutMs) => r.client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o: off, d }, { expectBytes: 16, retries: 0, ...(timeoutMs ? { timeoutMs } : {}) }),
      queryCommitted: async () => (await r.client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    });
    const seconds = (performance.now() - t0) / 1000;
    const st = await r.client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
    t.equal(res.committed, data.length, 'every byte committed');
    t.same({ c: st['c'], n: st['n'] }, { c: data.length, n: data.length }, 'SINK_STATUS: committed = total');
    t.equal(st['crc'], crc32(data), "the module's CRC-32 of the bytes matches ours");
    const goodput = (data.length * 8) / seconds;
    report.bulk = {
      bytes: data.length,
      seconds: Number(seconds.toFixed(3)),
      goodputBitsPerSecond: Math.round(goodput),
      // Against the line's payload capacity: 8N1 carries baud/10 bytes a second.
      lineRateFraction: o.baud ? Number((goodput / 8 / (o.baud / 10)).toFixed(3)) : null,
      restarts: res.restarts,
    };
    t.comment(`bulk: ${data.length} bytes in ${seconds.toFixed(2)} s, ${(goodput / 1000).toFixed(1)} kbit/s${o.baud ? `, ${report.bulk.lineRateFraction} of ${o.baud} baud` : ''}, ${res.restarts} go-backs`);
  });

  t.test('device report', async (t) => {
    o.onReport?.(report);
    // Carried as a diagnostic: tap's JUnit reporter makes it a <property name="device"> of this case.
    t.pass('device report', { diagnostic: true, device: report });
  });
}
