// Host side of windowed bulk transfers: keeps up to the device's window of chunks in flight
// (go-back-N), advances on acknowledged committed offsets, goes back to the device's committed
// offset on OUT_OF_ORDER, and sends again from the last acknowledged offset when an answer is
// overdue. On a noisy line it sizes chunks to the error rate it sees (chunk-size.ts), times
// answers by the round trips it measures, and gives up only after a run of losses without
// progress. Stops at a chunk boundary when its AbortSignal fires: no chunk is started after it
// (the device keeps its committed offset, so the transfer stays resumable).
import { ChunkSizer, LOSSY_WINDOW } from './chunk-size.js';
import { LinkStalledError, LinkTimeoutError, PeerDataError } from './errors.js';
import { DiagCmd, Group } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import type { Payload } from '../../firmware/link/codec.js';
import { sleep, stoppedError } from './stop.js';

export interface BulkSendOptions {
  total: number;
  /** Where to start: the device's committed offset (0 for a new transfer). */
  startOffset: number;
  /** The largest chunk (the device's maxChunk, or less). */
  chunkSize: number;
  window: number;
  /** Bytes [offset, offset+length) of the transfer. */
  read(offset: number, length: number): Uint8Array;
  /**
   * Send one chunk; resolves with the device's reply (carrying `c`, its committed offset). No
   * retries under the same seq: a chunk whose answer is overdue is sent again by this sender.
   * `timeoutMs`: how long to wait for the answer (undefined: the client's own timeout).
   */
  sendChunk(offset: number, data: Uint8Array, timeoutMs?: number): Promise<Payload>;
  /** Ask the device for its committed offset (when every chunk is answered yet it is short of the end). */
  queryCommitted(): Promise<number>;
  /**
   * Whether the device has been silent long enough to doubt the link, when an answer is overdue:
   * then the sender asks `queryCommitted` (a small request, which fails on a dead link) rather
   * than send chunks again. Absent: never silent.
   */
  isSilent?(): boolean;
  onProgress?(committed: number, total: number): void;
  /** Give up after this many losses (go-backs, overdue answers, BUSY) in a row with no progress. Default 32. */
  maxRestarts?: number;
  /** The error given up with (default: a LinkStalledError naming DIAG SINK_CHUNK). */
  stalled?(message: string): Error;
  /** Adapt the chunk size to losses (default true); false: always `chunkSize`. */
  adapt?: boolean;
  /** The chunk sizer to use (and keep learning in), e.g. one shared by the attempts of a resuming inject; its max must be `chunkSize`. */
  sizer?: ChunkSizer;
  /**
   * The size a chunk should carry on the line now when the link sizes frames itself (a link
   * sending FEC shards: the size its plan carries best; chunks then take it, at most
   * `chunkSize`, and losses do not shrink them), or undefined. Asked before every chunk.
   */
  chunkCap?(): number | undefined;
  /** Line bytes per frame byte now (FEC shards take more of the line than the frame): default 1. */
  wireFactor?(): number;
  /** Called at each loss (a go-back, an overdue answer): the link may change how it frames. */
  onLoss?(): void;
  /** The smallest adapted chunk. Default 16 bytes. */
  minChunk?: number;
  /** Bytes a chunk frame takes besides its data (header, CBOR, CRC, COBS, delimiter). Default 30. */
  frameOverhead?: number;
  /** The least an answer is waited for before sending again, ms. Default 50. */
  minTimeoutMs?: number;
  /** Milliseconds a byte takes on the line: answers are waited for at least twice the line time of what is in flight. */
  lineMsPerByte?: number;
  /**
   * Stop when this aborts: no new chunk is sent; answers to the chunks in flight are awaited
   * for at most `stopGraceMs` (default 500) to report the offset, then StoppedError is thrown.
   */
  signal?: AbortSignal;
  stopGraceMs?: number;
}

