// What `qkt monitor` sees on a cable: the byte stream of each direction split at every 0x00 (as a
// receiver resynchronises, docs/protocol.md 2.5) and each frame checked and decoded with the link's
// own codec (cobs.ts, frame.ts, codec.ts) into a FrameView: header with names, payload in CBOR
// diagnostic notation, refusal codes in words, and framing faults (bad COBS, bad CRC, too short,
// oversize) as views of their own. FEC shards (docs/protocol.md 2.6) are collected per direction
// and not shown one by one: the frame they make is shown once complete, with what it took. Works
// on a copy of the stream; never throws on what it reads.
import { cobsDecode, cobsEncode } from '../../firmware/link/cobs.js';
import { NEED_MARK, SHARD_CHECK, SHARD_HEADER, SHARD_MARK, ShardCollector, parseNeed } from '../../firmware/link/fec.js';
import { CRC_SIZE, HEADER_SIZE, Kind, MIN_BODY_SIZE, crcOk, readHeader } from '../../firmware/link/frame.js';
import { decodeMessage } from '../../firmware/link/codec.js';
import { rcName } from '../../firmware/link/errors.js';
import { DownloadCmd, Group, SystemCmd } from '../../firmware/link/groups.js';
import { commandId, groupId, refusalWords } from '../link/names.js';
import { printable } from '../peer-text.js';
import { cborDiag } from './cbor-diag.js';
import { PCAP_SNAPLEN, PSEUDO_HEADER_SIZE, PcapDirection, PcapFlag } from './pcap.js';
import type { PcapFrame } from './pcap.js';

/** A is the device side of the cable, B the host side: bytes read at A go device->host. */
export type Direction = 'host->device' | 'device->host';
export type KindName = 'request' | 'response' | 'error' | 'event';
export type Problem = 'bad COBS' | 'bad CRC' | 'too short' | 'oversize' | 'bad message' | 'bad shard';

/** How a frame that came as FEC shards was sent, and what of it the monitor saw. */
export interface FecInfo {
  /** Data shards. */
  k: number;
  /** All shards, data and parity. */
  n: number;
  /** Data bytes per shard. */
  s: number;
  /** Whole shards of this frame seen until it was complete (a repeat counts again). */
  shards: number;
}

/** One frame as seen on the cable; also the `--json` line of `qkt monitor` (docs/cli.md). */
export interface FrameView {
  /** Seconds since the monitor started, to the millisecond. */
  t: number;
  dir: Direction;
  /** Bytes between its two 0x00 delimiters (COBS-encoded); for a frame from shards, its whole shards' bytes. */
  wireBytes: number;
  /** A whole, CRC-checked v1 message. */
  ok: boolean;
  /** What is wrong with it, when not ok (or when it is larger than the advertised maxFrame). */
  problem?: Problem;
  /** The problem in words. */
  detail?: string;
  // From here, present once the CRC is good (the header is then trusted).
  version?: number;
  kind?: KindName | number;
  group?: number;
  groupName?: string;
  command?: number;
  commandName?: string;
  seq?: number;
  /** The payload in CBOR diagnostic notation; byte strings elided. */
  payload?: string;
  /** Why the payload is not well-formed CBOR, if it is not. */
  payloadError?: string;
  /** For an ERROR frame: the refusal. */
  error?: { group: number; rc: number; name: string; words: string; reason?: string };
  /** Present when the frame was put together from FEC shards. */
  fec?: FecInfo;
}

const KIND_NAMES: Record<number, KindName> = { [Kind.REQUEST]: 'request', [Kind.RESPONSE]: 'response', [Kind.ERROR]: 'error', [Kind.EVENT]: 'event' };
/** The monitor keeps at most this many bytes of one frame (what a pcap record holds). */
export const MAX_KEPT = PCAP_SNAPLEN - PSEUDO_HEADER_SIZE;
/** Before a PARAMS reply names maxFrame, bodies up to 64 KiB are taken as frames (docs/protocol.md 2.4). */
const DEFAULT_MAX_BODY = 64 * 1024;

/**
 * Where payload bytes may be sealed key material or whole sealed batches: show their length only.
 * INJECT (sealed headers and chunks), DOWNLOAD READ (sealed batch bytes), ADMIN (KMD tokens).
 */
function lengthOnly(group: number, command: number): boolean {
  return group === Group.INJECT || group === Group.ADMIN || (group === Group.DOWNLOAD && command === DownloadCmd.READ);
}

