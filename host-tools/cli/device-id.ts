// The terminal id a module reports in its STATUS reply. The reply is not authenticated (anything
// on the port can answer), and the id names files on carriers: it must pass the KMD's id rule
// (isId: 1-32 of [A-Za-z0-9._-], never only dots) before anything uses it.
import { CliError, Exit } from './command.js';
import { isId } from '../kmd/home.js';

/** `value` (STATUS `terminalId`) as a checked id; `state` words the not-enrolled refusal. */
export function deviceTerminalId(value: unknown, port: string, state?: unknown): string {
  if (value === undefined || value === null) {
    throw new CliError(`the module on ${port} is not enrolled (${String(state ?? 'blank')}); enrol it at the KMD first (qkt kmd enroll --home H --terminal ID --flash FILE; a factory-reset module of an enrolled terminal: add --again)`, Exit.REFUSED);
  }
  if (!isId(value)) {
    // JSON.stringify shows NUL and other controls escaped; cut so a 200-char id stays one short line.
    throw new CliError(`the module on ${port} reports a malformed terminal id ${JSON.stringify(value).slice(0, 40)}; refusing to use it`, Exit.REFUSED);
  }
  return value;
}
