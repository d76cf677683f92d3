// The one thing the link layer needs from a cable: an ordered, full-duplex byte pipe.
// Implementations (in-process, serial/pty/CDC-ACM, TCP, WebUSB bulk) live in host-tools/transports.

/** A byte pipe between a host and a device. Bytes arrive in order, split at arbitrary points. */
export interface Transport {
  /** What this is, for status lines and errors, e.g. "serial /dev/pts/3". Never secret. */
  readonly description: string;
  /**
   * Queue bytes for sending. Resolves once the transport has accepted them (written or
   * drained, or paced out on a paced link). Rejects once the transport is closed.
   */
  write(bytes: Uint8Array): Promise<void>;
  /** Install the (single) receiver of incoming bytes. Replaces any earlier one. */
  onData(listener: (chunk: Uint8Array) => void): void;
  /** Called once when the transport ends: close(), cable pulled, peer gone. */
  onClose(listener: (error?: Error) => void): void;
  /** Close the transport; idempotent. */
  close(): Promise<void>;
}
