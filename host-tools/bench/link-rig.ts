// A host and an emulated terminal joined by a real cable for benchmarks and the demo: a socat
// pty pair (each end opened through serialport, optionally paced to a baud rate) or in-process.
import { createTerminal } from '../../firmware/terminal.js';
import type { Terminal } from '../../firmware/terminal.js';
import type { Transport } from '../../firmware/link/transport.js';
import { createInProcessPair } from '../transports/inproc.js';
import { openSerial } from '../transports/serial.js';
import { paced } from '../transports/pacing.js';
import { createPtyPair } from '../transports/pty-pair.js';
import { startSession } from '../link/session.js';
import type { DeviceSession } from '../link/session.js';

export type RigTransport = 'inproc' | 'pty';

export interface LinkRig {
  session: DeviceSession;
  terminal: Terminal;
  description: string;
  close(): Promise<void>;
}

export async function openLinkRig(kind: RigTransport, baud?: number, terminal: Terminal = createTerminal({})): Promise<LinkRig> {
  // Both ends pace their writes, so each direction of the cable is paced once, by its sender.
  const pace = (t: Transport) => (baud ? paced(t, { baud, receive: false }) : t);
  if (kind === 'inproc') {
    const [host, device] = createInProcessPair({ names: ['host', 'terminal'] });
    terminal.attach(pace(device));
    const session = await startSession(pace(host), 'in-process link', baud ? { baud } : {});
    return {
      session,
      terminal,
      description: `in-process${baud ? ` paced at ${baud} baud` : ''}`,
      close: async () => {
        await session.close();
        await device.close();
      },
    };
  }
  const pty = await createPtyPair();
  try {
    const device = await openSerial(pty.b);
    terminal.attach(pace(device));
    const host = await openSerial(pty.a);
    const session = await startSession(pace(host), pty.a, baud ? { baud } : {});
    return {
      session,
      terminal,
      description: `pty pair ${pty.a} <-> ${pty.b}${baud ? ` paced at ${baud} baud` : ' unpaced'}`,
      close: async () => {
        await session.close();
        await device.close();
        await pty.close();
      },
    };
  } catch (e) {
    await pty.close();
    throw e;
  }
}
