// Device side of the link: transport bytes -> Deframer -> codec -> Dispatcher, one request at a
// time as firmware would, with a bounded receive window and a cache of recent responses so a
// retried request (same sequence number) is answered again, never executed twice.
import { Deframer } from './framer.js';
import { frameAsShards, planShardsAtMost, seenByte, shardsOnLine } from './fec.js';
import type { FramerStats } from './framer.js';
import { decodeMessage, encodeMessage, encodePayload, errorPayload } from './codec.js';
import type { Message, Payload } from './codec.js';
import { CRC_SIZE, HEADER_SIZE, Kind, MIN_BODY_SIZE, PROTOCOL_VERSION, encodeFrame } from './frame.js';
import type { KindValue } from './frame.js';
import { Group, SystemCmd } from './groups.js';
import { LinkError, Rc } from './errors.js';
import type { Dispatcher, LinkPeer } from './dispatch.js';
import type { Transport } from './transport.js';

export interface DeviceLinkLimits {
  /** Largest frame body (header + CBOR + CRC) the device accepts and sends. */
  maxBody: number;
  /** Requests the device queues before answering BUSY. */
  window: number;
  /**
   * Output the transport has not yet taken (bytes, frames) past which the link is closed: a peer
   * that sends requests and never reads its replies (docs/protocol.md 4.9). Defaults 1 MiB, 1024.
   */
  maxUnsentBytes?: number;
  maxUnsentFrames?: number;
}

/** What the module tells a link beyond its limits: its clock, and who to tell of activity. */
export interface DeviceLinkHooks {
  /** The module clock (ms), for `lastHeard`. Default Date.now. */
  clock?: () => number;
  /** Called for every well-formed request frame (e.g. to re-arm an idle timer). */
  onFrame?: () => void;
  /** Called once when the link closes itself because its peer does not read (for a log line). */
  onShed?: (reason: string) => void;
  /**
   * What to do past the unsent-output limit: 'close' the transport (a TCP connection: the peer
   * reconnects) or 'drop' the answers that do not fit (a serial port, the module's only cable:
   * closing it would end the module; a host that reads again retries and is answered).
   */
  overflow?: 'close' | 'drop';
  /**
   * Pause in the host's shards (ms) after which the frames being collected have had their first
   * shards and a NEED asks for the rest (docs/protocol.md 2.6). Default 100; 0: only a shard of a
   * later frame ends a frame's first shards.
   */
  needIdleMs?: number;
}

/** Unsent output past which a link is closed, unless its limits say otherwise. */
export const MAX_UNSENT_BYTES = 1 << 20;
export const MAX_UNSENT_FRAMES = 1024;

export interface DeviceLinkStats extends FramerStats {
  requests: number;
  duplicates: number;
  busy: number;
  ignored: number;
}

interface CachedResponse {
  group: number;
  command: number;
  frame: Uint8Array;
}

export class DeviceLink implements LinkPeer {
  readonly limits: DeviceLinkLimits;
  private readonly deframer: Deframer;
  private readonly queue: Message[] = [];
  private readonly cache = new Map<number, CachedResponse>();
  private readonly pending = new Set<number>();
  private running = false;
  /**
   * A request is executing (it counts in the window). Not while its answer is being sent: a host
   * may read the answer before the transport says it is written (a paced or congested link, TLS)
   * and send its next request at once, and a host that keeps `window` requests outstanding must
   * never see BUSY (docs/protocol.md 4.5). Memory stays bounded: the queue holds at most
   * `window`, and the next request starts only after this answer is written.
   */
  private executing = false;
  private closed = false;
  private readonly counters = { requests: 0, duplicates: 0, busy: 0, ignored: 0 };
  /** The last request came as FEC shards: answers and events go out as shards too (docs/protocol.md 2.6). */
  private inShards = false;
  private shardId = 0;
  private unsentBytes = 0;
  private unsentFrames = 0;
  private readonly clock: () => number;
  private heard: number;

  constructor(
    private readonly transport: Transport,
    private readonly dispatcher: Dispatcher,
    limits: DeviceLinkLimits,
    private readonly hooks: DeviceLinkHooks = {},
  ) {
    if (limits.maxBody < MIN_BODY_SIZE || limits.window < 1) throw new RangeError('invalid link limits');
    this.limits = limits;
    this.deframer = new Deframer(limits.maxBody, { harq: true });
    this.clock = hooks.clock ?? Date.now;
    this.heard = this.clock();
    transport.onData((chunk) => this.receive(chunk));
    transport.onClose(() => this.stop());
  }

