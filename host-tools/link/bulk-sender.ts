// Host side of windowed bulk transfers: keeps up to the device's window of chunks in flight
// (go-back-N), advances on acknowledged committed offsets, goes back to the device's committed
// offset on OUT_OF_ORDER, and resyncs from the device's own status after a timeout. Stops at a
// chunk boundary when its AbortSignal fires: no chunk is started after it (the device keeps its
// committed offset, so the transfer stays resumable).
import { LinkTimeoutError } from './errors.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import type { Payload } from '../../firmware/link/codec.js';
import { stoppedError } from './stop.js';

export interface BulkSendOptions {
  total: number;
  /** Where to start: the device's committed offset (0 for a new transfer). */
  startOffset: number;
  chunkSize: number;
  window: number;
  /** Bytes [offset, offset+length) of the transfer. */
  read(offset: number, length: number): Uint8Array;
  /** Send one chunk; resolves with the device's reply (carrying `c`, its committed offset). */
  sendChunk(offset: number, data: Uint8Array): Promise<Payload>;
  /** Ask the device for its committed offset (after a timeout). */
  queryCommitted(): Promise<number>;
  onProgress?(committed: number, total: number): void;
  /** Give up after this many go-backs/resyncs. Default 16. */
  maxRestarts?: number;
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
  restarts: number;
}

interface Outcome {
  id: number;
  generation: number;
  /** Where the chunk ends in the stream. */
  end: number;
  committed?: number;
  error?: unknown;
}

export async function sendBulk(o: BulkSendOptions): Promise<BulkSendResult> {
  if (o.chunkSize < 1 || o.window < 1) throw new RangeError('chunkSize and window must be >= 1');
  const maxRestarts = o.maxRestarts ?? 16;
  let committed = o.startOffset;
  let next = o.startOffset;
  let generation = 0;
  let restarts = 0;
  let chunksSent = 0;
  let bytesSent = 0;
  let ids = 0;
  const inflight = new Map<number, Promise<Outcome>>();
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
  const take = (out: Outcome) => {
    if (out.error === undefined && out.committed !== undefined && out.committed > committed) {
      committed = out.committed;
      if (next < committed) next = committed; // an answer from before a go-back: skip ahead
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
      inflight.delete(out.id);
      take(out);
    }
    throw stoppedError(signal!);
  };

  const restart = (at: number) => {
    if (++restarts > maxRestarts) throw new Error(`bulk transfer gave up after ${maxRestarts} restarts at offset ${at}`);
    committed = at;
    next = at;
    generation++; // outcomes of chunks sent before this point no longer move the offset
  };

  try {
    while (committed < o.total || inflight.size > 0) {
      if (signal?.aborted) return stop();
      while (inflight.size < o.window && next < o.total) {
        const len = Math.min(o.chunkSize, o.total - next);
        const data = o.read(next, len);
        const id = ids++;
        const gen = generation;
        const offset = next;
        inflight.set(
          id,
          o.sendChunk(offset, data).then(
            (p) => ({ id, generation: gen, end: offset + len, committed: typeof p['c'] === 'number' ? p['c'] : undefined }),
            (error: unknown) => ({ id, generation: gen, end: offset + len, error }),
          ),
        );
        chunksSent++;
        bytesSent += len;
        next += len;
      }
      if (inflight.size === 0) {
        // Everything answered but the device is not at the end: ask it where it is.
        restart(await o.queryCommitted());
        continue;
      }
      const out = await Promise.race([...inflight.values(), stopRequested]);
      if (out === STOP) return stop();
      inflight.delete(out.id);
      if (out.error === undefined) {
        take(out);
        continue;
      }
      if (out.generation !== generation) continue; // already went back past this chunk
      const e = out.error;
      // Its answer was lost, but a later chunk's answer already moved the offset past it.
      if (e instanceof LinkTimeoutError && out.end <= committed) continue;
      if (e instanceof LinkError && e.rc === Rc.OUT_OF_ORDER && typeof e.details?.['committed'] === 'number') {
        restart(e.details['committed']);
      } else if (e instanceof LinkError && e.rc === Rc.BUSY) {
        restart(await o.queryCommitted());
      } else if (e instanceof LinkTimeoutError) {
        restart(await o.queryCommitted());
      } else {
        // A refusal (tampered chunk, no space, ...) or a closed link: the caller decides.
        await Promise.allSettled(inflight.values());
        throw e;
      }
    }
    return { committed, chunksSent, bytesSent, restarts };
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
