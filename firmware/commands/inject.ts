// INJECT command group: a sealed batch arrives over the link's windowed bulk transfer, each
// sealed chunk verified and staged to flash as it completes (one chunk of RAM), the batch made
// live atomically on COMMIT, and a delivery receipt returned (docs/batch.md, docs/protocol.md).
// Every refusal leaves the pool as it was; a transfer resumes from the pool's durable offset.
import { BatchOpener, parseSealedHeader } from '../crypto/batch.js';
import { encodeReceipt, makeReceipt, RECEIPT_MAX_LIVE } from '../crypto/receipt.js';
import { acceptChunk } from '../link/bulk.js';
import type { BulkSink } from '../link/bulk.js';
import { Group, InjectCmd } from '../link/groups.js';
import { LinkError, Rc } from '../link/errors.js';
import { bytes, uint } from '../link/fields.js';
import type { CommandGroup, LinkPeer, RequestContext } from '../link/dispatch.js';
import type { StageHandle } from '../keypool/key-pool.js';
import { PoolError } from '../keypool/errors.js';
import { mapServiceErrors, toLinkError } from './pool-errors.js';
import { withIdentity } from './context.js';
import type { ModuleContext } from './context.js';

/**
 * How long a transfer's owner link may stay silent (no request, no byte received) before a BEGIN on
 * another link may take the transfer over (a host whose connection went half-open, then
 * reconnected). Bytes of a chunk still arriving count, so a slow but live owner is never taken over.
 */
export const TRANSFER_TAKEOVER_MS = 30_000;

/** Largest header + tag a BEGIN carries (43 fixed bytes + a 32-char terminal id + 16-byte tag). */
const MAX_HEADER = 128;

/** The pool's u32 batch id: the first 4 bytes of the 16-byte batch id (the KMD keeps them unique per terminal). */
export function poolBatchId(batchId: Uint8Array): number {
  return ((batchId[0]! << 24) | (batchId[1]! << 16) | (batchId[2]! << 8) | batchId[3]!) >>> 0;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** The open transfer: the sealed chunk stream, opened chunk by chunk into the staged batch. */
class BatchTransfer implements BulkSink {
  readonly total: number;
  /** Sealed bytes made durable (whole chunks in the pool) plus those buffered for the next chunk. */
  private durableSealed: number;
  private readonly buffer: Uint8Array;
  private buffered = 0;
  /** The pool refused a write because staged bytes differ (STAGE_CONFLICT). */
  conflict = false;

  constructor(
    readonly id: number,
    readonly opener: BatchOpener,
    readonly stage: StageHandle,
    /** The link that opened it: only that link's requests reach it (docs/protocol.md 4.9). */
    readonly owner: LinkPeer | undefined,
    /** Module clock at its owner's last request. */
    public lastUsed: number,
  ) {
    const l = opener.layout;
    this.total = (l.chunkCount - 1) * l.sealedChunkSize + l.lastSealedChunkSize;
    this.durableSealed = opener.nextIndex * l.sealedChunkSize;
    this.buffer = new Uint8Array(l.sealedChunkSize);
  }

  get committed(): number {
    return this.durableSealed + this.buffered;
  }

  write(_offset: number, data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      const index = this.opener.nextIndex;
      const want = this.opener.sealedLength(index);
      const n = Math.min(want - this.buffered, data.length - at);
      this.buffer.set(data.subarray(at, at + n), this.buffered);
      this.buffered += n;
      at += n;
      if (this.buffered < want) continue;
      // A whole sealed chunk: verify and decrypt it, stage the plaintext, wipe it from RAM.
      let plain: Uint8Array | undefined;
      try {
        plain = this.opener.openChunk(index, this.buffer.subarray(0, want));
      } catch (e) {
        this.buffered = 0; // the tampered chunk is dropped; the host resends from `committed`
        throw toLinkError(e);
      }
      try {
        this.stage.write(this.stage.durableOffset, plain);
      } catch (e) {
        this.conflict = e instanceof PoolError && e.code === 'STAGE_CONFLICT';
        throw toLinkError(e);
      } finally {
        plain.fill(0);
      }
      this.buffered = 0;
      this.durableSealed += want;
    }
  }

  dispose(): void {
    this.opener.dispose();
    this.buffer.fill(0);
  }
}

/**
 * The INJECT group; `reset()` drops the open transfer (after a reset of the module's state),
 * `release(link)` drops it if that link (now closed) owns it.
 */
