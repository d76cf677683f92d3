// The typed error of the carrier's side of the download interface (download-client.ts), in a file
// of its own so the CLI's error mapping loads it without the client.

/**
 * The KMD on the line cannot be trusted with this carrier, or sent something malformed: `WRONG_KMD`
 * (another KMD's id), `NOT_AUTHENTIC` (it did not prove it holds the carrier's key, or a reply does
 * not authenticate), `MALFORMED` (a notification, block or batch that is not what it should be),
 * `NO_CARRIER_KEY` (the carrier holds no usable key of its own). Nothing is written for it.
 */
export class DownloadError extends Error {
  constructor(
    readonly code: 'WRONG_KMD' | 'NOT_AUTHENTIC' | 'MALFORMED' | 'NO_CARRIER_KEY',
    message: string,
  ) {
    super(message);
    this.name = 'DownloadError';
  }
}