  /** False once the transport closed (or the link shed it): state this link owned may be dropped or taken over. */
  get open(): boolean {
    return !this.closed;
  }

  /** Module clock when this link last received bytes (any, even part of a frame): its peer is alive. */
  get lastHeard(): number {
    return this.heard;
  }

  get stats(): DeviceLinkStats {
    return { ...this.deframer.stats, ...this.counters };
  }

  private needTimer: NodeJS.Timeout | undefined;

  private clearNeedTimer(): void {
    clearTimeout(this.needTimer);
    clearImmediate(this.needTimer as unknown as NodeJS.Immediate);
    this.needTimer = undefined;
  }

  private stop(): void {
    this.closed = true;
    this.clearNeedTimer();
    // Requests still queued are dropped, not executed: their answers could not reach anyone,
    // and one that changes state (a KEYS SEAL spends keys) must not run for a host that is gone.
    for (const m of this.queue) this.pending.delete(m.seq);
    this.queue.length = 0;
  }

  /** Send an unsolicited event (e.g. pool low watermark). */
  async emit(group: number, command: number, payload: Payload): Promise<void> {
    await this.send(encodeMessage({ kind: Kind.EVENT, group, command, seq: 0, payload }));
  }

  private receive(chunk: Uint8Array): void {
    if (this.closed) return; // shed: nothing more is read, let alone executed
    this.heard = this.clock();
    this.take(this.deframer.push(chunk));
  }

  /** Frame bodies the deframer gave (from bytes received, or released after a pause). */
  private take(bodies: Uint8Array[]): void {
    for (const body of bodies) {
      if (this.closed) return;
      const decoded = decodeMessage(body);
      if ((decoded.ok ? decoded.message.kind : decoded.header.kind) === Kind.REQUEST) {
        // Answer in the framing the host last used: it knows what its line needs (docs/protocol.md 2.6).
        this.inShards = this.deframer.cameInShards(body);
      }
      if (!decoded.ok) {
        const h = decoded.header;
        if (h.kind !== Kind.REQUEST) {
          this.counters.ignored++; // only a request gets an answer, even an error
          continue;
        }
        // The header survived the CRC, so the host can match the error to its request.
        void this.send(
          encodeMessage({ kind: Kind.ERROR, group: h.group, command: h.command, seq: h.seq, payload: { ...errorPayload(h.group, decoded.error) } }),
        );
        continue;
      }
      const m = decoded.message;
      if (m.kind !== Kind.REQUEST) {
        this.counters.ignored++; // a device only takes requests; anything else is line noise
        continue;
      }
      this.hooks.onFrame?.();
      if (m.group === Group.SYSTEM && m.command === SystemCmd.PARAMS) {
        // PARAMS opens a host session: a new host program may reuse sequence numbers that
        // the previous one used on this cable, so answers cached for those must not be replayed.
        this.cache.clear();
      }
      const cached = this.cache.get(m.seq);
      if (cached && cached.group === m.group && cached.command === m.command) {
        // A retry of a request already executed: answer again, do not execute again.
        this.counters.duplicates++;
        void this.send(cached.frame);
        continue;
      }
      if (this.pending.has(m.seq)) {
        this.counters.duplicates++; // still queued or running: its response is on its way
        continue;
      }
      if (this.queue.length + (this.executing ? 1 : 0) >= this.limits.window) {
        this.counters.busy++;
        const e = new LinkError(Rc.BUSY, 'receive window full');
        void this.send(encodeMessage({ kind: Kind.ERROR, group: m.group, command: m.command, seq: m.seq, payload: { ...errorPayload(m.group, e) } }));
        continue;
      }
      this.pending.add(m.seq);
      this.queue.push(m);
    }
    this.sendNeeds();
    if (!this.running) void this.drain();
  }

