// Host side of the link: request/response over any Transport, with per-request timeouts that
// scale with payload size and line rate, bounded retries under the same sequence number (the
// device answers a retry from its cache, never executing twice), and device-parameter negotiation.
import { randomInt } from 'node:crypto';
import { Deframer } from '../../firmware/link/framer.js';
import { ShardResender, ShardSource, bestFrame, frameAsShards, planShardsAtMost, planShardsHarq, seenByte, shardsOnLine } from '../../firmware/link/fec.js';
import { cobsDecode } from '../../firmware/link/cobs.js';
import { decodeMessage, encodeMessage, errorFromPayload } from '../../firmware/link/codec.js';
import type { Message, Payload } from '../../firmware/link/codec.js';
import { Kind, SUPPORTED_VERSIONS } from '../../firmware/link/frame.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkClosedError, LinkTimeoutError, PeerDataError } from './errors.js';
import { checkReply } from './reply-check.js';
import { StoppedError, abortable, sleep, throwIfStopped } from './stop.js';

/** Times a request answered BUSY is sent again (pauses of 25 ms doubling to 400 ms: about 2.4 s in all). */
const BUSY_RETRIES = 10;

/**
 * Attempts of a request (same seq) while the device is heard (its frames arrive damaged, or
 * anything comes from it) but no answer arrives whole: a noisy line, not an absent device. The
 * device answers repeats from its cache, never running a request twice, so persisting is safe;
 * 24 attempts carry a 120-byte request and its answer over a line that loses 90% of such frames
 * with 92% odds (docs/protocol.md 4.4).
 */
export const NOISY_ATTEMPTS = 24;

/** The PARAMS fields a host uses (the request's `only`). */
export const PARAMS_USED = ['maxFrame', 'window', 'maxChunk', 'firmware', 'baud'] as const;

/** The slowest line rate a device's PARAMS `baud` makes the host time its replies by (below it: --baud). */
export const DEVICE_BAUD_FLOOR = 9600;

export { LinkClosedError, LinkTimeoutError };

/**
 * Hits per byte below which plain frames beat shards: an 8 KiB frame then arrives whole 98 times
 * in 100, and shards would cost 4 to 6% of the line in headers and parity.
 */
const PLAIN_BELOW = 3e-6;

/** Frames larger than this (bulk chunks) go with NEED rounds; smaller ones (requests) whole. */
const HARQ_ABOVE = 512;

/** Bytes handed to the transport at a time, ending at a delimiter: a repair waits behind at most two. */
const WRITE_SLICE = 512;

interface WriteJob {
  bytes: Uint8Array;
  offset: number;
  resolve(): void;
  reject(e: unknown): void;
}

/** The device's limits, from its parameters reply (docs/protocol.md, "params"). */
export interface DeviceParams {
  versions: number[];
  maxFrame: number;
  window: number;
  maxChunk: number;
  firmware: string;
  [key: string]: unknown;
}

export interface LinkClientOptions {
  /** Line rate used to scale timeouts (bits per second, 8N1 = 10 bits per byte). Default 115200. */
  baud?: number;
  /** Fixed part of every timeout, ms. Default 1000. */
  baseTimeoutMs?: number;
  /** Retries after a timeout, same sequence number. Default 2. */
  retries?: number;
  /**
   * Incremental redundancy (docs/protocol.md 2.6) for large frames in shards: send the shards
   * for the line's mean loss and the rest when the device asks (NEED). Default true; a device
   * that never asks is sent whole plans again after its first lost frame.
   */
  harq?: boolean;
  /** Largest frame body accepted from the device before negotiation. Default 64 KiB. */
  maxBody?: number;
  /**
   * Frames as FEC shards (docs/protocol.md 2.6): 'auto' (default) from the first loss on a line
   * that is heard, or when PARAMS goes unanswered; 'on' from the start; 'off' never.
   */
  fec?: 'auto' | 'on' | 'off';
}