export function injectGroup(ctx: ModuleContext): CommandGroup & { reset(): void; release(link: LinkPeer): void } {
  let transfer: BatchTransfer | undefined;
  // Transfer ids are random, not counted: a second client on the cable cannot guess another
  // host's transfer and CHUNK or ABORT it (it still can sniff a shared line: the cable is trusted
  // for service commands, docs/protocol.md 3.8).
  const newId = (): number => {
    const r = ctx.rng(4);
    return (((r[0]! << 24) | (r[1]! << 16) | (r[2]! << 8) | r[3]!) >>> 0) || 1;
  };
  const close = () => {
    transfer?.dispose();
    transfer = undefined;
  };
  // A transfer belongs to the link that opened it: another link's CHUNK, STATUS, COMMIT or ABORT
  // does not find it, whatever `t` it sends (docs/protocol.md 4.9).
  const current = (id: number, c: RequestContext) => {
    if (!transfer || transfer.id !== id || (transfer.owner && c.link && transfer.owner !== c.link)) {
      throw new LinkError(Rc.NO_TRANSFER, `no open transfer ${id}`);
    }
    transfer.lastUsed = ctx.clock();
    return transfer;
  };
  /** Another link's live transfer, which a BEGIN on this link must not disturb. */
  const heldElsewhere = (c: RequestContext): BatchTransfer | undefined => {
    const t = transfer;
    if (!t?.owner || !c.link || t.owner === c.link || !t.owner.open) return undefined;
    // The owner's last request, or the last bytes its link received (a chunk still arriving on a
    // slow line): a live owner is never taken over, however slow its line.
    const last = Math.max(t.lastUsed, t.owner.lastHeard ?? -Infinity);
    return ctx.clock() - last < TRANSFER_TAKEOVER_MS ? t : undefined;
  };

  /** Full ids of the live batches, for the receipt (docs/batch.md "Receipt", version 2). */
  const liveIds = (): Uint8Array[] => {
    const secure = ctx.secure();
    return ctx
      .pool()
      .status()
      .batches.map((b) => secure.batchIdFor(b.batchId))
      .filter((id): id is Uint8Array => id !== undefined)
      .slice(0, RECEIPT_MAX_LIVE);
  };

  return {
    reset: close,
    release: (link) => {
      if (transfer?.owner === link) close();
    },
    id: Group.INJECT,
    name: 'inject',
    commands: {
      [InjectCmd.BEGIN]: (p, c) =>
        withIdentity(ctx, ({ terminalId, deviceKey }) => {
          const pool = ctx.pool();
          const sealedHead = bytes(p, 'h', MAX_HEADER);
          const info = mapServiceErrors(() => parseSealedHeader(sealedHead));
          const h = info.header;
          const secure = ctx.secure();
          // Refusals cost no flash: counted in RAM, written as one coalesced event at a bounded
          // rate (docs/secure-area.md), so a flood of forged headers cannot wear the area out.
          const refuse = (e: unknown): never => {
            const le = toLinkError(e);
            if (le instanceof LinkError) secure.refused(`${hex(h.batchId).slice(0, 8)} rc ${le.rc}`);
            throw le;
          };
          let opener: BatchOpener;
          try {
            // The tag is checked before anything else: a forged header changes nothing.
            opener = new BatchOpener(deviceKey, info.headerBytes, info.tag, { expect: { terminalId } });
          } catch (e) {
            return refuse(e);
          }
          const busy = heldElsewhere(c);
          if (busy) {
            // One staging, one transfer: another connection's inject in progress is never
            // replaced or closed from here. Not a refusal of this batch (nothing is counted): the
            // host tries again once that inject ends (or its owner has been silent for 30 s).
            opener.dispose();
            throw new LinkError(Rc.BUSY, `another connection is injecting batch ${hex(busy.opener.header.batchId).slice(0, 8)}`);
          }
          const id = poolBatchId(h.batchId);
          const status = pool.status();
          if (status.batches.some((b) => b.batchId === id && b.seq === h.seq)) {
            // Already accepted (the reply to COMMIT was lost, or the carrier came back): the same
            // receipt again, recomputed, and nothing else changes.
            const receipt = encodeReceipt(makeReceipt(deviceKey, { terminalId, batchId: h.batchId, seq: h.seq, bits: h.bits, headerDigest: opener.headerDigest, live: liveIds() }));
            opener.dispose();
            close();
            return { done: true, receipt, bits: h.bits };
          }
          if (status.lastSeq !== null && h.seq <= status.lastSeq) {
            opener.dispose();
            return refuse(new LinkError(Rc.STALE_BATCH, `batch seq ${h.seq} is not above the last accepted ${status.lastSeq}`));
          }
          let stage = pool.staging();
          if (stage && (stage.batchId !== id || stage.seq !== h.seq)) {
            // Another batch was left half-staged (its carrier went elsewhere): drop it, but only
            // once this one is known to fit, so that a refusal changes nothing.
            if (status.storedKeyBits + h.bits > status.maxKeyBits) {
              opener.dispose();
              return refuse(new LinkError(Rc.NO_SPACE, `batch of ${h.bits} bits does not fit: ${status.storedKeyBits} stored, max ${status.maxKeyBits}`));
            }
            mapServiceErrors(() => stage!.abort());
            stage = null;
          }
          try {
            stage ??= mapServiceErrors(() => pool.stage({ batchId: id, seq: h.seq, purpose: h.purpose, bits: h.bits }));
          } catch (e) {
            opener.dispose();
            return refuse(e);
          }
          // Resume: the pool's durable offset is the truth, in whole chunks. A mount that lost a
          // sector of the staged data cuts it back to a sector boundary: move it back to the
          // chunk boundary below, where the opener can resume (the bytes between are rewritten).
          const resumeAt = Math.floor(stage.durableOffset / h.chunkSize);
          if (resumeAt * h.chunkSize !== stage.durableOffset) {
            const s = stage;
            mapServiceErrors(() => s.rewind(resumeAt * h.chunkSize));
          }
          if (resumeAt > 0) {
            opener.dispose();
            opener = new BatchOpener(deviceKey, info.headerBytes, info.tag, { resumeAt });
          }
          close();
          transfer = new BatchTransfer(newId(), opener, stage, c.link, ctx.clock());
          return { t: transfer.id, c: transfer.committed, n: transfer.total };
        }),
      [InjectCmd.CHUNK]: async (p, c) => {
        const t = current(uint(p, 't'), c);
        try {
          return await acceptChunk(t, uint(p, 'o'), bytes(p, 'd', 65536));
        } catch (e) {
          if (e instanceof LinkError && e.rc === Rc.AUTH_FAILED) {
            // A chunk that does not authenticate was altered (on the carrier or by whoever holds
            // the cable): it changes nothing. The transfer closes; what was staged before it was
            // authenticated and stays staged, never live (commit needs every chunk), until this
            // batch resumes or another batch's BEGIN replaces it. Counted in RAM, no flash.
            ctx.secure().refused(`${hex(t.opener.header.batchId).slice(0, 8)} rc ${e.rc}`);
            close();
          } else if (e instanceof LinkError && e.rc === Rc.BAD_STATE && t.conflict) {
            // Staged bytes that differ from the batch's own (damaged flash): the staging cannot
            // complete, so drop it now rather than leave it staged for good; a new BEGIN restarts.
            mapServiceErrors(() => t.stage.abort());
            close();
            throw new LinkError(Rc.BAD_STATE, 'staged data does not match the batch: staged part dropped; inject again');
          }
          throw e;
        }
      },
      [InjectCmd.STATUS]: (p, c) => {
        const t = current(uint(p, 't'), c);
        return { c: t.committed, n: t.total };
      },
      [InjectCmd.COMMIT]: (p, c) =>
        withIdentity(ctx, ({ terminalId, deviceKey }) => {
          const t = current(uint(p, 't'), c);
          if (!t.opener.complete) throw new LinkError(Rc.BAD_STATE, `batch incomplete: ${t.committed} of ${t.total} bytes`);
          mapServiceErrors(() => t.opener.finish());
          const h = t.opener.header;
          // The full batch id goes to the secure area first: service headers name keys by it.
          ctx.secure().rememberBatch(poolBatchId(h.batchId), h.batchId);
          mapServiceErrors(() => t.stage.commit());
          // After the commit (which may retire older batches' crumbs): the receipt lists what is live.
          const receipt = encodeReceipt(
            makeReceipt(deviceKey, { terminalId, batchId: h.batchId, seq: h.seq, bits: h.bits, headerDigest: t.opener.headerDigest, live: liveIds() }),
          );
          ctx.secure().audit('batch-accepted', `${hex(h.batchId).slice(0, 8)} seq ${h.seq} ${h.bits}b`);
          close();
          return { receipt, bits: h.bits };
        }),
      [InjectCmd.ABORT]: (p, c) => {
        const t = current(uint(p, 't'), c);
        mapServiceErrors(() => t.stage.abort());
        close();
        return {};
      },
    },
  };
}
