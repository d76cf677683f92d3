// Opens the cable a host tool was pointed at: a serial path (tty, pty, USB CDC-ACM),
// `tcp:HOST:PORT`, or `usb:VID:PID` (raw bulk through WebUSB), optionally paced to a baud rate.
import { realpathSync } from 'node:fs';
import type { Transport } from '../../firmware/link/transport.js';
import { connectTcp, isTcpAddress, parseTcpAddress } from '../transports/tcp.js';
import { paced } from '../transports/pacing.js';
import { NoDeviceError, errnoOf } from './errors.js';

export interface OpenOptions {
  /** Line rate: set on a real UART; on a pty or TCP the link is paced to it. */
  baud?: number;
}

/** True for a pseudo-terminal, where a baud rate means nothing unless we pace. */
export function isPty(path: string): boolean {
  try {
    return realpathSync(path).startsWith('/dev/pts/');
  } catch {
    return false;
  }
}

export function parseUsbSpec(spec: string): { vendorId: number; productId: number } | undefined {
  const m = /^usb:([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$/.exec(spec);
  return m ? { vendorId: parseInt(m[1]!, 16), productId: parseInt(m[2]!, 16) } : undefined;
}

export async function openLink(spec: string, o: OpenOptions = {}): Promise<Transport> {
  const usb = parseUsbSpec(spec);
  if (usb) {
    // The serial and USB libraries (native bindings, ~70 ms to load) load only for their cables.
    const { findWebUsbDevices, openWebUsb } = await import('../transports/webusb.js');
    const devices = await findWebUsbDevices([usb]).catch((e: Error) => {
      throw new NoDeviceError(spec, `USB is not available here: ${e.message}`, errnoOf(e));
    });
    if (devices.length === 0) throw new NoDeviceError(spec, `no USB device ${spec.slice(4)} attached`);
    if (devices.length > 1) throw new NoDeviceError(spec, `${devices.length} USB devices match ${spec.slice(4)}; unplug all but one`);
    return openWebUsb(devices[0]!);
  }
  if (isTcpAddress(spec)) {
    const { host, port } = parseTcpAddress(spec);
    const t = await connectTcp(host, port).catch((e: Error) => {
      throw new NoDeviceError(spec, `cannot connect to ${spec}: ${e.message}`, errnoOf(e));
    });
    return o.baud ? paced(t, { baud: o.baud }) : t;
  }
  const { openSerial } = await import('../transports/serial.js');
  const t = await openSerial(spec, o.baud ? { baudRate: o.baud } : {}).catch((e: Error) => {
    throw new NoDeviceError(spec, `cannot open ${spec}: ${e.message}${permissionHint(e)}`, errnoOf(e));
  });
  return o.baud && isPty(spec) ? paced(t, { baud: o.baud }) : t;
}

/** What to do about a serial port this user may not open (Linux: the dialout group). */
function permissionHint(e: Error): string {
  const code = errnoOf(e);
  const denied = code === 'EACCES' || code === 'EPERM' || /permission denied/i.test(e.message);
  return denied ? ' (no permission: add yourself to the group that owns the port, e.g. dialout, and log in again)' : '';
}
