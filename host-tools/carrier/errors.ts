// Typed errors of the carrier (docs/carrier.md). The CLI maps them to its CARRIER exit code; the
// messages name files, ids and lengths only (batches are sealed: there is no key material to leak).

export type CarrierErrorCode =
  /** The path does not exist (a drive that is not mounted, a mistyped path): nothing is made there. */
  | 'NOT_FOUND'
  /** The folder has no carrier.json: not a carrier (or an init that never finished). */
  | 'NOT_A_CARRIER'
  /** carrier.json is there but does not parse or lacks a field. */
  | 'CORRUPT'
  /** A carrier of a newer (or unknown) format version. */
  | 'UNSUPPORTED_VERSION'
  /** init on a folder that holds other files. */
  | 'NOT_EMPTY'
  /** init on a carrier that already exists with another carrier or KMD id. */
  | 'EXISTS'
  /** addBatch: the bytes are not a whole v1 sealed batch. */
  | 'BAD_BATCH'
  /** addBatch: a different valid batch already sits under the same terminal and batch id. */
  | 'CONFLICT'
  /** recordReceipt / readBatch: the batch is not (or no longer) on the carrier. */
  | 'UNKNOWN_BATCH'
  /** recordReceipt: the receipt does not parse, does not name this batch, or is one the KMD rejected before. */
  | 'BAD_RECEIPT'
  /**
   * recordReceipt: a different receipt for this batch is stored already (the KMD decides at collect
   * which is true); rejectReceipt: the KMD verified this receipt already.
   */
  | 'ALREADY_DELIVERED'
  /** markCollected / rejectReceipt: no receipt with that id on the carrier. */
  | 'UNKNOWN_RECEIPT'
  /**
   * open: carrier.json, journal.jsonl, batches/ or receipts/ is a symlink, FIFO, device or other
   * non-regular entry, or oversize (a hostile drive): the carrier is not opened at all.
   */
  | 'UNSAFE_FILE'
  /** preflight: the carrier's drive is mounted read-only (EROFS): its receipt could not be written. */
  | 'READ_ONLY'
  /** preflight: this user cannot write the carrier (EACCES, EPERM: another user's folder or drive). */
  | 'NOT_WRITABLE'
  /** preflight: too little free space (or no free inode) on the carrier's drive for the receipt. */
  | 'NO_ROOM'
  /**
   * readBatch / preflight: the terminal's batch file is on the carrier but not whole and valid
   * (cut short, bytes changed, unreadable): never sent; the KMD must load the batch again.
   */
  | 'DAMAGED_BATCH';

export class CarrierError extends Error {
  constructor(
    readonly code: CarrierErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CarrierError';
  }
}
