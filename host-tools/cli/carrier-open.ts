// Opens the carrier a command was pointed at, with the CLI's exit code for a bad one.
import { Carrier, CarrierError } from '../carrier/carrier.js';
import { CliError, Exit } from './command.js';

export function openCarrier(dir: string): Carrier {
  try {
    return Carrier.open(dir);
  } catch (e) {
    if (e instanceof CarrierError) throw new CliError(`${dir}: ${e.message}`, Exit.CARRIER);
    throw e;
  }
}
