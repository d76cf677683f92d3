// Runs the link protocol suite against each transport: in-process, TCP on loopback, and a socat
// pty pair opened through serialport (skipped with a reason without socat, never under CI=true).
import t from 'tap';
import { protocolSuite } from './protocol.suite.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { connectTcp, listenTcp } from '../host-tools/transports/tcp.js';
import { openSerial } from '../host-tools/transports/serial.js';
import { nullModem } from '../host-tools/transports/mock-serial.js';
import { FakeWebUsbDevice } from '../host-tools/transports/fake-webusb.js';
import { openWebUsb } from '../host-tools/transports/webusb.js';
import { createPtyPair, socatSkipReason } from './pty.js';
import type { Transport } from '../firmware/link/transport.js';

// `qkt hil run --transport a,b` selects back ends through this variable; unset runs them all.
const selected = process.env['QKT_HIL_TRANSPORTS']?.split(',').map((s) => s.trim());
const only = (name: string): { skip?: string } =>
  selected && !selected.includes(name) ? { skip: `transport ${name} not selected (QKT_HIL_TRANSPORTS=${selected.join(',')})` } : {};

t.test('in-process pair', only('inproc'), async (t) => {
  protocolSuite(t, async () => {
    const [host, device] = createInProcessPair({ names: ['host', 'device'] });
    return { host, device };
  });
});

t.test('TCP on 127.0.0.1', only('tcp'), async (t) => {
  protocolSuite(t, async () => {
    let accept!: (tr: Transport) => void;
    const accepted = new Promise<Transport>((resolve) => (accept = resolve));
    const listener = await listenTcp('127.0.0.1', 0, (tr) => accept(tr));
    const host = await connectTcp('127.0.0.1', listener.address.port);
    return { host, device: await accepted, cleanup: () => listener.close() };
  });
});

t.test('pty pair (socat) through serialport', { ...only('pty'), ...(socatSkipReason() ? { skip: socatSkipReason() as string } : {}) }, async (t) => {
  protocolSuite(t, async () => {
    const pty = await createPtyPair();
    const device = await openSerial(pty.b);
    const host = await openSerial(pty.a);
    return { host, device, cleanup: () => pty.close() };
  });
});

t.test('mock serial binding (null-modem cable)', only('mock'), async (t) => {
  protocolSuite(t, async () => {
    const cable = nullModem();
    const device = await openSerial(cable.pathB, { binding: cable.binding });
    const host = await openSerial(cable.pathA, { binding: cable.binding });
    return { host, device };
  });
});

t.test('raw USB bulk through WebUSB (fake device)', only('webusb'), async (t) => {
  protocolSuite(t, async () => {
    const dev = new FakeWebUsbDevice();
    const host = await openWebUsb(dev);
    return { host, device: dev.peer };
  });
});
