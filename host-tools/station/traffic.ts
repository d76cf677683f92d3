// Service traffic from a terminal to the master station (issue 12; docs/traffic.md): the paper's
// user classes A-E (section VI, Table I) as traffic profiles of the grid's own messages, sent as
// a terminal's front end sends them: each message sealed by the terminal's crypto module in a
// KEYS session, then handed to the station as the terminal's UPLINK, which opens it. What it
// measures comes out of that traffic: access delay (from the moment the message exists to the
// station's answer that it opened it), cipher rate (service-message bits the station received,
// per second), key use rate (key bits both sides consumed per second, over the KMD's supply rate),
// and packet loss (messages not opened within the deadline, refused or never answered).
import { prng } from '../../firmware/flash/faults.js';
import { Group, KeysCmd, StationCmd } from '../../firmware/link/groups.js';
import type { StationRequester } from './broker.js';
import { LinkError, Rc, rcName } from '../../firmware/link/errors.js';
import type { LinkClient } from '../link/client.js';
import type { AeadSuite } from '../../firmware/crypto/suites.js';
import { DEFAULT_MAX_KEY_BITS } from '../../firmware/keypool/key-pool.js';

/** One kind of service message: its size on the terminal side and how often it comes. */
export interface MessageKind {
  name: string;
  /** What it is, in words (the standard it follows). */
  what: string;
  /** Plaintext bytes of one message. */
  bytes: number;
  /** Messages per interval unit T, on average (a Poisson stream). */
  perT: number;
}

export type ClassId = 'A' | 'B' | 'C' | 'D' | 'E';

export interface TrafficClass {
  id: ClassId;
  /** The paper's name of the user class. */
  name: string;
  kinds: MessageKind[];
}

// Message sizes. IEC 60870-5-104 (distribution automation): an APDU is 0x68, a length octet of at
// most 253, then the control field and ASDU, so at most 255 octets on the wire (IEC 60870-5-104
// 5.1). A measured-value ASDU of type 13 (M_ME_NC_1, short float with quality) without SQ takes
// 6 octets of header and 3 + 5 per object: 30 objects fill one APDU (2 + 4 + 6 + 30 x 8 = 252).
// A single-point event with CP56Time2a (type 30, M_SP_TB_1) takes 3 + 1 + 7 per object.
// Electricity information collection (DL/T 645-2007 frames: 0x68, 6-octet address, 0x68,
// control, length, data, checksum, 0x16; 12 octets of frame): an energy reading answers one data
// identifier of 4 octets with 4 registers of 4 octets; a load-profile block carries 96 points of
// 2 octets each (a day at 15 minutes) in one frame.
const APDU_MEASURED = 2 + 4 + 6 + 30 * 8; // 252
const APDU_EVENTS = 2 + 4 + 6 + 4 * (3 + 1 + 7); // 56
const METER_READING = 12 + 4 + 4 * 4; // 32
const LOAD_PROFILE = 12 + 4 + 96 * 2; // 208

const kind = (name: string, what: string, bytes: number, perT: number): MessageKind => ({ name, what, bytes, perT });

const automation = (measured: number, events: number): MessageKind[] => [
  kind('measured', 'IEC 104 M_ME_NC_1, 30 points', APDU_MEASURED, measured),
  kind('events', 'IEC 104 M_SP_TB_1, 4 events', APDU_EVENTS, events),
];
const metering = (readings: number, profiles: number): MessageKind[] => [
  kind('reading', 'DL/T 645 energy reading', METER_READING, readings),
  kind('profile', 'DL/T 645 load-profile block', LOAD_PROFILE, profiles),
];

/**
 * The paper's user classes as profiles (docs/traffic.md says why each rate): larger users carry
 * distribution automation (measured values every few seconds, events) on top of metering; small
 * ones only metering. Rates are per T (one minute in the field).
 */
export const CLASSES: Record<ClassId, TrafficClass> = {
  A: { id: 'A', name: 'large special transformer', kinds: [...automation(240, 12), ...metering(60, 4)] },
  B: { id: 'B', name: 'medium special transformer', kinds: [...automation(220, 10), ...metering(60, 4)] },
  C: { id: 'C', name: 'three-phase industry and commerce', kinds: [...automation(210, 8), ...metering(60, 4)] },
  D: { id: 'D', name: 'single-phase industry and commerce', kinds: metering(330, 55) },
  E: { id: 'E', name: 'residential users', kinds: metering(300, 50) },
};

