// Typed errors of the sealed-batch code. Messages name what failed and where (offsets, indices,
// lengths), never a key or plaintext byte: they can end up in logs and on the link as a reason.

export type BatchErrorCode =
  | 'bad-magic'
  | 'bad-version'
  | 'truncated'
  | 'bad-field'
  | 'bad-length'
  | 'out-of-order'
  | 'incomplete'
  | 'disposed'
  | 'header-auth'
  | 'chunk-auth'
  | 'wrong-terminal'
  | 'stale-seq';

export class BatchError extends Error {
  constructor(
    readonly code: BatchErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The bytes are not a well-formed v1 sealed batch, or the caller broke the chunk order. */
export class BatchFormatError extends BatchError {}

/** A tag did not verify: forged or corrupted header or chunk, or the wrong device key. */
export class BatchAuthError extends BatchError {}

/** Authentic, but not acceptable here: addressed to another terminal, or not newer (rollback). */
export class BatchRejectedError extends BatchError {}

/** A receipt, admin token or service-data header is not well formed (untrusted bytes). */
export class CryptoFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CryptoFormatError';
  }
}

/** A service-data message (OTP or AEAD session) did not authenticate. Nothing was decrypted. */
export class ServiceAuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServiceAuthError';
  }
}