/** Check and decode one frame (its bytes between delimiters); `origLength` when `encoded` was cut. */
export function inspectFrame(encoded: Uint8Array, origLength = encoded.length, maxBody = DEFAULT_MAX_BODY): Omit<FrameView, 't' | 'dir'> {
  const v: Omit<FrameView, 't' | 'dir'> = { wireBytes: origLength, ok: false };
  if (origLength > encoded.length) {
    return { ...v, problem: 'oversize', detail: `${origLength} bytes without a delimiter, more than the ${MAX_KEPT} a frame may have` };
  }
  const body = cobsDecode(encoded);
  if (!body) return { ...v, problem: 'bad COBS', detail: `${origLength} bytes that are not valid COBS (line noise, or garbage between frames)` };
  return inspectBody(body, origLength, maxBody);
}

/** Check and decode one frame body (after COBS): a frame's, or one put together from shards. */
export function inspectBody(body: Uint8Array, wireBytes: number, maxBody = DEFAULT_MAX_BODY): Omit<FrameView, 't' | 'dir'> {
  const v: Omit<FrameView, 't' | 'dir'> = { wireBytes, ok: false };
  if (body.length < MIN_BODY_SIZE) return { ...v, problem: 'too short', detail: `${body.length} bytes decoded, under the ${MIN_BODY_SIZE} of the smallest frame (line noise, or garbage between frames)` };
  if (!crcOk(body)) {
    const n = body.length - CRC_SIZE;
    const got = Buffer.from(body.subarray(n)).toString('hex');
    return { ...v, problem: 'bad CRC', detail: `CRC-32 ${got} does not match the ${n} bytes before it` };
  }
  const h = readHeader(body);
  const event = h.kind === Kind.EVENT;
  Object.assign(v, {
    version: h.version,
    kind: KIND_NAMES[h.kind] ?? h.kind,
    group: h.group,
    groupName: groupId(h.group),
    command: h.command,
    commandName: commandId(h.group, h.command, event),
    seq: h.seq,
  });
  const payload = body.subarray(HEADER_SIZE, body.length - CRC_SIZE);
  const diag = cborDiag(payload, { lengthOnly: lengthOnly(h.group, h.command) });
  v.payload = diag.text;
  if (diag.error) v.payloadError = diag.error;
  const m = decodeMessage(body.subarray(0, body.length - CRC_SIZE));
  if (!m.ok) return { ...v, problem: 'bad message', detail: m.error.reason ?? m.error.message };
  v.ok = true;
  const p = m.message.payload;
  if (h.kind === Kind.ERROR) {
    const rc = typeof p['rc'] === 'number' ? p['rc'] : -1;
    v.error = { group: typeof p['g'] === 'number' ? p['g'] : h.group, rc, name: rcName(rc), words: refusalWords(rc) };
    if (typeof p['r'] === 'string') v.error.reason = p['r'];
  }
  if (body.length > maxBody) {
    v.problem = 'oversize';
    v.detail = `body of ${body.length} bytes, over the advertised maxFrame ${maxBody}`;
  }
  return v;
}

export interface MonitorStats {
  frames: number;
  /** Frames with a problem (framing faults and bad messages), by problem; 'bad shard' counts shards. */
  problems: Partial<Record<Problem, number>>;
  bytes: number;
  /** FEC shards, once one has been seen: whole ones, and ones not whole (also in problems). */
  shards?: { good: number; bad: number };
  /** NEEDs (docs/protocol.md 2.6: more shards of a frame asked for), once one has been seen: whole ones, and damaged ones (also 'bad shard' in problems). */
  needs?: { good: number; bad: number };
}

export interface LinkMonitorOptions {
  /**
   * Each frame, in the order its closing delimiter (or its completing shard) arrived, with its
   * capture record; none for k shards that do not make a frame (nothing to show Wireshark).
   */
  onFrame(view: FrameView, raw: PcapFrame | undefined): void;
  /** Each FEC shard's capture record (its frame is reported to onFrame once complete). */
  onShard?(raw: PcapFrame): void;
  /** Microseconds since the Unix epoch; default performance.timeOrigin + performance.now(). */
  nowUs?: () => number;
}

/** Splits one direction at 0x00 into frames, keeping at most MAX_KEPT bytes of each. */
class Splitter {
  readonly #buf = new Uint8Array(MAX_KEPT);
  #kept = 0;
  #length = 0;