export function isClassId(x: unknown): x is ClassId {
  return typeof x === 'string' && Object.hasOwn(CLASSES, x);
}

/** Plaintext bits per second a class offers on average, with T = `tMs`. */
export function offeredBitsPerSecond(c: TrafficClass, tMs: number): number {
  return c.kinds.reduce((s, k) => s + k.bytes * 8 * k.perT, 0) / (tMs / 1000);
}

export interface Scheduled {
  /** When the message exists, in ms from the start. */
  atMs: number;
  kind: string;
  bytes: number;
}

/**
 * The messages of `durationMs` of a class's traffic: each kind a Poisson stream (exponential
 * gaps, seeded), merged in time order. `scale` multiplies every rate (a load sweep).
 */
export function schedule(c: TrafficClass, o: { tMs: number; durationMs: number; seed: number; scale?: number }): Scheduled[] {
  return [...scheduleStream(c, o)];
}

/**
 * The same schedule, message by message as time goes on: a month-long run holds one pending time
 * per kind, not millions of messages.
 */
export function* scheduleStream(c: TrafficClass, o: { tMs: number; durationMs: number; seed: number; scale?: number }): Generator<Scheduled> {
  if (!(o.tMs > 0) || !(o.durationMs >= 0)) throw new RangeError('tMs must be > 0 and durationMs >= 0');
  const scale = o.scale ?? 1;
  if (!(scale > 0)) throw new RangeError('scale must be > 0');
  const streams = c.kinds.map((k, i) => {
    const rnd = prng((o.seed * 31 + i + 1) >>> 0);
    const meanGap = o.tMs / (k.perT * scale);
    const gap = () => -Math.log(1 - rnd()) * meanGap;
    return { k, next: gap(), gap };
  });
  for (;;) {
    let first: (typeof streams)[number] | undefined;
    for (const st of streams) if (st.next < o.durationMs && (!first || st.next < first.next)) first = st;
    if (!first) return;
    yield { atMs: first.next, kind: first.k.name, bytes: first.k.bytes };
    first.next += first.gap();
  }
}

/** Messages a schedule holds on average (its progress total). */
export function expectedMessages(c: TrafficClass, o: { tMs: number; durationMs: number; scale?: number }): number {
  return Math.round((c.kinds.reduce((s, k) => s + k.perT, 0) * (o.scale ?? 1) * o.durationMs) / o.tMs);
}

/**
 * The bytes of one message: framed as its standard frames it (IEC 104 APDU or DL/T 645 frame),
 * with seeded values. The station only opens them; the framing makes the sizes honest.
 */
export function messageBytes(k: Pick<MessageKind, 'name' | 'bytes'>, seq: number, rnd: () => number): Uint8Array {
  const b = new Uint8Array(k.bytes);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
  if (k.name === 'measured' || k.name === 'events') {
    // APDU: start 0x68, length, I-format control (send and receive sequence numbers), ASDU type.
    b[0] = 0x68;
    b[1] = k.bytes - 2;
    b[2] = (seq << 1) & 0xfe;
    b[3] = (seq >>> 7) & 0xff;
    b[4] = 0;
    b[5] = 0;
    b[6] = k.name === 'measured' ? 13 : 30;
  } else if (b.length >= 12) {
    // DL/T 645: 0x68, address, 0x68, control 0x91 (a slave's normal answer), length, ..., 0x16.
    b[0] = 0x68;
    b[7] = 0x68;
    b[8] = 0x91;
    b[9] = k.bytes - 12;
    let cs = 0;
    for (let i = 0; i < b.length - 2; i++) cs = (cs + b[i]!) & 0xff;
    b[b.length - 2] = cs;
    b[b.length - 1] = 0x16;
  }
  return b;
}

