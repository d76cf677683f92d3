// Typed errors of the host side of the link, for whoever called it to word and map (only
// host-tools/cli/errors.ts maps them to exit codes). A device's refusal is LinkError
// (firmware/link/errors.ts). Messages come in words first, protocol numbers after (names.ts).
import { linkClosedMessage, noAnswerMessage } from './names.js';

/** No answer in time (after the client's retries): names the request in words, then its numbers. */
export class LinkTimeoutError extends Error {
  constructor(
    readonly group: number,
    readonly command: number,
    ms: number,
    readonly attempts: number,
    note?: string,
  ) {
    super(noAnswerMessage(group, command, ms, attempts, note));
    this.name = 'LinkTimeoutError';
  }
}

/**
 * A bulk transfer that made no progress in many go-backs in a row: the line loses nearly every
 * chunk or answer. A kind of timeout (the link does not carry), so a resuming caller reconnects.
 */
export class LinkStalledError extends LinkTimeoutError {
  constructor(group: number, command: number, message: string) {
    super(group, command, 0, 0);
    this.message = message;
    this.name = 'LinkStalledError';
  }
}

/** The cable or connection went away (or the client was closed) while requests were open. */
export class LinkClosedError extends Error {
  constructor(cause?: Error) {
    super(linkClosedMessage(cause));
    this.name = 'LinkClosedError';
  }
}

/** Nothing usable on the port: it cannot be opened, no USB device matches, or nothing answers. */
export class NoDeviceError extends Error {
  constructor(
    /** The port as the user gave it (`/dev/ttyUSB0`, `tcp:H:P`, `usb:VID:PID`). */
    readonly port: string,
    message: string,
    /** The system's error code when opening failed (`EACCES`, `ENOENT`, `ECONNREFUSED`...). */
    readonly errno?: string,
  ) {
    super(message);
    this.name = 'NoDeviceError';
  }
}

/** The device answered but serves others already (a module at its connection limit): retry later. */
export class DeviceBusyError extends Error {
  constructor(
    readonly port: string,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceBusyError';
  }
}

/**
 * The device answered with something this tool cannot accept (a number out of range, a field of
 * the wrong type): it is not a genuine qkt device, or is damaged. Nothing further is done with it.
 */
export class PeerDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PeerDataError';
  }
}

/** The system error code of `e`, if it has one (`EACCES`). */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
