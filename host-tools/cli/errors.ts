// Turns whatever a command threw into the one-line reason and exit code the CLI contract
// promises. Messages name the thing that failed and what to do; they never carry key bytes.
import { CliError, Exit } from './command.js';
import { LinkError, rcName } from '../../firmware/link/errors.js';
import { LockBusyError } from '../lock.js';
import { StoppedError } from '../link/stop.js';
import { LinkLostError } from '../link/resume-errors.js';

export function describeError(e: unknown): { message: string; exitCode: number } {
  if (e instanceof CliError) return { message: e.message, exitCode: e.exitCode };
  if (e instanceof LockBusyError) return { message: e.message, exitCode: Exit.BUSY };
  // Stopped on request (its message says what state things are in): 128 + the signal's number.
  if (e instanceof StoppedError) return { message: e.message, exitCode: e.signal === 'SIGTERM' ? Exit.TERMINATED : Exit.INTERRUPTED };
  // The module or the cable went away and did not come back in time: nothing is wrong with the
  // batch, and a re-run resumes (the message says from how much).
  if (e instanceof LinkLostError) return { message: e.message, exitCode: Exit.NO_DEVICE };
  if (e instanceof LinkError) {
    return { message: `terminal refused: ${rcName(e.rc)}${e.reason ? ` (${e.reason})` : ''}`, exitCode: Exit.REFUSED };
  }
  if (e instanceof Error) {
    if (e.name === 'LinkTimeoutError' || e.name === 'LinkClosedError') return { message: e.message, exitCode: Exit.NO_DEVICE };
    if (e instanceof RangeError || e instanceof TypeError) return { message: e.message, exitCode: Exit.USAGE };
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'ECONNREFUSED' || code === 'EBUSY') {
      return { message: e.message, exitCode: Exit.NO_DEVICE };
    }
    return { message: e.message || e.name, exitCode: Exit.FAILURE };
  }
  return { message: String(e), exitCode: Exit.FAILURE };
}