export interface TrafficOptions {
  /** The terminal's crypto module (negotiated). */
  terminal: LinkClient;
  /** The station: a connection with this terminal's certificate (negotiated), or its requester on a broker (broker.ts). */
  station: StationRequester;
  terminalId: string;
  cls: TrafficClass;
  /** The interval unit T in ms (60,000 in the field). */
  tMs: number;
  durationMs: number;
  seed: number;
  mode: 'otp' | 'aead';
  /** AEAD only: the session's suite (docs/protocol.md, KEYS NEGOTIATE); default the module's, aes-256-gcm. */
  suite?: AeadSuite;
  /** The KMD's key supply, bits per second (the key use rate's denominator). */
  supplyBitsPerSecond: number;
  /** A message opened later than this after it existed counts as lost. */
  deadlineMs: number;
  scale?: number;
  /** Called after each message (progress). */
  onMessage?: (done: number, total: number) => void;
  /** Stop sending (Ctrl-C): the messages on their way are waited for, and the run reports what it did. */
  signal?: AbortSignal;
  /** Called with each opened message's access delay in ms (a fleet's quantiles over all its terminals). */
  onOpened?: (delayMs: number) => void;
  now?: () => number;
}

export interface TrafficResult {
  terminalId: string;
  class: ClassId;
  mode: 'otp' | 'aead';
  /** AEAD: the session's suite. */
  suite?: AeadSuite;
  tMs: number;
  seconds: number;
  messages: number;
  /** Opened by the station within the deadline. */
  delivered: number;
  /** Opened, but later than the deadline. */
  late: number;
  /** Refused by the module or the station, or not answered. */
  failed: number;
  /** (late + failed) / messages. */
  lossRate: number;
  accessDelayMs: { median: number; p99: number; max: number } | null;
  plainBits: number;
  /** Bits of sealed service messages the station opened. */
  cipherBits: number;
  cipherBitsPerSecond: number;
  /** Key bits the station consumed (the module consumed the same). */
  keyBits: number;
  keyBitsPerSecond: number;
  supplyBitsPerSecond: number;
  /** keyBitsPerSecond / supplyBitsPerSecond. */
  keyUseRate: number;
  /** Reasons of failed messages, counted. */
  failures: Record<string, number>;
  /** Why the run ended before its time: the module's pool ran dry (KEYS_EXHAUSTED), or it was stopped (`stopped`). */
  stoppedBy?: string;
}

/** The q-quantile of ascending values (nearest rank), 0 for none. */
function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Most key bits one UPLINK answer may say the station took: a message's own keys and any it
 * burned on the way are keys of one terminal's pool, and a pool holds at most 8 Mbit; a station
 * that says more is lying (it would inflate the key use rate).
 */
const MAX_UPLINK_KEY_BITS = DEFAULT_MAX_KEY_BITS;