export interface RequestOptions {
  timeoutMs?: number;
  retries?: number;
  /** Expected response size in bytes, to scale the timeout. */
  expectBytes?: number;
  /** Stop waiting at once when this aborts (StoppedError); a late answer is then a stray. */
  signal?: AbortSignal;
  /** Keep trying, up to NOISY_ATTEMPTS, while anything comes from the device. Default: unless `retries` is 0. */
  persistWhileNoisy?: boolean;
}

interface Pending {
  resolve(p: Payload): void;
  reject(e: Error): void;
  group: number;
  command: number;
}

export class LinkClient {
  private readonly deframer: Deframer;
  private readonly pending = new Map<number, Pending>();
  private readonly eventListeners: Array<(m: Message) => void> = [];
  // Random start: a second host program on the same cable does not reuse the first one's numbers.
  private seq = randomInt(0, 0x10000);
  private closed: Error | undefined;
  private msPerByte: number;
  private readonly baseTimeoutMs: number;
  private readonly retries: number;
  /** Largest frame body accepted from the device. */
  private readonly maxBody: number;
  /** Bytes handed to the transport whose write has not completed yet. */
  private unsentBytes = 0;
  /** Responses that matched no pending request (late answers to a retried request). */
  strayResponses = 0;
  /** When bytes last came from the device (performance.now()); the client's creation before any. */
  lastReceiveAt = performance.now();
  params: DeviceParams | undefined;
  /** Frames go out as FEC shards (docs/protocol.md 2.6); set on the first loss in 'auto'. */
  private inShards: boolean;
  /** False when told 'off': plain frames only. */
  private fecAllowed: boolean;
  /** 'auto': shards after a loss, and plain again once the device says the line is clean. */
  private readonly fecAuto: boolean;
  private shardId = randomInt(0, 256);
  /** Shards were tried only because PARAMS went unanswered: dropped if the line shows no damage. */
  private tentativeShards = false;
  /** Damaged shards received when shards were tried for PARAMS: none more by the reply means a clean line. */
  private damageAtTentative = 0;
  /** Frames received in shards when the host last turned to shards, and how many more before plain again. */
  private shardsSince = 0;
  private plainAfter = 32;
  /** Frames sent in shards, kept to answer the device's NEEDs (docs/protocol.md 2.6). */
  private readonly resender = new ShardResender();
  /** NEED rounds: 'unknown' until the device asks (tried), 'yes' once it has, 'no' after a lost frame with none asked. */
  private harq: 'unknown' | 'yes' | 'no';
  /** Frames sent with a NEED-round plan. */
  private harqFrames = 0;
  /** Bytes waiting to be handed to the transport, in order, repairs first. */
  private readonly writeQueue: WriteJob[] = [];
  private writesInFlight = 0;

  constructor(
    readonly transport: Transport,
    opts: LinkClientOptions = {},
  ) {
    this.msPerByte = 10_000 / (opts.baud ?? 115_200);
    this.baseTimeoutMs = opts.baseTimeoutMs ?? 1000;
    this.retries = opts.retries ?? 2;
    this.maxBody = opts.maxBody ?? 65_536;
    this.deframer = new Deframer(this.maxBody);
    this.inShards = opts.fec === 'on';
    this.fecAllowed = opts.fec !== 'off';
    this.fecAuto = (opts.fec ?? 'auto') === 'auto';
    this.harq = opts.harq === false ? 'no' : 'unknown';
    const harqAllowed = opts.harq !== false;
    this.deframer.onNeed = (need) => {
      if (!harqAllowed) return;
      this.harq = 'yes';
      const bodies = this.resender.answer(need);
      if (bodies.length > 0) {
        // The frame comes together a round later, and the ones behind it are held until then:
        // every answer waited for gets the line time of the repair and of a round trip more.
        // Bounded: a sender answers at most 2 NEEDs for each of its last 8 frames.
        const more = this.baseTimeoutMs / 4 + 2 * (bodies.length * (bodies[0]!.length + 2) + 8300) * this.msPerByte;
        for (const extend of this.deadlines) extend(more);
      }
      if (bodies.length > 0) void this.write(shardsOnLine(bodies), true).catch(() => undefined);
    };
    transport.onData((chunk) => this.receive(chunk));
    transport.onClose((err) => this.fail(new LinkClosedError(err)));
  }

