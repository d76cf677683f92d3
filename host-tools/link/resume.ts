// Batch injection that survives the link: when the module restarts (power cut, watchdog) or the
// cable drops mid-transfer, reopen the same port and BEGIN again, resuming from the module's
// durable offset (docs/protocol.md 5.4), within bounds; then give up saying a re-run resumes.
// The session opener is injected (the CLI passes its connectDevice), so this knows no ports.
import { LinkClosedError, LinkStalledError, LinkTimeoutError } from './errors.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { LinkError, Rc, rcName } from '../../firmware/link/errors.js';
import type { DeviceParams, LinkClient } from './client.js';
import { injectBatch } from './inject.js';
import { ChunkSizer } from './chunk-size.js';
import type { InjectProgress, InjectResult } from './inject.js';
import { StoppedError, abortable, sleep, stoppedError } from './stop.js';
import { InjectStoppedError, LinkLostError, heldText } from './resume-errors.js';
import type { HeldState } from './resume-errors.js';

export { InjectStoppedError, LinkLostError };
export type { HeldState };

/** An open, negotiated link to the module. */
export interface LinkSession {
  client: LinkClient;
  params: DeviceParams;
  close(): Promise<void>;
}

/** How long one outage is waited out, reopening the port, before giving up. */
export const RESUME_WAIT_MS = 20_000;
/** Losses in a row without the module holding more of the batch than ever before in the run, before giving up. */
export const MAX_LOSSES = 5;
/** Pauses between reopen tries: 0.25 s, 0.5 s, then 1 s. */
const PAUSES_MS = [250, 500, 1000];

export interface ResumeOptions {
  /** Open the port again and negotiate (PARAMS): after each loss. */
  connect(): Promise<LinkSession>;
  /** The sealed batch file. */
  sealed: Uint8Array;
  signal?: AbortSignal;
  onProgress?(p: InjectProgress): void;
  /** A line for the person at the laptop: "link lost ...; reopening the port". */
  onNote?(line: string): void;
  /** The command line that runs this again, for the stop and give-up messages. */
  rerun?: string;
  /** Per outage, ms; default RESUME_WAIT_MS. */
  waitMs?: number;
  /** Default MAX_LOSSES. */
  maxLosses?: number;
  chunkBytes?: number;
}

export interface ResumeResult extends InjectResult {
  /** Times the transfer was lost (module restart, watchdog, cable) and begun again by itself. */
  resumes: number;
}

/** True for what a restart or a dropped cable looks like from the host. */
export function isLinkLoss(e: unknown): boolean {
  if (e instanceof LinkError) return e.rc === Rc.NO_TRANSFER || e.rc === Rc.INTERNAL;
  return e instanceof LinkTimeoutError || e instanceof LinkClosedError;
}

/** The loss in the engineer's words. */
function why(e: unknown): string {
  if (e instanceof LinkError) return e.rc === Rc.NO_TRANSFER ? 'the module lost the transfer (it restarted)' : `the module reset (${rcName(e.rc)})`;
  if (e instanceof LinkClosedError) return 'the link closed';
  if (e instanceof LinkStalledError) return e.message; // a line too noisy to carry even small chunks
  if (e instanceof LinkTimeoutError) return 'the link went silent';
  return e instanceof Error ? e.message : String(e);
}

/**
 * Inject `o.sealed` over `first` (an open session), reconnecting through `o.connect` after a loss.
 * Bounds: each outage is waited out for `waitMs` (reopen tries 0.25 s, 0.5 s, then 1 s apart,
 * each also bounded by the session's own PARAMS timeout), and at most `maxLosses` losses in a
 * row without the module taking more of the batch. Throws InjectStoppedError on abort,
 * LinkLostError past the bounds, and the module's refusals (LinkError) as they come.
 */