const STOPPED = Symbol('stopped');
/** `p`, or STOPPED as soon as `signal` aborts (the promise is left to settle on its own). */
function untilStopped<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof STOPPED> {
  if (!signal) return p;
  if (signal.aborted) return Promise.resolve(STOPPED);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(STOPPED);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** After a stop signal, how long the answers on their way are waited for. */
const STOP_WAIT_MS = 1500;

/**
 * Access delays for quantiles, bounded: every one up to `size`, then a uniform sample of them
 * (reservoir sampling, seeded), so a month-long run or a large fleet holds a bounded array.
 */
export class DelaySample {
  readonly #kept: number[] = [];
  #count = 0;
  #max = 0;
  readonly #rnd: () => number;
  constructor(
    seed: number,
    private readonly size = 100_000,
  ) {
    this.#rnd = prng(seed);
  }
  add(d: number): void {
    this.#count++;
    if (d > this.#max) this.#max = d;
    if (this.#kept.length < this.size) this.#kept.push(d);
    else {
      const j = Math.floor(this.#rnd() * this.#count);
      if (j < this.size) this.#kept[j] = d;
    }
  }
  get count(): number {
    return this.#count;
  }
  /** Median, p99 and max in ms (3 decimals), or null when none was added. */
  summary(): { median: number; p99: number; max: number } | null {
    if (this.#count === 0) return null;
    const sorted = Float64Array.from(this.#kept).sort();
    return { median: round3(quantile(sorted, 0.5)), p99: round3(quantile(sorted, 0.99)), max: round3(this.#max) };
  }
}

/** Wait `ms`, or less if `signal` aborts first. */
function sleepUnless(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Send a class's traffic for `durationMs` as the terminal's front end: one KEYS session on the
 * module for the run, each message sealed when it exists (the module seals one at a time, in
 * order), then sent as an UPLINK to the station, up to the station's window of uplinks in
 * flight. Rates are over the run's wall time, from the start to the last answer.
 */
export async function runTraffic(o: TrafficOptions): Promise<TrafficResult> {
  const now = o.now ?? (() => performance.now());
  const sched = { tMs: o.tMs, durationMs: o.durationMs, seed: o.seed, ...(o.scale !== undefined ? { scale: o.scale } : {}) };
  const expected = expectedMessages(o.cls, sched);
  let sent = 0;
  let stoppedBy: string | undefined;
  const rnd = prng(o.seed ^ 0x5eed);
  const delays = new DelaySample(o.seed ^ 0xde1a);
  const failures: Record<string, number> = {};
  let late = 0;
  let plainBits = 0;
  let cipherBits = 0;
  let keyBits = 0;
  if (o.suite !== undefined && o.mode !== 'aead') throw new RangeError('a suite goes with mode aead');
  const neg = await o.terminal.request(Group.KEYS, KeysCmd.NEGOTIATE, o.mode === 'otp' ? { mode: 'otp', enc: 'any', auth: 'any' } : { mode: 'aead', enc: 'any', ...(o.suite ? { suite: o.suite } : {}) });
  const s = neg['s'];
  const start = now();
  const fail = (e: unknown) => {
    // Counted by kind, never with message text from a peer beyond its code name.
    const why = e instanceof LinkError ? rcName(e.rc) : e instanceof Error ? (e.name === 'Error' ? e.message : e.name) : 'error';
    failures[why] = (failures[why] ?? 0) + 1;
  };
  // Uplinks in flight at once: the station's window (as an IEC 104 link keeps up to k APDUs
  // unacknowledged), so a slow link is filled rather than idle for every round trip.
  const window = Math.max(1, Math.min(o.station.params?.window ?? 1, 64));
  const inflight = new Set<Promise<void>>();
  let done = 0;
  try {
    for (const m of scheduleStream(o.cls, sched)) {
      const wait = start + m.atMs - now();
      if (wait > 0) await sleepUnless(wait, o.signal);
      if (o.signal?.aborted) {
        stoppedBy = 'stopped';
        break;
      }
      const i = sent++;
      const data = messageBytes({ name: m.kind, bytes: m.bytes }, i, rnd);
      let sealed: unknown;
      try {
        // The module seals in order, one at a time (its session counter).
        const seal = await untilStopped(o.terminal.request(Group.KEYS, KeysCmd.SEAL, { s: s as number, d: data }), o.signal);
        if (seal === STOPPED) {
          // Stopped while the module sealed (a module that stopped answering): its keys may be spent.
          failures['unanswered when stopped'] = (failures['unanswered when stopped'] ?? 0) + 1;
          stoppedBy = 'stopped';
          break;
        }
        sealed = seal['m'];
        if (!(sealed instanceof Uint8Array)) throw new Error('no sealed message');
      } catch (e) {
        fail(e);
        o.onMessage?.(++done, Math.max(expected, sent));
        // The pool ran dry: every later message would be refused too.
        if (e instanceof LinkError && e.rc === Rc.KEYS_EXHAUSTED) {
          stoppedBy = rcName(e.rc);
          break;
        }
        continue;
      }
      const msg = sealed;
      const p: Promise<void> = o.station
        // Never sent twice: an UPLINK is not idempotent (its keys are taken), and a resend after
        // the station's cache of recent answers moved on would be refused as a replay of a
        // message it opened. One wait, long past the deadline; no answer by then is a loss.
        .request(Group.STATION, StationCmd.UPLINK, { t: o.terminalId, m: msg }, { retries: 0, timeoutMs: Math.max(30_000, 10 * o.deadlineMs) })
        .then((up) => {
          const delay = now() - (start + m.atMs);
          if (up['n'] !== data.length) throw new Error('opened to other bytes');
          const kb = up['keyBits'];
          // The station's word, checked: a whole number of bits. It may be more than this message
          // costs: the station counts the keys it burned on the way (a message a power cut took
          // at the terminal, before this one), which the terminal spent too.
          if (typeof kb !== 'number' || !Number.isSafeInteger(kb) || kb < 0 || kb > MAX_UPLINK_KEY_BITS) throw new Error('a malformed UPLINK answer');
          plainBits += data.length * 8;
          cipherBits += msg.length * 8;
          keyBits += kb;
          delays.add(delay);
          o.onOpened?.(delay);
          if (delay > o.deadlineMs) late++;
        })
        .catch(fail)
        .finally(() => {
          inflight.delete(p);
          o.onMessage?.(++done, Math.max(expected, sent));
        });
      inflight.add(p);
      while (inflight.size >= window && !o.signal?.aborted) await untilStopped(Promise.race(inflight), o.signal);
      if (o.signal?.aborted) {
        stoppedBy = 'stopped';
        break;
      }
    }
    if (stoppedBy === 'stopped') {
      // Stopped by a signal: the answers on their way get a moment (the CLI ends a command 2 s
      // after the signal), then the run reports; an uplink still unanswered counts as failed
      // (the station may yet open it).
      const unanswered = await Promise.race([Promise.all(inflight).then(() => 0), new Promise<number>((r) => setTimeout(() => r(inflight.size), STOP_WAIT_MS).unref())]);
      if (unanswered > 0) failures['unanswered when stopped'] = (failures['unanswered when stopped'] ?? 0) + unanswered;
    } else await Promise.all(inflight);
  } finally {
    // After a stop, briefly: the command has 2 s in all, and the module may be the one not answering.
    await o.terminal.request(Group.KEYS, KeysCmd.CLOSE, { s: s as number }, stoppedBy === 'stopped' ? { timeoutMs: 300, retries: 0 } : {}).catch(() => undefined);
  }
  // Rates over the time the run took: its duration, or less when it stopped early.
  const seconds = Math.max(1e-3, stoppedBy ? now() - start : Math.max(o.durationMs, now() - start)) / 1000;
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  const keyBitsPerSecond = keyBits / seconds;
  return {
    terminalId: o.terminalId,
    class: o.cls.id,
    mode: o.mode,
    ...(o.mode === 'aead' ? { suite: o.suite ?? 'aes-256-gcm' } : {}),
    tMs: o.tMs,
    seconds: round3(seconds),
    messages: sent,
    delivered: delays.count - late,
    late,
    failed,
    lossRate: sent === 0 ? 0 : round3((late + failed) / sent),
    ...(stoppedBy ? { stoppedBy } : {}),
    accessDelayMs: delays.summary(),
    plainBits,
    cipherBits,
    cipherBitsPerSecond: Math.round(cipherBits / seconds),
    keyBits,
    keyBitsPerSecond: Math.round(keyBitsPerSecond),
    supplyBitsPerSecond: o.supplyBitsPerSecond,
    keyUseRate: round3(keyBitsPerSecond / o.supplyBitsPerSecond),
    failures,
  };
}

export interface ClassForecast {
  class: ClassId;
  /** Key bits a second the class's traffic costs the terminal (OTP), on average. */
  keyBitsPerSecond: number;
  /** Key bits a second reaching the terminal online (0: offline supply only, by carrier). */
  onlineBitsPerSecond: number;
  /** Seconds until the pool runs dry at that use; null when the online supply covers it. */
  secondsLeft: number | null;
  /** When, as ISO 8601 UTC; null as above. The next field visit is due before it. */
  runsOutAt: string | null;
}

/** OTP key bits a second a class's traffic costs on average: each message's pad and its 256-bit MAC key. */
export function otpKeyBitsPerSecond(c: TrafficClass, tMs = 60_000): number {
  return c.kinds.reduce((s, k) => s + (k.bytes * 8 + 256) * k.perT, 0) / (tMs / 1000);
}

/**
 * When a pool of `storedBits` runs dry under a class's traffic (OTP, T one minute), with
 * `onlineBitsPerSecond` of key arriving online: the date the next carrier visit is due by.
 */
export function forecastFor(storedBits: number, c: TrafficClass, onlineBitsPerSecond: number, now = Date.now()): ClassForecast {
  const use = otpKeyBitsPerSecond(c);
  const net = use - onlineBitsPerSecond;
  const secondsLeft = net > 0 ? Math.floor(storedBits / net) : null;
  return {
    class: c.id,
    keyBitsPerSecond: Math.round(use),
    onlineBitsPerSecond,
    secondsLeft,
    runsOutAt: secondsLeft === null ? null : new Date(now + secondsLeft * 1000).toISOString(),
  };
}
