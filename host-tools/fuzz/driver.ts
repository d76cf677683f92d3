// The host side of a fuzz run: writes the generator's inputs to one link of a module, and between
// them proves the module is still there: every `syncEvery` inputs a PARAMS must be answered (it
// queues behind the inputs, so the inputs ran; it also empties the module's reply cache), every
// `probeEvery` a STATUS, each within the link timeout. A timeout is a hang, a module process
// that exits or an error escaping the in-process module is a crash, an INTERNAL reply a fault in a
// handler; each failure names the seed and the window of input indexes, with their bytes in hex.
import { Deframer } from '../../firmware/link/framer.js';
import { decodeMessage, encodePayload } from '../../firmware/link/codec.js';
import type { Payload } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { Rc } from '../../firmware/link/errors.js';
import type { Transport } from '../../firmware/link/transport.js';
import { FuzzGenerator, HOST_SEQ_BASE, bodyOf, toHex, wireOfBody } from './generator.js';
import type { FuzzInput, Layer } from './generator.js';

export type TargetName = 'in-process' | 'tcp' | 'pty';

/** A module under fuzz, reached through `transport` (the host end of its link). */
export interface FuzzTarget {
  readonly name: TargetName;
  readonly transport: Transport;
  /** The module's terminal id and largest frame body, for the corpus. */
  readonly terminalId: string;
  readonly maxBody: number;
  /** SHA-256 (hex) of the module's whole flash (the image file, or the in-memory NOR array). */
  flashDigest(): Promise<string>;
  /** Why the module is gone (process exit, an error escaping it), or undefined while it runs. */
  crashed(): string | undefined;
  /** As crashed(), after waiting up to `ms` for a crash to be seen (a process exit lands after its socket's close). */
  crashedWithin(ms: number): Promise<string | undefined>;
  /** Errors its handlers threw that were not typed link errors (in-process only: the live logs stay in the process). */
  internalErrors(): string[];
  close(): Promise<void>;
}

export type FailureKind = 'crash' | 'hang' | 'internal' | 'state' | 'closed';

export interface FuzzFailure {
  kind: FailureKind;
  target: TargetName;
  seed: number;
  /** Inputs [from, to] (indexes) sent since the module last answered: one of them, or their sum, did it. */
  from: number;
  to: number;
  message: string;
  inputs: Array<{ index: number; layer: Layer; seed: string; hex: string }>;
}

export interface FuzzRunResult {
  target: TargetName;
  seed: number;
  first: number;
  inputs: number;
  bytes: number;
  seconds: number;
  inputsPerSecond: number;
  syncs: number;
  probes: number;
  retries: number;
  /** Answers that came only after the timeout (then within a second one): windows and how long. Not failures; reported. */
  stalls: Array<{ from: number; to: number; ms: number; message: string }>;
  layers: Record<Layer, number>;
  /** Replies to the inputs: responses, and errors by rc. */
  replies: { responses: number; errors: number; byRc: Record<string, number> };
  pool: { before: unknown; after: unknown };
  flash: { before: string; after: string };
  failures: FuzzFailure[];
}

export interface FuzzRunOptions {
  seed: number;
  /** Index of the first input (a rerun of one window starts there). */
  first?: number;
  count: number;
  /** Most inputs between two syncs (fewer when they hold requests enough to fill the window). */
  syncEvery?: number;
  /** The module's receive window (PARAMS `window`). */
  window?: number;
  probeEvery?: number;
  /** How long the module has to answer a sync or probe (the link timeout). */
  timeoutMs?: number;
  /** Include ADMIN requests with well-formed wrong tokens (counted in flash by design). */
  admin?: boolean;
  /** Stop after this many failures. */
  maxFailures?: number;
  onProgress?: (done: number) => void;
}

class Hang extends Error {
  override readonly name = 'Hang';
}

/** Matches the module's replies to this run's own requests (seqs from HOST_SEQ_BASE up). */
class HostSide {
  private readonly deframer = new Deframer(1 << 17);
  private readonly waiting = new Map<number, { group: number; command: number; done: (p: Payload | 'busy' | Error) => void }>();
  private nextSeq = HOST_SEQ_BASE;
  readonly replies = { responses: 0, errors: 0, byRc: {} as Record<string, number> };
  /** INTERNAL replies since the last take(), with their reasons. */
  internal: string[] = [];
  closed: string | undefined;
  /** Our requests resent because no answer came within the retry time (dropped as a duplicate, or a slow module). */
  retries = 0;