  push(chunk: Uint8Array, onFrame: (kept: Uint8Array, length: number) => void): void {
    let start = 0;
    while (start < chunk.length) {
      const zero = chunk.indexOf(0, start);
      const end = zero === -1 ? chunk.length : zero;
      const keep = Math.min(end - start, MAX_KEPT - this.#kept);
      this.#buf.set(chunk.subarray(start, start + keep), this.#kept);
      this.#kept += keep;
      this.#length += end - start;
      if (zero === -1) return;
      // Back-to-back delimiters are idle fill, not frames (docs/protocol.md 2.1).
      if (this.#length > 0) onFrame(this.#buf.slice(0, this.#kept), this.#length);
      this.#kept = 0;
      this.#length = 0;
      start = zero + 1;
    }
  }
}

/** The monitor of one cable: feed it what each end sends; it reports every frame. */
export class LinkMonitor {
  readonly stats: Record<Direction, MonitorStats> = {
    'host->device': { frames: 0, problems: {}, bytes: 0 },
    'device->host': { frames: 0, problems: {}, bytes: 0 },
  };
  readonly #startUs: number;
  readonly #nowUs: () => number;
  readonly #split: Record<Direction, Splitter> = { 'host->device': new Splitter(), 'device->host': new Splitter() };
  readonly #onFrame: LinkMonitorOptions['onFrame'];
  readonly #onShard: LinkMonitorOptions['onShard'];
  // Any frame fits: k * s is at most 255 * 240 bytes. maxFrame is checked on the frame, as for plain ones.
  readonly #fec: Record<Direction, ShardCollector> = { 'host->device': new ShardCollector(DEFAULT_MAX_BODY), 'device->host': new ShardCollector(DEFAULT_MAX_BODY) };
  /** The device's advertised maxFrame, once a PARAMS reply has been seen. */
  maxFrame: number | undefined;

  constructor(options: LinkMonitorOptions) {
    this.#onFrame = options.onFrame;
    this.#onShard = options.onShard;
    this.#nowUs = options.nowUs ?? (() => Math.round((performance.timeOrigin + performance.now()) * 1000));
    this.#startUs = this.#nowUs();
  }

  /** Bytes that went `dir` on the cable (a copy the monitor may keep). */
  push(dir: Direction, bytes: Uint8Array): void {
    this.stats[dir].bytes += bytes.length;
    this.#split[dir].push(bytes, (kept, length) => {
      const nowUs = this.#nowUs();
      const body = length === kept.length ? cobsDecode(kept) : undefined;
      // 0xFE is never a frame's version byte: such a body is a shard (docs/protocol.md 2.6).
      if (body !== undefined && body[0] === SHARD_MARK) {
        this.#shard(dir, body, kept, nowUs);
        return;
      }
      // 0xFD neither: a NEED, a receiver of shards asking for more of a frame (2.6).
      if (body !== undefined && body[0] === NEED_MARK) {
        this.#need(dir, body, kept, nowUs);
        return;
      }
      const max = this.maxFrame ?? DEFAULT_MAX_BODY;
      const seen = body ? inspectBody(body, length, max) : inspectFrame(kept, length, max);
      this.#report(dir, seen, body, nowUs, { timeUs: nowUs, direction: pcapDirection(dir), flags: 0, bytes: kept, origLength: length });
    });
  }

