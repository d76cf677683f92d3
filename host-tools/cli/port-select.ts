// Resolves the --port a field engineer typed: a path or tcp:/usb: address as is, or `auto` for
// the single attached serial device (optionally filtered by VID:PID).
import { CliError, Exit } from './command.js';

export async function resolvePort(port: string, vidpid?: string): Promise<string> {
  if (port !== 'auto') return port;
  let vid: string | undefined;
  let pid: string | undefined;
  if (vidpid !== undefined) {
    const m = /^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$/.exec(vidpid);
    if (!m) throw new CliError(`--vidpid must look like 0483:5740, got ${JSON.stringify(vidpid)}`, Exit.USAGE);
    vid = m[1]!.toLowerCase();
    pid = m[2]!.toLowerCase();
  }
  // Listing loads the serial and USB libraries (native bindings): only for `auto`.
  const { listPorts } = await import('../ports/list.js');
  const { serial } = await listPorts();
  if (!serial.available && serial.ports.length === 0) {
    throw new CliError(`--port auto: cannot list serial ports here (${serial.reason ?? 'unknown reason'}); give --port PATH`, Exit.NO_DEVICE);
  }
  // Only USB serial devices (a VID, or a ttyUSB/ttyACM name): a laptop's legacy ttyS ports are
  // never a terminal module, and picking one would hang on silence.
  const usbSerial = serial.ports.filter((p) => p.vendorId !== undefined || /\/tty(USB|ACM)\d+$/.test(p.path));
  const matches = usbSerial.filter(
    (p) => (vid === undefined || p.vendorId?.toLowerCase() === vid) && (pid === undefined || p.productId?.toLowerCase() === pid),
  );
  if (matches.length === 0) throw new CliError(`--port auto: no serial device attached${vidpid ? ` with VID:PID ${vidpid}` : ''}`, Exit.NO_DEVICE);
  if (matches.length > 1) {
    throw new CliError(`--port auto: ${matches.length} serial devices attached (${matches.map((p) => p.path).join(', ')}); give --port PATH or --vidpid`, Exit.NO_DEVICE);
  }
  return matches[0]!.path;
}
