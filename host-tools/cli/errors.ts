// Turns whatever a command threw into the one-line reason and exit code the CLI contract promises
// (docs/cli.md "Exit codes"). The one place errors meet exit codes: the libraries throw typed
// domain errors and this maps each by its type and cause, never by its class name or its words.
// Messages name the thing that failed and what to do; they never carry key bytes; text from a
// device or peer is shown with its control characters escaped (peer-text.ts).
import { CliError, Exit } from './command.js';
import { UsageError } from './argv.js';
import { LinkError, Rc, rcName } from '../../firmware/link/errors.js';
import { LockBusyError } from '../lock.js';
import { DeviceBusyError, LinkClosedError, LinkTimeoutError, NoDeviceError, PeerDataError, errnoOf } from '../link/errors.js';
import { refusalWords } from '../link/names.js';
import { InputError } from '../input-error.js';
import { CarrierError } from '../carrier/errors.js';
import { UnsafeFileError } from '../carrier/safe-file.js';
import { DamagedFileError } from '../json-file.js';
import { KmdError } from '../kmd/home.js';
import { KMD_EXIT } from './home.js';
import { DownloadError } from '../kmd/download-error.js';
import { SupplyExhaustedError } from '../kmd/supply.js';
import { TerminalHostError } from '../terminal-host-error.js';
import { printable } from '../peer-text.js';

/** What to tell a person whose command failed on a system call (the path, in words), with the exit code. */
function describeSystemError(e: NodeJS.ErrnoException, code: string): { message: string; exitCode: number } | undefined {
  const path = typeof e.path === 'string' ? e.path : undefined;
  const where = path ?? e.message;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      // A home, image, carrier file or folder that is not there: state on disk, named.
      return { message: path ? `${path}: no such file or folder (check the path)` : e.message, exitCode: Exit.STATE };
    case 'EISDIR':
      return { message: path ? `${path}: a folder, not a file (check the path)` : e.message, exitCode: Exit.STATE };
    case 'EEXIST':
      return { message: path ? `${path} exists already; nothing was overwritten` : e.message, exitCode: Exit.STATE };
    case 'EACCES':
    case 'EPERM':
      return { message: `${where}: permission denied (this user may not use it: check its owner and mode, or run as the user who owns it)`, exitCode: Exit.FAILURE };
    case 'EROFS':
      return { message: `${where}: the drive is mounted read-only (remount it read-write and run the command again)`, exitCode: Exit.FAILURE };
    case 'ENOSPC':
    case 'EDQUOT':
      return { message: `${where}: the disk is full (free some space and run the command again)`, exitCode: Exit.FAILURE };
    case 'EIO':
      return { message: `${where}: input/output error (a failing drive or a pulled cable)`, exitCode: Exit.FAILURE };
    case 'EBUSY':
      return { message: `${where}: in use by another program (${code})`, exitCode: Exit.BUSY };
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { message: `nothing answered: ${e.message}`, exitCode: Exit.NO_DEVICE };
    case 'EADDRINUSE':
      return { message: `${e.message}: the address is in use by another program (pick another port)`, exitCode: Exit.FAILURE };
    default:
      return undefined;
  }
}

/** A fault of qkt itself (a TypeError, a RangeError nobody meant for the user): exit 1, and ask for a report. */
const BUG_CLASSES = [TypeError, RangeError, ReferenceError, SyntaxError, EvalError, URIError];
import { StoppedError } from '../link/stop.js';
import { LinkLostError } from '../link/resume-errors.js';

export function describeError(e: unknown): { message: string; exitCode: number } {
  const d = describeRaw(e);
  // Every message may quote a device or a file: one line, controls escaped, whatever its source.
  return { message: printable(d.message.split('\n')[0]!, 600), exitCode: d.exitCode };
}

function describeRaw(e: unknown): { message: string; exitCode: number } {
  if (e instanceof CliError) return { message: e.message, exitCode: e.exitCode };
  if (e instanceof UsageError || e instanceof InputError) return { message: e.message, exitCode: Exit.USAGE };
  if (e instanceof LockBusyError) return { message: e.message, exitCode: Exit.BUSY };
  // Stopped on request (its message says what state things are in): 128 + the signal's number.
  if (e instanceof StoppedError) return { message: e.message, exitCode: e.signal === 'SIGTERM' ? Exit.TERMINATED : Exit.INTERRUPTED };
  // The module or the cable went away and did not come back in time: nothing is wrong with the
  // batch, and a re-run resumes (the message says from how much).
  if (e instanceof LinkLostError) return { message: e.message, exitCode: Exit.NO_DEVICE };
  // The link: nothing there, busy, gone, lying, or a refusal in the device's own code.
  if (e instanceof NoDeviceError) return { message: e.message, exitCode: Exit.NO_DEVICE };
  if (e instanceof DeviceBusyError) return { message: e.message, exitCode: Exit.BUSY };
  if (e instanceof LinkTimeoutError || e instanceof LinkClosedError) return { message: e.message, exitCode: Exit.NO_DEVICE };
  if (e instanceof PeerDataError) return { message: e.message, exitCode: Exit.REFUSED };
  if (e instanceof LinkError) {
    const reason = e.reason ? `: ${printable(e.reason, 80)}` : '';
    return { message: `terminal refused: ${refusalWords(e.rc)} (${rcName(e.rc)}${reason})`, exitCode: e.rc !== Rc.BUSY ? Exit.REFUSED : Exit.BUSY }; // busy: retry later
  }
  // The carrier, the KMD, the module host: each error's code says what it is.
  if (e instanceof CarrierError || e instanceof UnsafeFileError || e instanceof DownloadError) return { message: e.message, exitCode: Exit.CARRIER };
  if (e instanceof DamagedFileError) return { message: e.message, exitCode: Exit.STATE };
  if (e instanceof KmdError) return { message: e.message, exitCode: KMD_EXIT[e.code] };
  if (e instanceof SupplyExhaustedError) return { message: e.message, exitCode: Exit.FAILURE };
  if (e instanceof TerminalHostError) {
    if (e.code === 'IMAGE') return { message: e.message, exitCode: Exit.STATE };
    return { message: e.message, exitCode: Exit.FAILURE };
  }
  if (e instanceof Error) {
    const code = errnoOf(e);
    const sys = code ? describeSystemError(e as NodeJS.ErrnoException, code) : undefined;
    if (sys) return sys;
    if (BUG_CLASSES.some((c) => e.constructor === c)) {
      return { message: `internal error: ${e.name}: ${e.message} (a fault of qkt: please report it with the command line and qkt --version)`, exitCode: Exit.FAILURE };
    }
    return { message: e.message || e.name, exitCode: Exit.FAILURE };
  }
  return { message: String(e), exitCode: Exit.FAILURE };
}
