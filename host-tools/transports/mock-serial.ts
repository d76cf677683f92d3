// A mock null-modem cable for tests and the HIL rig's "mock" back end: two serialport mock
// ports wired back to back, so the real SerialPortStream code runs on both ends.
import { SerialPortMock } from 'serialport';
import type { OpenOptions } from '@serialport/stream';

type Binding = OpenOptions['binding'];
type MockPort = Awaited<ReturnType<typeof SerialPortMock.binding.open>>;

let cable = 0;
/**
 * Two mock ports wired back to back: what one port's binding writes, the other's binding
 * receives. Built on SerialPortMock.binding so the real SerialPortStream code runs on top.
 */
export function nullModem(): { binding: Binding; pathA: string; pathB: string } {
  const mock = SerialPortMock.binding;
  const n = ++cable;
  const pathA = `/dev/mockA${n}`;
  const pathB = `/dev/mockB${n}`;
  mock.createPort(pathA);
  mock.createPort(pathB);
  const open = new Map<string, MockPort>();
  const binding: Binding = {
    list: () => mock.list(),
    async open(options) {
      const port = await mock.open(options);
      open.set(options.path, port);
      const write = port.write.bind(port);
      port.write = async (buffer: Buffer) => {
        await write(buffer);
        const peer = open.get(options.path === pathA ? pathB : pathA);
        if (peer?.isOpen) peer.emitData(Buffer.from(buffer));
      };
      return port;
    },
  };
  return { binding, pathA, pathB };
}

