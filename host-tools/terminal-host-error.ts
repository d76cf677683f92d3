// The typed error of terminal-host.ts, in a file of its own so the CLI's error mapping loads it
// without loading the emulated module.

/**
 * The module could not start: its flash image is unusable (`IMAGE`: state on disk), or the host
 * cannot listen where it was told (`LISTEN`). A serial port that will not open is NoDeviceError.
 */
export class TerminalHostError extends Error {
  constructor(
    readonly code: 'IMAGE' | 'LISTEN',
    message: string,
    readonly errno?: string,
  ) {
    super(message);
    this.name = 'TerminalHostError';
  }
}