  constructor(private readonly t: Transport) {
    t.onData((chunk) => this.receive(chunk));
    t.onClose((e) => {
      this.closed = e?.message ?? 'closed';
      for (const w of this.waiting.values()) w.done(new Error(`link closed: ${this.closed}`));
      this.waiting.clear();
    });
  }

  private receive(chunk: Uint8Array): void {
    for (const body of this.deframer.push(chunk)) {
      const d = decodeMessage(body);
      if (!d.ok) continue;
      const m = d.message;
      const w = this.waiting.get(m.seq);
      if (w && m.group === w.group && m.command === w.command && (m.kind === Kind.RESPONSE || m.kind === Kind.ERROR)) {
        this.waiting.delete(m.seq);
        if (m.kind === Kind.RESPONSE) w.done(m.payload);
        else if (m.payload['rc'] === Rc.BUSY) w.done('busy');
        else w.done(new Error(`rc ${String(m.payload['rc'])} ${String(m.payload['r'] ?? '')}`));
        continue;
      }
      if (m.kind === Kind.RESPONSE) this.replies.responses++;
      else if (m.kind === Kind.ERROR) {
        this.replies.errors++;
        const rc = String(m.payload['rc']);
        this.replies.byRc[rc] = (this.replies.byRc[rc] ?? 0) + 1;
        if (m.payload['rc'] === Rc.INTERNAL) this.internal.push(`group ${m.group} command ${m.command} seq ${m.seq}: ${String(m.payload['r'] ?? '(no reason)')}`);
      }
    }
  }

  /**
   * One request of ours, answered within `timeoutMs`. Resent under a new seq when answered BUSY
   * or not within `retryMs`: a fuzz input still queued with the same seq makes the module drop ours
   * as its duplicate (4.5), which a new seq gets past.
   */
  async request(group: number, command: number, payload: Payload, timeoutMs: number, retryMs: number): Promise<Payload> {
    const deadline = performance.now() + timeoutMs;
    const payloadBytes = encodePayload(payload);
    for (;;) {
      if (this.closed) throw new Error(`link closed: ${this.closed}`);
      const seq = this.nextSeq;
      this.nextSeq = this.nextSeq === 0xffff ? HOST_SEQ_BASE : this.nextSeq + 1;
      let timer: NodeJS.Timeout | undefined;
      const left = deadline - performance.now();
      if (left <= 0) throw new Hang(`no answer to ${group}/${command} in ${timeoutMs} ms`);
      const answer = new Promise<Payload | 'busy' | Error | 'timeout'>((resolve) => {
        this.waiting.set(seq, { group, command, done: resolve });
        timer = setTimeout(() => resolve('timeout'), Math.min(retryMs, left));
      });
      await this.t.write(wireOfBody(bodyOf({ version: 1, kind: Kind.REQUEST, group, command, seq }, payloadBytes))).catch(() => undefined);
      const a = await answer;
      clearTimeout(timer);
      this.waiting.delete(seq);
      if (a instanceof Error) throw a;
      if (a === 'busy') await new Promise<void>((r) => setImmediate(r));
      else if (a === 'timeout') this.retries++;
      else return a;
    }
  }
}

