// Hosts an emulated terminal module in this process on a real cable: a serial device (tty, pty,
// CDC-ACM) or a TCP listener (one connection at a time, like one cable). Used by
// `qkt terminal run`, `qkt demo` and the HIL rig. The host holds the image's lock (`<image>.lock`)
// for its whole life: a second module on the same image is refused at once, with the pid.
import { createTerminal } from '../firmware/terminal.js';
import type { Terminal } from '../firmware/terminal.js';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { PowerCutError } from '../firmware/flash/errors.js';
import type { Payload } from '../firmware/link/codec.js';
import type { Transport } from '../firmware/link/transport.js';
import { openSerial } from './transports/serial.js';
import { listenTcp, parseTcpAddress } from './transports/tcp.js';
import { paced } from './transports/pacing.js';
import { isPty } from './link/open.js';
import { CliError, Exit } from './cli/command.js';
import { lockSync } from './lock.js';
import { flashLockOptions } from './flash-lock.js';

export interface TerminalHostOptions {
  flashPath: string;
  port?: string;
  listen?: string;
  baud?: number;
  powerCutAfter?: number;
  onPowerCut?: () => void;
}

export interface TerminalHost {
  /** Where it serves: the serial path or tcp:HOST:PORT with the real port. */
  address: string;
  terminal: Terminal;
  status(): Payload;
  /** Resolves when the cable is gone for good (serial port closed under us). */
  closed: Promise<void>;
  close(): Promise<void>;
}

export async function startTerminalHost(o: TerminalHostOptions): Promise<TerminalHost> {
  // The module's flash: an image file (a missing file is a blank, unenrolled module's flash).
  const imageLock = lockSync(o.flashPath, flashLockOptions(o.flashPath));
  let flash: NorFlash;
  try {
    flash = NorFlash.open(o.flashPath);
  } catch (e) {
    imageLock.release();
    throw new CliError(`cannot use flash image ${o.flashPath}: ${(e as Error).message}`, Exit.STATE);
  }
  if (o.powerCutAfter) flash.faults.cutAfter(o.powerCutAfter, 'torn');
  const closeFlash = () => {
    try {
      flash.close();
    } finally {
      imageLock.release();
    }
  };
  let terminal: Terminal;
  try {
    terminal = createTerminal({ flash, ...(o.onPowerCut ? { onPowerCut: () => o.onPowerCut!() } : {}) });
  } catch (e) {
    // A cut during boot (mount, boot audit record) is a cut like any other.
    if (e instanceof PowerCutError && o.onPowerCut) o.onPowerCut();
    closeFlash();
    throw e;
  }
  const pace = (t: Transport): Transport => (o.baud ? paced(t, { baud: o.baud }) : t);
  if (o.port) {
    const serial = await openSerial(o.port, o.baud ? { baudRate: o.baud } : {}).catch((e: Error) => {
      closeFlash();
      throw new CliError(`cannot open ${o.port}: ${e.message}`, Exit.NO_DEVICE);
    });
    const transport = o.baud && isPty(o.port) ? pace(serial) : serial;
    const closed = new Promise<void>((resolve) => transport.onClose(() => resolve()));
    terminal.attach(transport);
    return {
      address: o.port,
      terminal,
      status: () => terminal.status(),
      closed,
      close: async () => {
        await transport.close();
        closeFlash();
      },
    };
  }
  const { host, port } = parseTcpAddress(o.listen!);
  let current: Transport | undefined;
  const listener = await listenTcp(host, port, (t) => {
    // One cable at a time: a new connection replaces the old one, as replugging would.
    void current?.close();
    current = pace(t);
    terminal.attach(current);
  }).catch((e: Error) => {
    closeFlash();
    throw new CliError(`cannot listen on ${o.listen}: ${e.message}`, Exit.FAILURE);
  });
  return {
    address: `tcp:${listener.address.host}:${listener.address.port}`,
    terminal,
    status: () => terminal.status(),
    closed: new Promise<void>(() => undefined),
    close: async () => {
      await current?.close();
      await listener.close();
      closeFlash();
    },
  };
}