  get framerStats() {
    return this.deframer.stats;
  }

  /** Whether frames now go out as FEC shards. */
  get shards(): boolean {
    return this.inShards;
  }

  /** FEC counters: shards received whole and damaged, frames put together from them. */
  get shardStats() {
    return this.deframer.shards.stats;
  }

  /**
   * A frame sent was lost on a line the device is heard on (a go-back, an overdue answer): from
   * now on frames go as shards, or, if they already do, are planned for a worse line.
   */
  lineLost(): void {
    // A frame lost while sending NEED-round plans to a device that never asked for a shard: it
    // does not take NEEDs (or they do not reach it): whole plans from now on.
    if (this.inShards && this.harq === 'unknown' && this.harqFrames > 0) this.harq = 'no';
    if (this.inShards) this.deframer.shards.worse();
    else if (this.fecAllowed) {
      this.inShards = true;
      this.shardsSince = this.deframer.shards.stats.framesDecoded;
      // What the device said of the line before it went back to plain frames is old news: its
      // next frames in shards say it again (else a "clean" report would end shards at once).
      this.deframer.shards.peerLambda = 0;
    }
  }

  /** The line bytes a frame body of `len` bytes takes now (as shards, or plain). */
  wireBytes(len: number): number {
    if (!this.inShards) return len + 4;
    return planShardsAtMost(len, this.deframer.shards.sendLambda(len))?.wire ?? len + 4;
  }

  /**
   * The chunk size (data bytes, at most `cap`) that carries the most over this line now, when a
   * chunk frame has `overhead` bytes besides its data; undefined on a plain link (the bulk
   * sender's own sizer decides there).
   */
  bestChunk(cap: number, overhead: number): number | undefined {
    if (!this.inShards) return undefined;
    return Math.max(1, bestFrame(this.deframer.shards.sendLambda(cap + overhead), cap + overhead, overhead) - overhead);
  }

  /** A frame as it goes on the line now: plain, or as shards planned for the line. */
  private onLine(frame: Uint8Array): Uint8Array {
    const sh = this.deframer.shards;
    // The device says the line is clean (a loss that was a stall, not noise, or noise that went):
    // plain frames again, which cost less there; the next loss brings shards back.
    // Only after enough frames in shards to trust it, twice as many after each return to plain:
    // a line that loses an 8 KiB frame now and then must not flap between the two.
    if (this.inShards && this.fecAuto && sh.peerLambda > 0 && sh.peerLambda < PLAIN_BELOW && sh.stats.framesDecoded - this.shardsSince >= this.plainAfter) {
      this.inShards = false;
      this.plainAfter *= 2;
    }
    if (!this.inShards) return frame;
    const lambda = sh.sendLambda(frame.length);
    const harq = this.harq !== 'no' && frame.length > HARQ_ABOVE;
    const found = (harq ? planShardsHarq(frame.length - 2, lambda) : undefined) ?? planShardsAtMost(frame.length - 2, lambda);
    if (!found) return frame;
    const plan = found;
    this.shardId = (this.shardId + 1) & 0xff;
    const body = cobsDecode(frame.subarray(1, frame.length - 1));
    if (!body) return frame;
    const send = plan.send ?? plan.n;
    const src = new ShardSource(body, this.shardId, plan, seenByte(sh.line.lambda));
    const shards: Uint8Array[] = [];
    for (let i = 0; i < send; i++) shards.push(src.shard(i));
    if (send < plan.n) this.harqFrames++;
    this.resender.add(src, send, Math.exp(-lambda * (plan.s + 10)));
    const line = shardsOnLine(shards);
    const out = new Uint8Array(1 + line.length);
    out.set(line, 1);
    return out;
  }

  /**
   * Answers being waited for, each with a way to push its deadline back: a frame the device asked
   * more shards of is put together later, and the device holds the frames behind it until then.
   */
  private readonly deadlines = new Set<(ms: number) => void>();

