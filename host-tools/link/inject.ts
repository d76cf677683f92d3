// Host side of batch injection: BEGIN with the sealed header, stream the sealed chunks through
// the windowed bulk transfer from the module's committed offset (a re-run resumes), COMMIT, and
// return the module's delivery receipt. The host only ever handles sealed bytes. Stops at a chunk
// boundary when its AbortSignal fires (StoppedError); the module keeps what it staged.
// A link that goes silent fails fast here (LinkTimeoutError): chunks are not retried (the bulk
// sender asks the module's STATUS instead); resume.ts reconnects and BEGINs again.
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { Group, InjectCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { LinkTimeoutError } from './client.js';
import { LinkStalledError, PeerDataError } from './errors.js';
import { peerName, requestName } from './names.js';
import type { LinkClient, DeviceParams } from './client.js';
import { sendBulk } from './bulk-sender.js';
import type { ChunkSizer } from './chunk-size.js';

export interface InjectProgress {
  /** Sealed bytes the module holds durably (or buffered) so far. */
  committedBytes: number;
  totalBytes: number;
  /** The same, as key bits. */
  bits: number;
  totalBits: number;
}

export interface InjectResult {
  batchId: string;
  terminalId: string;
  seq: number;
  bits: number;
  /** Key bits the module already held when this run started (0 for a fresh transfer). */
  resumedFromBits: number;
  /** True when the module had already accepted this batch (a re-run after a lost reply). */
  alreadyAccepted: boolean;
  receipt: Uint8Array;
  seconds: number;
  sealedBytesSent: number;
  restarts: number;
}

export async function injectBatch(
  client: LinkClient,
  params: DeviceParams,
  sealed: Uint8Array,
  o: {
    onProgress?: (p: InjectProgress) => void;
    chunkBytes?: number;
    signal?: AbortSignal;
    /** BEGINs again after the module lost the transfer, before throwing (default 3; resume.ts: 0). */
    maxRebegin?: number;
    /** Shared by the attempts of a resuming inject (resume.ts): what one learnt of the line, the next starts from. */
    sizer?: ChunkSizer;
  } = {},
): Promise<InjectResult> {
  const info = parseSealedHeader(sealed);
  const h = info.header;
  const t0 = performance.now();
  const head = sealed.subarray(0, info.chunksOffset);
  const chunks = sealed.subarray(info.chunksOffset, info.totalLength);
  const base = {
    batchId: Buffer.from(h.batchId).toString('hex'),
    terminalId: h.terminalId,
    seq: h.seq,
    bits: h.bits,
  };
  // Whole sealed chunks held, as key bits; all of them is the whole batch (its last chunk may be
  // short: 200 kbit is 6.25 chunks of 4 KiB, and flooring showed the finished bar at 96%).
  const toBits = (sealedOffset: number) => (sealedOffset >= chunks.length ? h.bits : Math.min(h.bits, Math.floor(sealedOffset / info.sealedChunkSize) * h.chunkSize * 8));
  const progress = (c: number) => o.onProgress?.({ committedBytes: c, totalBytes: chunks.length, bits: toBits(c), totalBits: h.bits });
  let sealedBytesSent = 0;
  let restarts = 0;
  let resumedFrom: number | undefined;
  const signal = o.signal;
  // The transfer can vanish under us: our link went silent long enough for another connection's
  // BEGIN to take it over (docs/protocol.md 4.9), or the module reset. Its id then answers
  // NO_TRANSFER, and we BEGIN again: answered BUSY (the other inject holds it) or a resume from
  // what the pool holds. Bounded: a transfer lost this often is reported, not chased.
  for (let attempt = 0; ; attempt++) {
    const begin = await client.request(Group.INJECT, InjectCmd.BEGIN, { h: head }, { expectBytes: 256, signal });
    if (begin['done'] === true) {
      return { ...base, resumedFromBits: h.bits, alreadyAccepted: true, receipt: receiptOf(begin, InjectCmd.BEGIN), seconds: (performance.now() - t0) / 1000, sealedBytesSent, restarts };
    }
    const t = begin['t'] as number;
    const start = begin['c'] as number;
    // Checked before use: a negative, fractional or past-the-end offset (or none) would be shown
    // as held ("NaN of 8 Mbit"), drawn as a bar, and sent as chunk offsets.
    if (!Number.isSafeInteger(t) || !Number.isSafeInteger(start) || start < 0 || start > chunks.length) {
      throw malformed(InjectCmd.BEGIN, `transfer ${JSON.stringify(t)?.slice(0, 20)} at offset ${JSON.stringify(start)?.slice(0, 20)} of ${chunks.length}`);
    }
    resumedFrom ??= toBits(start);
    progress(start);
    const chunkSize = o.chunkBytes ?? params.maxChunk;
    /** Bytes of a chunk's frame body besides its data: header, CBOR of t, o and d's length, CRC. */
    const CHUNK_FRAME_OVERHEAD = 30;
    // Upper bound of a chunk request's frame: data, CBOR and header fields, CRC, COBS, delimiters.
    const chunkFrameBytes = chunkSize + Math.ceil(chunkSize / 254) + 64;
    // A chunk's answer overdue and nothing at all came from the module for half a full chunk's
    // timeout (base/2 + the chunk's line time: longer than a working link is ever quiet while
    // chunks are in flight, as each takes one line time): the link may be dead (a restart, a
    // cable), or so noisy that no chunk arrives whole. The sender then asks STATUS, which a dead
    // link does not answer (LinkTimeoutError: resume.ts reopens the port) and a noisy one does.
    const isSilent = () => performance.now() - client.lastReceiveAt > client.answerTimeoutMs(chunkFrameBytes, 16) / 2;
    try {
      const res = await sendBulk({
        total: chunks.length,
        startOffset: start,
        chunkSize,
        window: params.window,
        read: (off, n) => chunks.subarray(off, off + n),
        // No retry of a chunk under its seq: an overdue answer costs a go-back (section 5.3), and
        // a dead link is found after one chunk's timeout, not three.
        sendChunk: (off, d, timeoutMs) => client.request(Group.INJECT, InjectCmd.CHUNK, { t, o: off, d }, { expectBytes: 16, retries: 0, ...(timeoutMs ? { timeoutMs } : {}) }),
        isSilent,
        ...(o.sizer ? { sizer: o.sizer } : {}),
        lineMsPerByte: client.lineMsPerByte,
        // Once the link sends FEC shards (after a loss on a noisy line: docs/protocol.md 2.6),
        // chunks are sized for the shard plan, and answers timed by the line bytes shards take.
        chunkCap: () => client.bestChunk(chunkSize, CHUNK_FRAME_OVERHEAD),
        wireFactor: () => {
          const n = (client.bestChunk(chunkSize, CHUNK_FRAME_OVERHEAD) ?? chunkSize) + CHUNK_FRAME_OVERHEAD;
          return client.wireBytes(n) / n;
        },
        onLoss: () => client.lineLost(),
        // Two attempts on a silent link; up to 24 while anything comes from the module (a noisy
        // one). One attempt reported a dead link 1.5 s sooner, but on a 1% line lost the probe
        // itself (its request garbled, the module silent) about one time in four, each a loss.
        queryCommitted: async () => (await client.request(Group.INJECT, InjectCmd.STATUS, { t }, { retries: 1, signal }))['c'] as number,
        stalled: (message) => new LinkStalledError(Group.INJECT, InjectCmd.CHUNK, `${message} (the line loses nearly every chunk)`),
        onProgress: progress,
        ...(signal ? { signal } : {}),
      });
      sealedBytesSent += res.bytesSent;
      restarts += res.restarts;
      const commit = await client.request(Group.INJECT, InjectCmd.COMMIT, { t }, { expectBytes: 256, signal });
      progress(chunks.length);
      return {
        ...base,
        resumedFromBits: resumedFrom,
        alreadyAccepted: false,
        receipt: receiptOf(commit, InjectCmd.COMMIT),
        seconds: (performance.now() - t0) / 1000,
        sealedBytesSent,
        restarts,
      };
    } catch (e) {
      // NO_TRANSFER: the module lost the transfer (a restart, a takeover); INTERNAL: a handler
      // failed without changing state (a watchdog reset drops the transfer too, section 3.5).
      if (!(e instanceof LinkError && (e.rc === Rc.NO_TRANSFER || e.rc === Rc.INTERNAL)) || attempt >= (o.maxRebegin ?? MAX_REBEGIN)) throw e;
      restarts++;
    }
  }
}

/** A reply the tool cannot use: exit 4 at the CLI, like a number out of range (reply-check.ts). */
function malformed(command: number, what: string): PeerDataError {
  return new PeerDataError(`${peerName(Group.INJECT)} sent a malformed answer to ${requestName(Group.INJECT, command)}: ${what}; it is not a genuine qkt device or it is damaged`);
}

/** The receipt of a BEGIN (already accepted) or COMMIT reply: bytes, or a malformed answer. */
function receiptOf(reply: Record<string, unknown>, command: number): Uint8Array {
  const r = reply['receipt'];
  if (!(r instanceof Uint8Array)) throw malformed(command, `no receipt (${r === undefined ? 'missing' : typeof r})`);
  return r;
}

/** BEGINs again after a lost transfer before giving up. */
const MAX_REBEGIN = 3;
