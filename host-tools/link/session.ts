// A host's conversation with one device: open the cable, negotiate, and close it again, with
// errors phrased for the person at the laptop ("no terminal answered on /dev/ttyUSB0").
import { LinkClient } from './client.js';
import type { DeviceParams } from './client.js';
import { openLink } from './open.js';
import type { OpenOptions } from './open.js';
import { DeviceBusyError, LinkClosedError, LinkTimeoutError, NoDeviceError } from './errors.js';
import { printable } from '../peer-text.js';
import { StoppedError } from './stop.js';
import type { Transport } from '../../firmware/link/transport.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';

export interface DeviceSession {
  client: LinkClient;
  params: DeviceParams;
  close(): Promise<void>;
}

/** `signal`: stop waiting for the device's PARAMS answer at once when it aborts (StoppedError; the link is closed). */
export async function connectDevice(spec: string, o: OpenOptions & { timeoutMs?: number; device?: 'terminal' | 'KMD'; signal?: AbortSignal } = {}): Promise<DeviceSession> {
  const transport = await openLink(spec, o);
  return startSession(transport, spec, o);
}

/** `o.device`: what should answer, in the words of the message when nothing does (default "terminal"). */
export async function startSession(transport: Transport, name: string, o: OpenOptions & { timeoutMs?: number; device?: 'terminal' | 'KMD'; signal?: AbortSignal } = {}): Promise<DeviceSession> {
  const client = new LinkClient(transport, { baud: o.baud ?? 115_200, baseTimeoutMs: o.timeoutMs ?? 1500 });
  try {
    const params = await client.negotiate(o.signal);
    return { client, params, close: () => client.close() };
  } catch (e) {
    // Stopped on request: at once, not after the close (up to 2 s on a peer that never reads).
    const closing = client.close().catch(() => undefined);
    if (e instanceof StoppedError) throw e;
    await closing;
    if (e instanceof LinkError && e.rc === Rc.DENIED) {
      // A device at its connection limit answers the session's PARAMS DENIED (docs/protocol.md 4.9).
      throw new DeviceBusyError(name, `${name} refused the connection: ${printable(e.reason ?? 'denied')}`);
    }
    if (e instanceof LinkTimeoutError || e instanceof LinkClosedError) {
      throw new NoDeviceError(name, `${o.device === 'KMD' ? `no KMD answered on ${name}` : `no terminal answered on ${name}`} (${e.message})`);
    }
    throw e;
  }
}