  /** One NEED: counted and captured (a record flagged as a shard: the dissector shows its fields), not shown as a frame. */
  #need(dir: Direction, body: Uint8Array, kept: Uint8Array, nowUs: number): void {
    const st = this.stats[dir];
    const whole = parseNeed(body) !== undefined;
    const counts = (st.needs ??= { good: 0, bad: 0 });
    if (whole) counts.good++;
    else {
      counts.bad++;
      st.problems['bad shard'] = (st.problems['bad shard'] ?? 0) + 1;
    }
    this.#onShard?.({ timeUs: nowUs, direction: pcapDirection(dir), flags: PcapFlag.FEC_SHARD | (whole ? 0 : PcapFlag.BAD_CRC), bytes: kept });
  }

  /** One shard: counted and captured, not shown; the frame it completes is reported. */
  #shard(dir: Direction, body: Uint8Array, kept: Uint8Array, nowUs: number): void {
    const st = this.stats[dir];
    const c = this.#fec[dir];
    const badBefore = c.stats.badShards;
    const frame = c.push(body);
    const bad = c.stats.badShards > badBefore;
    const counts = (st.shards ??= { good: 0, bad: 0 });
    if (bad) {
      counts.bad++;
      st.problems['bad shard'] = (st.problems['bad shard'] ?? 0) + 1;
    } else counts.good++;
    const direction = pcapDirection(dir);
    this.#onShard?.({ timeUs: nowUs, direction, flags: PcapFlag.FEC_SHARD | (bad ? PcapFlag.BAD_CRC : 0), bytes: kept });
    const done = c.completed;
    if (!done) return;
    const fec: FecInfo = { k: done.k, n: done.n, s: done.s, shards: done.shards };
    // A whole shard's body is under 254 bytes, so COBS adds exactly one byte: every whole shard
    // of this frame took the same s + 9 bytes between its delimiters.
    const wireBytes = done.shards * (done.s + SHARD_HEADER + SHARD_CHECK + 1);
    if (!frame && done.body) {
      // Put together, but not a frame (its CRC fails): shown as any bad frame, with what it took.
      const seen = { ...inspectBody(done.body, wireBytes, this.maxFrame ?? DEFAULT_MAX_BODY), fec };
      this.#report(dir, seen, undefined, nowUs, { timeUs: nowUs, direction, flags: PcapFlag.FEC_REASSEMBLED, bytes: cobsEncode(done.body) });
      return;
    }
    if (!frame) {
      const detail = `${done.k} whole shards of frame ${done.id} do not make a frame: their length field says more than they hold`;
      this.#report(dir, { wireBytes, ok: false, problem: 'bad shard', detail, fec }, undefined, nowUs, undefined);
      return;
    }
    const seen = { ...inspectBody(frame, wireBytes, this.maxFrame ?? DEFAULT_MAX_BODY), fec };
    const bytes = cobsEncode(frame);
    this.#report(dir, seen, frame, nowUs, { timeUs: nowUs, direction, flags: PcapFlag.FEC_REASSEMBLED, bytes });
  }

  /** Count, learn from and hand on one frame; `raw`'s flags gain the verdict's bits. */
  #report(dir: Direction, seen: Omit<FrameView, 't' | 'dir'>, body: Uint8Array | undefined, nowUs: number, raw: PcapFrame | undefined): void {
    const s = this.stats[dir];
    const view: FrameView = { t: Math.round((nowUs - this.#startUs) / 1000) / 1000, dir, ...seen };
    s.frames++;
    if (view.problem) s.problems[view.problem] = (s.problems[view.problem] ?? 0) + 1;
    if (body) this.#learn(view, body);
    if (raw) raw.flags |= problemFlag(view.problem);
    this.#onFrame(view, raw);
  }

  /** The device's PARAMS reply names its maxFrame: larger bodies from then on are flagged. */
  #learn(view: FrameView, body: Uint8Array): void {
    if (!view.ok || view.kind !== 'response' || view.group !== Group.SYSTEM || view.command !== SystemCmd.PARAMS) return;
    const m = decodeMessage(body.subarray(0, body.length - CRC_SIZE));
    const mf = m && m.ok ? m.message.payload['maxFrame'] : undefined;
    if (typeof mf === 'number' && Number.isInteger(mf) && mf >= MIN_BODY_SIZE) this.maxFrame = mf;
  }
}

const pcapDirection = (dir: Direction) => (dir === 'host->device' ? PcapDirection.HOST_TO_DEVICE : PcapDirection.DEVICE_TO_HOST);

function problemFlag(p: Problem | undefined): number {
  switch (p) {
    case 'bad COBS':
      return PcapFlag.BAD_COBS;
    case 'bad CRC':
    case 'bad shard':
      return PcapFlag.BAD_CRC;
    case 'too short':
      return PcapFlag.SHORT;
    case 'oversize':
      return PcapFlag.OVERSIZE;
    case 'bad message':
      return PcapFlag.BAD_MESSAGE;
    default:
      return 0;
  }
}

/**
 * One human line for a frame: time, direction, seq, kind, names, refusal, payload. Text from the
 * cable is made printable (peer-text.ts): a device cannot put terminal controls on the screen.
 */
export function formatFrame(v: FrameView): string {
  return printable(frameLine(v), 10_000);
}

function frameLine(v: FrameView): string {
  const head = `${v.t.toFixed(3).padStart(9)} ${v.dir}`;
  const fec = v.fec ? ` [fec ${v.fec.k} of ${v.fec.n}, s ${v.fec.s}, ${v.fec.shards} seen]` : '';
  if (v.seq === undefined) return `${head} ${v.problem}: ${v.detail}${fec}`;
  const what = `${v.groupName}.${v.commandName}`;
  const kind = typeof v.kind === 'number' ? `kind ${v.kind}` : v.kind;
  let line = `${head} seq ${String(v.seq).padEnd(5)} ${String(kind).padEnd(8)} ${what}`;
  if (v.error) line += ` ${v.error.name}: ${v.error.words}${v.error.reason !== undefined ? ` (${JSON.stringify(v.error.reason)})` : ''}`;
  line += ` ${v.payload}`;
  if (v.payloadError) line += ` [${v.payloadError}]`;
  if (v.problem) line += ` [${v.problem}: ${v.detail}]`;
  return line + fec;
}