  /**
   * NEEDs the collector asks for (docs/protocol.md 2.6), on the line at once: a few bytes each,
   * at most one per shard received, so a peer's shards cannot make the device send more than
   * they take. A pause in the shards also ends what the frames being collected get for now.
   */
  private sendNeeds(): void {
    const col = this.deframer.shards;
    const needs = col.needs();
    if (needs.length > 0 && !this.closed) {
      const line = new Uint8Array(1 + needs.length * 10);
      const body = shardsOnLine(needs);
      line.set(body, 1);
      void this.transport.write(line.subarray(0, 1 + body.length)).catch(() => undefined);
    }
    this.clearNeedTimer();
    const idleMs = this.hooks.needIdleMs ?? 100;
    const waiting = col.waiting;
    if (idleMs > 0 && waiting && !this.closed) {
      // A NEED that brought nothing is asked again after a longer pause: its answer may be on its way.
      const wait = waiting === 'again' ? 4 * idleMs : idleMs;
      this.needTimer = setTimeout(() => {
        // After the poll phase: a process that was busy (a flash write, a loaded machine) may
        // have bytes waiting to be read, which are not a pause on the line.
        this.needTimer = setImmediate(() => {
          this.needTimer = undefined;
          if (this.closed) return;
          if (this.clock() - this.heard >= wait) this.take(this.deframer.idle(waiting === 'again'));
          else this.sendNeeds();
        }) as unknown as NodeJS.Timeout;
      }, wait);
      this.needTimer.unref?.();
    }
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      let m: Message | undefined;
      let first = true;
      for (;;) {
        // A request that waited behind this link's previous one starts on a turn of its own, so a
        // close the event loop has for this link (a reset right after pipelined SEALs) is seen
        // first and the request dropped (4.8). A lone request pays nothing.
        if (!first && this.queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        first = false;
        if (!(m = this.queue.shift())) break;
        this.executing = true;
        this.counters.requests++;
        const ctx = { group: m.group, command: m.command, seq: m.seq };
        const out = await this.dispatcher.dispatch(m.payload, { ...ctx, link: this });
        let payload = encodePayload(out.ok ? out.payload : { ...errorPayload(m.group, out.error) });
        let kind: KindValue = out.ok ? Kind.RESPONSE : Kind.ERROR;
        if (HEADER_SIZE + payload.length + CRC_SIZE > this.limits.maxBody) {
          // A handler produced more than the link may carry: a firmware bug, reported as such.
          payload = encodePayload({ ...errorPayload(m.group, new LinkError(Rc.TOO_LARGE, 'response too large')) });
          kind = Kind.ERROR;
        }
        const frame = encodeFrame({ version: PROTOCOL_VERSION, kind, ...ctx }, payload);
        this.remember(m.seq, { group: m.group, command: m.command, frame });
        this.pending.delete(m.seq);
        this.executing = false;
        await this.send(frame);
      }
    } finally {
      this.executing = false;
      this.running = false;
    }
  }

  /**
   * A frame as shards planned for the line this link's requests come over: the device sees the
   * shards the host sends and how many arrive whole, and sizes its own by that (docs/protocol.md 2.6).
   */
  private asShards(frame: Uint8Array): Uint8Array {
    // The body is the frame minus its two delimiters and COBS (at most 1 byte in 254).
    const lambda = this.deframer.shards.sendLambda(frame.length);
    const plan = planShardsAtMost(frame.length - 2, lambda);
    if (!plan) return frame; // too large for the line in any plan: plain, as a last resort
    this.shardId = (this.shardId + 1) & 0xff;
    return frameAsShards(frame, this.shardId, plan, seenByte(this.deframer.shards.line.lambda));
  }

  private remember(seq: number, r: CachedResponse): void {
    this.cache.delete(seq);
    this.cache.set(seq, r);
    // Bounded: enough to cover every request a host may have in flight, twice.
    while (this.cache.size > this.limits.window * 2 + 2) {
      const oldest = this.cache.keys().next().value as number;
      this.cache.delete(oldest);
    }
  }

  private async send(plain: Uint8Array): Promise<void> {
    if (this.closed) return;
    const frame = this.inShards ? this.asShards(plain) : plain;
    // Bounded output: every answer waits in memory until the transport takes it, and a peer that
    // never reads would make that grow without limit. Past the limit this link (only this one)
    // is closed; an honest host has at most a window of answers and a few events outstanding.
    const maxBytes = this.limits.maxUnsentBytes ?? MAX_UNSENT_BYTES;
    const maxFrames = this.limits.maxUnsentFrames ?? MAX_UNSENT_FRAMES;
    if (this.unsentBytes + frame.length > maxBytes || this.unsentFrames + 1 > maxFrames) {
      if (this.hooks.overflow === 'drop') return; // lost like a frame on a noisy line (4.4)
      this.stop();
      this.hooks.onShed?.(`peer does not read its replies: ${this.unsentFrames} frames, ${this.unsentBytes} bytes unsent`);
      void this.transport.close().catch(() => undefined);
      return;
    }
    this.unsentBytes += frame.length;
    this.unsentFrames++;
    try {
      await this.transport.write(frame);
    } catch {
      // The cable went away; the host will retry or resume. Nothing to do on the device.
    } finally {
      this.unsentBytes -= frame.length;
      this.unsentFrames--;
    }
  }
}
