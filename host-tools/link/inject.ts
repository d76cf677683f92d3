// Host side of batch injection: BEGIN with the sealed header, stream the sealed chunks through
// the windowed bulk transfer from the module's committed offset (a re-run resumes), COMMIT, and
// return the module's delivery receipt. The host only ever handles sealed bytes.
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { Group, InjectCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import type { LinkClient, DeviceParams } from './client.js';
import { sendBulk } from './bulk-sender.js';

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
  o: { onProgress?: (p: InjectProgress) => void; chunkBytes?: number } = {},
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
  const toBits = (sealedOffset: number) => Math.min(h.bits, Math.floor(sealedOffset / info.sealedChunkSize) * h.chunkSize * 8);
  const progress = (c: number) => o.onProgress?.({ committedBytes: c, totalBytes: chunks.length, bits: toBits(c), totalBits: h.bits });
  let sealedBytesSent = 0;
  let restarts = 0;
  let resumedFrom: number | undefined;
  // The transfer can vanish under us: our link went silent long enough for another connection's
  // BEGIN to take it over (docs/protocol.md 4.9), or the module reset. Its id then answers
  // NO_TRANSFER, and we BEGIN again: answered BUSY (the other inject holds it) or a resume from
  // what the pool holds. Bounded: a transfer lost this often is reported, not chased.
  for (let attempt = 0; ; attempt++) {
    const begin = await client.request(Group.INJECT, InjectCmd.BEGIN, { h: head }, { expectBytes: 256 });
    if (begin['done'] === true) {
      return { ...base, resumedFromBits: h.bits, alreadyAccepted: true, receipt: begin['receipt'] as Uint8Array, seconds: (performance.now() - t0) / 1000, sealedBytesSent, restarts };
    }
    const t = begin['t'] as number;
    const start = begin['c'] as number;
    resumedFrom ??= toBits(start);
    progress(start);
    try {
      const res = await sendBulk({
        total: chunks.length,
        startOffset: start,
        chunkSize: o.chunkBytes ?? params.maxChunk,
        window: params.window,
        read: (off, n) => chunks.subarray(off, off + n),
        sendChunk: (off, d) => client.request(Group.INJECT, InjectCmd.CHUNK, { t, o: off, d }, { expectBytes: 16 }),
        queryCommitted: async () => (await client.request(Group.INJECT, InjectCmd.STATUS, { t }))['c'] as number,
        onProgress: progress,
      });
      sealedBytesSent += res.bytesSent;
      restarts += res.restarts;
      const commit = await client.request(Group.INJECT, InjectCmd.COMMIT, { t }, { expectBytes: 256 });
      progress(chunks.length);
      return {
        ...base,
        resumedFromBits: resumedFrom,
        alreadyAccepted: false,
        receipt: commit['receipt'] as Uint8Array,
        seconds: (performance.now() - t0) / 1000,
        sealedBytesSent,
        restarts,
      };
    } catch (e) {
      if (!(e instanceof LinkError && e.rc === Rc.NO_TRANSFER) || attempt >= MAX_REBEGIN) throw e;
      restarts++;
    }
  }
}

/** BEGINs again after a lost transfer before giving up. */
const MAX_REBEGIN = 3;