/** `p`, or a Hang after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Hang(`${what} in ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

const emptyLayers = (): Record<Layer, number> => ({ valid: 0, raw: 0, body: 0, header: 0, cbor: 0, replay: 0, multi: 0 });

/** Fuzz one target: `count` inputs from index `first`, then compare pool status and flash with before. */
export async function fuzzTarget(target: FuzzTarget, o: FuzzRunOptions): Promise<FuzzRunResult> {
  const first = o.first ?? 0;
  const syncEvery = o.syncEvery ?? 16;
  const windowSize = o.window ?? 4;
  const probeEvery = o.probeEvery ?? 256;
  const timeoutMs = o.timeoutMs ?? 5000;
  const retryMs = Math.min(500, timeoutMs);
  const maxFailures = o.maxFailures ?? 5;
  const host = new HostSide(target.transport);
  const gen = new FuzzGenerator(o.seed, { terminalId: target.terminalId, maxBody: target.maxBody, admin: o.admin ?? false });
  const failures: FuzzFailure[] = [];
  const layers = emptyLayers();
  let window: FuzzInput[] = [];
  let written: Promise<unknown> = Promise.resolve();
  const stalls: FuzzRunResult['stalls'] = [];
  let windowFrom = first;
  let bytes = 0;
  let syncs = 0;
  let probes = 0;

  const fail = (kind: FailureKind, message: string, to: number, from = windowFrom) => {
    failures.push({ kind, target: target.name, seed: o.seed, from, to, message, inputs: window.map((x) => ({ index: x.index, layer: x.layer, seed: x.seed, hex: x.writes.map(toHex).join(' ') })) });
  };
  const status = async (): Promise<Payload> => {
    await host.request(Group.SYSTEM, SystemCmd.PARAMS, { versions: [1] }, timeoutMs, retryMs);
    const s = await host.request(Group.SYSTEM, SystemCmd.STATUS, {}, timeoutMs, retryMs);
    if (typeof s['firmware'] !== 'string' || typeof s['pool'] !== 'object') throw new Error('STATUS answered without firmware and pool');
    return s;
  };

  const before = await status();
  const flashBefore = await target.flashDigest();
  const t0 = performance.now();
  let i = first;
  const end = first + o.count;
  let queued = 0;
  for (; i < end && failures.length < maxFailures; i++) {
    const x = gen.input(i);
    layers[x.layer]++;
    window.push(x);
    queued += x.requests;
    // Written one after the other without waiting in between, awaited before the sync. One write at
    // a time: serialport runs writes on libuv's thread pool, and writes blocked on a full pty would
    // take the threads its reads need.
    for (const w of x.writes) {
      bytes += w.length;
      written = written.then(() => target.transport.write(w)).catch(() => undefined);
    }
    const last = i === end - 1;
    const probe = (i - first + 1) % probeEvery === 0 || last;
    // Sync before the next input could overfill the module's window (ours needs a place too), or
    // after `syncEvery` inputs, whichever comes first: the inputs run, few are answered BUSY.
    if (!probe && window.length < syncEvery && queued < windowSize - 2) continue;
    queued = 0;
    try {
      await within(written, timeoutMs, 'the module took no more bytes');
      if (probe) {
        await status();
        probes++;
      } else {
        await host.request(Group.SYSTEM, SystemCmd.PARAMS, {}, timeoutMs, retryMs);
        syncs++;
      }
    } catch (e) {
      const crash = await target.crashedWithin(2000);
      if (crash) fail('crash', crash, i);
      else if (host.closed) fail('closed', `the module closed the link: ${host.closed}`, i);
      else if (!(e instanceof Hang)) fail('internal', (e as Error).message, i);
      else {
        // Late, or gone for good? One more timeout for the bytes and a STATUS: an answer then is a
        // stall (a loaded machine, a slow pty relay), recorded with its window; none is a hang.
        const t0 = performance.now();
        try {
          await within(written, timeoutMs, 'the module took no more bytes');
          await status();
          stalls.push({ from: windowFrom, to: i, ms: Math.round(performance.now() - t0 + timeoutMs), message: e.message });
          window = [];
          windowFrom = i + 1;
          continue;
        } catch (e2) {
          fail('hang', `${e.message}; still nothing ${timeoutMs} ms later (${(e2 as Error).message})`, i);
        }
      }
      break; // a module that stopped answering cannot be fuzzed on
    }
    const crash = target.crashed();
    if (crash) {
      fail('crash', crash, i);
      break;
    }
    const internal = [...host.internal, ...target.internalErrors()];
    if (internal.length) fail('internal', `INTERNAL: ${internal.join('; ')}`, i);
    host.internal = [];
    window = [];
    windowFrom = i + 1;
    o.onProgress?.(i - first + 1);
  }
  const seconds = (performance.now() - t0) / 1000;
  let after: Payload | undefined;
  if (!failures.some((f) => f.kind === 'crash' || f.kind === 'hang' || f.kind === 'closed')) {
    after = await status();
    if (JSON.stringify(after['pool']) !== JSON.stringify(before['pool'])) fail('state', `pool status changed: ${JSON.stringify(before['pool'])} -> ${JSON.stringify(after['pool'])}`, i - 1, first);
  }
  const flashAfter = await target.flashDigest();
  if (flashAfter !== flashBefore && !failures.some((f) => f.kind === 'crash')) fail('state', `flash changed: sha256 ${flashBefore} -> ${flashAfter}`, i - 1, first);
  const inputs = i - first;
  return {
    target: target.name,
    seed: o.seed,
    first,
    inputs,
    bytes,
    seconds: Math.round(seconds * 1000) / 1000,
    inputsPerSecond: Math.round(inputs / seconds),
    syncs,
    probes,
    retries: host.retries,
    stalls,
    layers,
    replies: host.replies,
    pool: { before: before['pool'], after: after?.['pool'] },
    flash: { before: flashBefore, after: flashAfter },
    failures,
  };
}

/** A failure as one line: kind, target, seed and window, what happened (the hex follows separately). */
export function describeFailure(f: FuzzFailure): string {
  return `${f.kind} on ${f.target}: seed ${f.seed}, inputs ${f.from}..${f.to}: ${f.message}`;
}