  /** `answer`, or TIMEOUT after `ms` (pushed back by each NEED this host answers). */
  private awaitAnswer<T>(answer: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
    let timer: NodeJS.Timeout | undefined;
    let deadline = performance.now() + ms;
    let extend: ((more: number) => void) | undefined;
    const t = new Promise<typeof TIMEOUT>((resolve) => {
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => resolve(TIMEOUT), Math.max(0, deadline - performance.now()));
      };
      extend = (more: number) => {
        deadline += more;
        arm();
      };
      arm();
    });
    this.deadlines.add(extend!);
    return Promise.race([answer, t]).finally(() => {
      clearTimeout(timer);
      this.deadlines.delete(extend!);
    });
  }

  /** NEEDs answered and shards sent for them (docs/protocol.md 2.6). */
  get repairStats() {
    return { ...this.resender.stats, harq: this.harq, harqFrames: this.harqFrames };
  }

  /**
   * Bytes to the transport in slices ending at a delimiter, at most two slices handed over at a
   * time, so that repair shards (`urgent`: answering a NEED) go out within a slice or two rather
   * than behind every chunk in flight. Resolves when the last of `bytes` is handed over.
   */
  private write(bytes: Uint8Array, urgent = false): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<void>((resolve, reject) => {
      const job = { bytes, offset: 0, resolve, reject };
      if (urgent) this.writeQueue.unshift(job);
      else this.writeQueue.push(job);
      this.pump();
    });
  }

  private pump(): void {
    while (this.writesInFlight < 2 && this.writeQueue.length > 0) {
      const job = this.writeQueue[0]!;
      const { bytes, offset } = job;
      let end = bytes.length;
      if (end - offset > WRITE_SLICE) {
        // End at a delimiter, so what goes next (a repair) starts a frame of its own.
        const before = bytes.lastIndexOf(0, offset + WRITE_SLICE - 1);
        const after = before > offset ? before : bytes.indexOf(0, offset + WRITE_SLICE);
        end = after === -1 ? bytes.length : after + 1;
      }
      const last = end === bytes.length;
      job.offset = end;
      if (last) this.writeQueue.shift();
      this.writesInFlight++;
      this.transport.write(bytes.subarray(offset, end)).then(
        () => {
          this.writesInFlight--;
          if (last) job.resolve();
          this.pump();
        },
        (e: unknown) => {
          this.writesInFlight--;
          if (!last) {
            const at = this.writeQueue.indexOf(job);
            if (at >= 0) this.writeQueue.splice(at, 1);
          }
          job.reject(e);
          this.pump();
        },
      );
    }
  }

  onEvent(listener: (m: Message) => void): void {
    this.eventListeners.push(listener);
  }

  /** Ask the device for its limits; every later decision (frame size, window) uses them. */
  async negotiate(signal?: AbortSignal): Promise<DeviceParams> {
    // Only what a host uses: a reply small enough to arrive whole on a noisy line (80 bytes, not 150).
    const p = await this.request(Group.SYSTEM, SystemCmd.PARAMS, { versions: [...SUPPORTED_VERSIONS], only: [...PARAMS_USED] }, { signal });
    const versions = Array.isArray(p['versions']) ? (p['versions'] as number[]) : [];
    if (!versions.some((v) => SUPPORTED_VERSIONS.includes(v))) {
      throw new LinkError(Rc.BAD_VERSION, `device speaks protocol ${versions.join(', ') || 'none'}; host speaks ${SUPPORTED_VERSIONS.join(', ')}`);
    }
    // A device that tells its line rate (PARAMS `baud`: a UART, or an emulated module's pacing)
    // slower than the one this host assumed: its replies are timed by the slower end, or a fast
    // host would call a slow line dead. Taken down to DEVICE_BAUD_FLOOR only: a lying device must
    // not stretch every timeout to hours (a slower line needs --baud on the host).
    const baud = p['baud'];
    if (typeof baud === 'number' && Number.isSafeInteger(baud) && baud > 0) {
      const msPerByte = 10_000 / Math.max(baud, DEVICE_BAUD_FLOOR);
      if (msPerByte > this.msPerByte) this.msPerByte = msPerByte;
    }
    // Limits the host sizes frames, chunks and its window by: whole numbers in range, or the
    // device is not one this host can talk to (a huge maxChunk would be sent and never answered,
    // a window of 0 would send nothing).
    const limit = (name: string, lo: number, hi: number): number => {
      const v = p[name];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) {
        throw new PeerDataError(`the device's parameters are unusable: ${name} ${JSON.stringify(v)?.slice(0, 20) ?? 'missing'} is not a whole number from ${lo} to ${hi}; it is not a genuine qkt device or it is damaged`);
      }
      return v;
    };
    // Judged by the shard exchange alone: bytes a module writes as it comes up are not the line.
    if (this.tentativeShards && this.deframer.shards.stats.badShards === this.damageAtTentative) this.inShards = false;
    this.tentativeShards = false;
    const maxFrame = limit('maxFrame', 64, this.maxBody);
    limit('window', 1, 1024);
    limit('maxChunk', 1, maxFrame);
    this.params = p as unknown as DeviceParams;
    return this.params;
  }

  /** Send one request and wait for its response; throws LinkError for an error reply. */
  async request(group: number, command: number, payload: Payload, opts: RequestOptions = {}): Promise<Payload> {
    // BUSY means the device's receive window was full and the request was not run (docs/
    // protocol.md 4.x): send it again after a short, growing pause, a bounded number of times.
    // A device slowed by load (a KMD sealing a batch under its lock) must not fail the command.
    for (let busy = 0; ; busy++) {
      try {
        return await this.requestOnce(group, command, payload, opts);
      } catch (e) {
        if (!(e instanceof LinkError && e.rc === Rc.BUSY) || busy >= BUSY_RETRIES || this.closed) throw e;
        await sleep(Math.min(400, 25 * 2 ** busy), opts.signal);
      }
    }
  }

  private async requestOnce(group: number, command: number, payload: Payload, opts: RequestOptions): Promise<Payload> {
    if (this.closed) throw this.closed;
    throwIfStopped(opts.signal);
    const seq = this.nextSeq();
    const plain = encodeMessage({ kind: Kind.REQUEST, group, command, seq, payload });
    let frame = this.onLine(plain);
    const timeoutMs = () => opts.timeoutMs ?? this.answerTimeoutMs(plain.length, opts.expectBytes ?? 64);
    const attempts = 1 + (opts.retries ?? this.retries);
    // Damaged frames and stray bytes seen since the first attempt (see NOISY_ATTEMPTS).
    const damage = () => this.deframer.stats.corrupt + this.deframer.stats.oversize + this.deframer.stats.droppedBytes;
    const damageAtStart = damage();
    const startedAt = performance.now();
    // The device is there but the line is noisy: frames arrived damaged, or anything at all came
    // (a stray answer, an event) since this request was first sent. A port where nothing answers
    // gives neither and fails after the usual attempts.
    const heard = () => damage() > damageAtStart || this.lastReceiveAt > startedAt;
    const mayPersist = opts.persistWhileNoisy ?? opts.retries !== 0;
    const opening = group === Group.SYSTEM && command === SystemCmd.PARAMS;
    const answer = new Promise<Payload>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, group, command });
    });
    answer.catch(() => undefined); // settled below; avoid an unhandled rejection in between
    try {
      let attempt = 1;
      for (; attempt <= attempts || (mayPersist && attempt <= NOISY_ATTEMPTS && heard()); attempt++) {
        if (attempt > 1) {
          // Opening a session on a line so bad that not even a plain PARAMS gets through (nothing
          // comes back): the next attempts go as shards, planned for a bad line (docs/protocol.md
          // 2.6). Taken back after the reply if the line showed no damage at all.
          if (opening && this.fecAllowed && !this.inShards) {
            this.inShards = true;
            this.tentativeShards = true;
            this.damageAtTentative = this.deframer.shards.stats.badShards;
            this.shardsSince = this.deframer.shards.stats.framesDecoded;
            this.deframer.shards.worse();
            this.deframer.shards.worse();
          }
          // Each attempt as the line now needs it: shards after a loss, planned for what is known.
          frame = this.onLine(plain);
        }
        // A link that takes no bytes (a pty whose reader died, flow control held off) must not
        // hang the host: the write gets the line time of everything queued ahead of it, and more.
        this.unsentBytes += frame.length;
        const writeMs = this.baseTimeoutMs + 2 * this.unsentBytes * this.msPerByte;
        let sent: void | typeof TIMEOUT;
        try {
          sent = await abortable(raceTimeout(this.write(frame), writeMs), opts.signal);
        } catch (e) {
          // A write the transport refused: the cable is gone (a paced link's queue is failed with
          // its own error when the link under it closes). The same error as a close, for callers.
          if (e instanceof StoppedError) throw e;
          throw this.closed ?? new LinkClosedError(e instanceof Error ? e : undefined);
        } finally {
          this.unsentBytes -= frame.length;
        }
        if (sent === TIMEOUT) throw new LinkTimeoutError(group, command, writeMs, attempt, 'the link takes no bytes');
        // The timer starts once the bytes have left (a paced link takes its time to send them).
        const result = await abortable(this.awaitAnswer(answer, timeoutMs()), opts.signal);
        if (result !== TIMEOUT) return result;
        // The device is there: the line lost the request or its answer (to shards, or worse ones).
        // Nothing heard while sending shards: the request itself was likely lost; stronger ones.
        if (heard()) this.lineLost();
        else if (this.inShards) this.deframer.shards.worse();
      }
      const tried = attempt - 1;
      throw new LinkTimeoutError(group, command, timeoutMs(), tried, tried > attempts ? 'the line damages most frames' : undefined);
    } finally {
      this.pending.delete(seq);
    }
  }

  async close(): Promise<void> {
    this.fail(new LinkClosedError());
    await this.transport.close();
  }

  private nextSeq(): number {
    // 16-bit sequence numbers; skip ones still pending after a wrap.
    do this.seq = (this.seq + 1) & 0xffff;
    while (this.pending.has(this.seq));
    return this.seq;
  }

  /** Milliseconds a byte takes on the line (10 bits at the slower of the host's and the device's rate). */
  get lineMsPerByte(): number {
    return this.msPerByte;
  }

  /** The answer timeout of one attempt of a request of `requestBytes` (section 4.3). */
  answerTimeoutMs(requestBytes: number, expectBytes = 64): number {
    const bytes = this.inShards ? this.wireBytes(requestBytes) + this.wireBytes(expectBytes + 12) : requestBytes + expectBytes;
    return this.baseTimeoutMs + 2 * bytes * this.msPerByte;
  }

  private receive(chunk: Uint8Array): void {
    this.lastReceiveAt = performance.now();
    for (const body of this.deframer.push(chunk)) {
      const decoded = decodeMessage(body);
      if (!decoded.ok) continue; // a device never sends undecodable frames; treat as line noise
      const m = decoded.message;
      if (m.kind === Kind.EVENT) {
        for (const l of this.eventListeners) l(m);
        continue;
      }
      const p = this.pending.get(m.seq);
      if (!p || p.group !== m.group || p.command !== m.command || m.kind === Kind.REQUEST) {
        this.strayResponses++;
        continue;
      }
      this.pending.delete(m.seq);
      if (m.kind === Kind.ERROR) p.reject(errorFromPayload(m.payload));
      else {
        const bad = checkReply(m.group, m.command, m.payload); // numbers past 2^53 (reply-check.ts)
        if (bad) p.reject(bad);
        else p.resolve(m.payload);
      }
    }
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    // Bytes not yet handed to the transport never will be: their writers hear it now.
    for (const job of this.writeQueue.splice(0)) job.reject(e);
  }
}

const TIMEOUT = Symbol('timeout');

function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<typeof TIMEOUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