export async function injectResuming(first: LinkSession, o: ResumeOptions): Promise<ResumeResult> {
  const h = parseSealedHeader(o.sealed).header;
  const waitMs = o.waitMs ?? RESUME_WAIT_MS;
  const maxLosses = o.maxLosses ?? MAX_LOSSES;
  const state: HeldState = { terminalId: h.terminalId, batchId: Buffer.from(h.batchId).toString('hex'), heldBits: 0, totalBits: h.bits };
  let session: LinkSession | undefined = first;
  let resumes = 0;
  let losses = 0;
  let restarts = 0;
  let resumedFromBits: number | undefined;
  let mostHeldAtLoss = -1;
  /** One for the whole run: after a loss on a noisy line the next attempt starts at the size that line allowed. */
  let sizer: ChunkSizer | undefined;
  const t0 = performance.now();
  const stopped = (e: unknown): never => {
    throw new InjectStoppedError(e instanceof StoppedError ? e.signal : undefined, state, o.rerun);
  };
  try {
    for (;;) {
      try {
        const r = await injectBatch(session.client, session.params, o.sealed, {
          ...(o.chunkBytes ? { chunkBytes: o.chunkBytes } : {}),
          ...(o.signal ? { signal: o.signal } : {}),
          maxRebegin: 0, // every loss comes here: counted, bounded and told
          sizer: (sizer = sizer && sizer.max === (o.chunkBytes ?? session.params.maxChunk) ? sizer : new ChunkSizer(o.chunkBytes ?? session.params.maxChunk, 16, 30)),
          onProgress: (p) => {
            state.heldBits = p.bits;
            resumedFromBits ??= p.bits; // the first BEGIN's offset: where this run started
            o.onProgress?.(p);
          },
        });
        return { ...r, resumedFromBits: resumedFromBits ?? r.resumedFromBits, restarts: restarts + r.restarts, resumes, seconds: (performance.now() - t0) / 1000 };
      } catch (e) {
        if (e instanceof StoppedError) stopped(e);
        if (!isLinkLoss(e)) throw e;
        // Progress is the module holding more than it ever held at a loss in this run, not just
        // more than at the last one: a module that forgets and re-takes one or two chunks in turn
        // (a faulty or lying one) would otherwise count as progressing for ever.
        if (state.heldBits > mostHeldAtLoss) {
          losses = 0; // the module took more of the batch than ever before
          mostHeldAtLoss = state.heldBits;
        }
        resumes++;
        restarts++;
        const cause = why(e);
        if (++losses > maxLosses) throw new LinkLostError(state, `${cause} (${maxLosses} times in a row with no progress)`, o.rerun);
        // The module answered NO_TRANSFER or INTERNAL: the link works, BEGIN again on it.
        if (e instanceof LinkError) {
          o.onNote?.(`${cause}; ${heldText(state)}; beginning again`);
          continue;
        }
        o.onNote?.(`link lost: ${cause}; ${heldText(state)}; reopening the port (up to ${Math.round(waitMs / 1000)} s)`);
        await session.close().catch(() => undefined);
        session = undefined;
        const deadline = performance.now() + waitMs;
        let last: unknown = e;
        for (let tries = 0; !session; tries++) {
          const left = deadline - performance.now();
          if (left <= 0 && tries > 0) throw new LinkLostError(state, `${cause} and the port gave no terminal in ${Math.round(waitMs / 1000)} s (${tries} ${tries === 1 ? 'try' : 'tries'}; last: ${last instanceof Error ? last.message : String(last)})`, o.rerun);
          try {
            await sleep(Math.min(PAUSES_MS[Math.min(tries, PAUSES_MS.length - 1)]!, Math.max(0, left)), o.signal);
            const opening = o.connect();
            // On abort stop waiting at once; a session that opens later is closed.
            session = await abortable(opening, o.signal).catch((err: unknown) => {
              if (err instanceof StoppedError) void opening.then((s) => s.close()).catch(() => undefined);
              throw err;
            });
          } catch (err) {
            if (err instanceof StoppedError || o.signal?.aborted) stopped(o.signal ? stoppedError(o.signal) : err);
            last = err;
          }
        }
      }
    }
  } finally {
    // Sessions opened here are closed here; the caller closes `first` (closing twice is harmless).
    if (session && session !== first) await session.close().catch(() => undefined);
  }
}