export interface BulkSendResult {
  committed: number;
  chunksSent: number;
  bytesSent: number;
  /** Go-backs and resends after an overdue answer, over the whole transfer. */
  restarts: number;
  /** Of those, the ones after an overdue answer. */
  timeouts: number;
  /** The smallest and the last chunk size used (bytes of data). */
  smallestChunk: number;
  lastChunk: number;
}

interface Outcome {
  id: number;
  generation: number;
  /** Where the chunk ends in the stream. */
  end: number;
  /** The device's committed offset from its answer (checked by `take`). */
  committed?: unknown;
  error?: unknown;
  /** Its data bytes, and when it was sent (performance.now()). */
  len: number;
  sentAt: number;
}

export async function sendBulk(o: BulkSendOptions): Promise<BulkSendResult> {
  if (!(o.chunkSize >= 1) || !(o.window >= 1)) throw new RangeError('chunkSize and window must be >= 1');
  const maxRestarts = o.maxRestarts ?? 32;
  // A sizer passed in carries what an earlier attempt learnt of the line (a resumed inject starts
  // at the size the line allowed, not at 8 KiB that a noisy line loses whole).
  const sizer = o.sizer && o.sizer.max === o.chunkSize ? o.sizer : new ChunkSizer(o.chunkSize, o.minChunk ?? 16, o.frameOverhead ?? 30);
  const adapt = o.adapt ?? true;
  const minTimeoutMs = o.minTimeoutMs ?? 50;
  let committed = o.startOffset;
  /**
   * The furthest the device has said it holds. A genuine device's offset never goes back within a
   * transfer, so only passing this is progress: a device that acknowledges an offset and then
   * goes back before it again (a lying or broken one) must not reset the count of losses without
   * progress each time, or the transfer never ends.
   */
  let highest = o.startOffset;
  /** An offset the device gave: a whole number within the transfer, or a PeerDataError. */
  const deviceOffset = (v: unknown, where: string): number => {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= o.total) return v;
    throw new PeerDataError(`the device gave ${where} ${typeof v === 'number' ? String(v) : (JSON.stringify(v)?.slice(0, 20) ?? 'nothing')}, not an offset from 0 to ${o.total}; it is not a genuine qkt device or it is damaged`);
  };
  let next = o.startOffset;
  let generation = 0;
  let restarts = 0;
  let timeouts = 0;
  /** Losses since the furthest offset the device has given last moved. */
  let stalled = 0;
  let chunksSent = 0;
  let bytesSent = 0;
  let ids = 0;
  // Round-trip estimate (RFC 6298's smoothing); the answer timeout once there are samples.
  let srtt: number | undefined;
  let rttvar = 0;
  const inflight = new Map<number, Promise<Outcome>>();
  /** Ends of the chunks in flight, by id: answered-past ones are dropped from the window. */
  const ends = new Map<number, number>();
  const STOP = Symbol('stop');
  const signal = o.signal;
  // Removed when this returns or throws (the finally below): a run that resumes many times
  // (resume.ts) calls this once per loss on the same signal, and one listener left behind per call
  // is a leak, and Node's MaxListenersExceededWarning on the engineer's screen after ten.
  let onAbort: (() => void) | undefined;
  const stopRequested = new Promise<typeof STOP>((resolve) => {
    if (signal?.aborted) resolve(STOP);
    else signal?.addEventListener('abort', (onAbort = () => resolve(STOP)), { once: true });
  });
  const forget = (id: number) => {
    inflight.delete(id);
    ends.delete(id);
  };
  const take = (out: Outcome) => {
    const c = out.error === undefined && out.committed !== undefined ? deviceOffset(out.committed, 'the committed offset') : undefined;
    if (c !== undefined && c > committed) {
      committed = c;
      if (committed > highest) {
        highest = committed;
        stalled = 0;
      }
      if (next < committed) next = committed; // an answer from before a go-back: skip ahead
      // A chunk whose answer was lost but whose bytes a later answer covers holds no window slot:
      // waiting out its timeout would stall a noisy line for nothing.
      for (const [id, end] of ends) if (end <= committed) forget(id);
      o.onProgress?.(committed, o.total);
    }
  };
  const stop = async (): Promise<never> => {
    // A chunk boundary: nothing new leaves; answers already on their way still count, briefly.
    const deadline = performance.now() + (o.stopGraceMs ?? 500);
    while (inflight.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      const out = await Promise.race([...inflight.values(), new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), left)))]);
      clearTimeout(timer);
      if (!out) break;
      forget(out.id);
      take(out);
    }
    throw stoppedError(signal!);
  };

  /** Go back to `at` (the device's offset, or the last one it acknowledged) after a loss. */
  const restart = (given: unknown, lost: boolean) => {
    const at = deviceOffset(given, 'the committed offset');
    restarts++;
    if (at > highest) {
      // the device holds more than it ever said: progress
      highest = at;
      stalled = 0;
    }
    if (++stalled > maxRestarts) {
      const message = `the transfer made no progress in ${maxRestarts} go-backs in a row at offset ${at} of ${o.total}`;
      throw o.stalled ? o.stalled(message) : new LinkStalledError(Group.DIAG, DiagCmd.SINK_CHUNK, message);
    }
    if (lost) o.onLoss?.();
    // A loss shrinks chunks unless the link sizes them (FEC shards: the plan already counts the
    // frames the line loses; halving 8 KiB chunks at each of them would only add round trips).
    if (lost && adapt && o.chunkCap?.() === undefined) sizer.lost(sizer.size);
    const moved = at > committed;
    committed = at; // the device's word, or the last offset it acknowledged
    if (moved) o.onProgress?.(committed, o.total);
    next = committed;
    generation++; // outcomes of chunks sent before this point no longer move the offset
    // Chunks of the old generation no longer hold window slots: their answers (OUT_OF_ORDER, or
    // none) say nothing new, and a lost one would otherwise hold its slot until its timeout.
    inflight.clear();
    ends.clear();
  };
  /**
   * Doubled at an overdue answer, back to 1 at the next timed one (RFC 6298 5.5): once per chunk
   * sent after the last doubling, not once per chunk in flight, or a window of chunks lost
   * together would multiply it by 2^window.
   */
  let backoff = 1;
  let doubledAt = -1;
  /** Chunk sizes the link chose (chunkCap), for the report. */
  let smallestLinkSized = Infinity;
  let lastLinkSized: number | undefined;
  const overhead = o.frameOverhead ?? 30;
  /** Line bytes in flight with a chunk of `extra` more (go-back-N: everything from committed to next). */
  const inflightBytes = (extra: number) => (ends.size + 1) * overhead + extra + (next - committed);
  // Until an answer has been timed, the request layer's own timeout; then the measured round
  // trip, never less than twice the line time of what is in flight (chunks grow: a round trip
  // measured on small ones is too short for large ones), doubled after an overdue answer.
  const answerTimeout = (len: number): number | undefined =>
    srtt === undefined ? undefined : backoff * Math.max(minTimeoutMs + 2 * inflightBytes(len) * (o.wireFactor?.() ?? 1) * (o.lineMsPerByte ?? 0), srtt + 4 * rttvar);

  try {
    while (committed < o.total || inflight.size > 0) {
      if (signal?.aborted) return stop();
      // Once chunks have shrunk the line loses frames: fewer in flight, fewer sent for nothing
      // behind a lost one (the line stays busy: small frames come back fast).
      const linkSized = o.chunkCap?.();
      const size = linkSized !== undefined ? Math.max(1, Math.min(o.chunkSize, linkSized)) : adapt ? sizer.size : o.chunkSize;
      if (linkSized !== undefined) {
        smallestLinkSized = Math.min(smallestLinkSized, size);
        lastLinkSized = size;
      } else lastLinkSized = undefined;
      // One chunk until the device has taken one (a start like TCP's, in spirit): on a line that
      // loses the first chunk, one is sent for nothing rather than a window of them (4 x 8 KiB on
      // a 0.1% line before the link turns to FEC shards); a clean line pays one round trip.
      const window = highest === o.startOffset ? 1 : adapt && size < o.chunkSize ? Math.min(o.window, LOSSY_WINDOW) : o.window;
      while (inflight.size < window && next < o.total) {
        const len = Math.min(size, o.total - next);
        const data = o.read(next, len);
        const id = ids++;
        const gen = generation;
        const offset = next;
        const sentAt = performance.now();
        inflight.set(
          id,
          o.sendChunk(offset, data, answerTimeout(len)).then(
            (p) => ({ id, generation: gen, end: offset + len, committed: p['c'] === undefined ? undefined : p['c'], len, sentAt }),
            (error: unknown) => ({ id, generation: gen, end: offset + len, error, len, sentAt }),
          ),
        );
        ends.set(id, offset + len);
        chunksSent++;
        bytesSent += len;
        next += len;
      }
      if (inflight.size === 0) {
        // Everything answered but the device is not at the end: ask it where it is.
        restart(await o.queryCommitted(), false);
        continue;
      }
      const out = await Promise.race([...inflight.values(), stopRequested]);
      if (out === STOP) return stop();
      if (!inflight.has(out.id)) continue; // dropped from the window meanwhile
      forget(out.id);
      if (out.error === undefined) {
        // Every chunk is sent once under its own seq, so its answer times that sending alone.
        if (out.generation === generation) {
          backoff = 1;
          const rtt = performance.now() - out.sentAt;
          if (srtt === undefined) {
            srtt = rtt;
            rttvar = rtt / 2;
          } else {
            rttvar = 0.75 * rttvar + 0.25 * Math.abs(srtt - rtt);
            srtt = 0.875 * srtt + 0.125 * rtt;
          }
        }
        const before = committed;
        take(out);
        if (adapt && committed > before && out.generation === generation) sizer.acked(out.len);
        // A device that takes a chunk holds at least up to its end (firmware/link/bulk.ts: the
        // chunk written, or a duplicate below its offset). One that answers less did not keep it
        // (a broken or lying device, "held" without moving): a loss without progress, counted now,
        // not after the whole rest of the transfer has been sent for nothing (32 times over).
        if (out.generation === generation && out.committed !== undefined && (out.committed as number) < out.end) restart(out.committed, false);
        continue;
      }
      if (out.generation !== generation) continue; // already went back past this chunk
      const e = out.error;
      // Its answer was lost, but a later chunk's answer already moved the offset past it.
      if (e instanceof LinkTimeoutError && out.end <= committed) continue;
      if (e instanceof LinkError && e.rc === Rc.OUT_OF_ORDER && typeof e.details?.['committed'] === 'number') {
        restart(e.details['committed'], true);
      } else if (e instanceof LinkError && e.rc === Rc.BUSY) {
        // The device's queue was full: let it drain (a round trip or so), then go on from where it was.
        await sleep(Math.min(400, srtt ?? 50), signal).catch(() => undefined);
        restart(committed, false);
      } else if (e instanceof LinkTimeoutError) {
        // An overdue answer: the chunk or its answer was lost on the line, or the link died. A
        // device heard lately is there: send again from the last acknowledged offset (it answers
        // a chunk it already holds with its offset). A silent one is asked where it is, with a
        // small request that a noisy line lets through and a dead one does not (that throws).
        timeouts++;
        if (out.id > doubledAt) {
          backoff = Math.min(backoff * 2, 8);
          doubledAt = ids - 1; // chunks sent so far were timed with the old value
        }
        restart(o.isSilent?.() ? await o.queryCommitted() : committed, true);
      } else {
        // A refusal (tampered chunk, no space, ...) or a closed link: the caller decides.
        await Promise.allSettled(inflight.values());
        throw e;
      }
    }
    const smallestChunk = Math.min(adapt ? sizer.smallest : o.chunkSize, smallestLinkSized);
    return { committed, chunksSent, bytesSent, restarts, timeouts, smallestChunk, lastChunk: lastLinkSized ?? (adapt ? sizer.size : o.chunkSize) };
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
