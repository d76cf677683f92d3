// Device side of windowed bulk transfers (docs/protocol.md, "Bulk transfers"): chunks must arrive
// at the committed offset; the sink makes each chunk durable before the offset moves, so after a
// cable pull or a power cut the committed offset is the truth the host resumes from.
import { LinkError, Rc } from './errors.js';

export interface BulkSink {
  /** Total length of the transfer in bytes. */
  readonly total: number;
  /** Bytes received and made durable, from offset 0. */
  readonly committed: number;
  /** Take `data` at `offset` (== committed); throw a LinkError to refuse it (nothing changes). */
  write(offset: number, data: Uint8Array): void | Promise<void>;
}

/**
 * Apply one chunk. A chunk entirely below the committed offset is a harmless duplicate (a retry
 * whose first answer was lost) and is acknowledged without writing; any other mismatch is
 * OUT_OF_ORDER with the committed offset in the details, so the host goes back to it.
 */
export async function acceptChunk(sink: BulkSink, offset: number, data: Uint8Array): Promise<{ c: number }> {
  if (data.length === 0) throw new LinkError(Rc.BAD_REQUEST, 'empty chunk');
  if (offset + data.length <= sink.committed) return { c: sink.committed };
  if (offset !== sink.committed) {
    throw new LinkError(Rc.OUT_OF_ORDER, `expected offset ${sink.committed}`, { committed: sink.committed });
  }
  if (offset + data.length > sink.total) {
    throw new LinkError(Rc.TOO_LARGE, `chunk runs past the end of the transfer (${sink.total} bytes)`);
  }
  await sink.write(offset, data);
  return { c: sink.committed };
}
