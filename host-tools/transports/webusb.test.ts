// WebUSB bulk transport against the fake device: the shared suite, the open sequence, endpoint
// selection, stalls, and device discovery filtering.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeWebUsbDevice, FAKE_EP_IN, FAKE_EP_OUT, FAKE_INTERFACE } from './fake-webusb.js';
import { findWebUsbDevices, openWebUsb } from './webusb.js';
import { collect, transportSuite, watchClose } from './transport.suite.js';

t.test('transport suite over the fake WebUSB device', (t) => {
  transportSuite(
    t,
    async () => {
      const device = new FakeWebUsbDevice();
      const a = await openWebUsb(device);
      return { a, b: device.peer, device };
    },
    {
      closePropagates: true,
      pull: (pair) => (pair as unknown as { device: FakeWebUsbDevice }).device.disconnect(),
    },
  );
  t.end();
});

t.test('open sequence: open, configure, claim the bulk interface; close releases', async (t) => {
  const device = new FakeWebUsbDevice({ productName: 'probe' });
  const tr = await openWebUsb(device);
  t.same(device.calls.slice(0, 3), ['open', 'selectConfiguration(1)', `claimInterface(${FAKE_INTERFACE})`]);
  t.equal(tr.description, 'usb 1209:0001 "probe" if1');
  await tr.close();
  t.ok(device.calls.includes(`releaseInterface(${FAKE_INTERFACE})`));
  t.equal(device.calls.at(-1), 'close');
  t.notOk(device.opened);
});

t.test('explicit interface and endpoints; wrong ones are refused', async (t) => {
  const device = new FakeWebUsbDevice();
  const tr = await openWebUsb(device, { interfaceNumber: FAKE_INTERFACE, endpointIn: FAKE_EP_IN, endpointOut: FAKE_EP_OUT });
  await tr.close();
  await t.rejects(openWebUsb(new FakeWebUsbDevice(), { interfaceNumber: 0 }), /no IN endpoint/);
  await t.rejects(openWebUsb(new FakeWebUsbDevice(), { interfaceNumber: 7 }), /no interface 7/);
  const d = new FakeWebUsbDevice();
  await t.rejects(openWebUsb(d, { endpointOut: 9 }), /no OUT endpoint 9/);
  t.notOk(d.opened, 'a failed open closes the device again');
  await t.rejects(openWebUsb(new FakeWebUsbDevice(), { packetSize: 0 }), RangeError);
});

t.test('writes are split into packet-multiple transfers', async (t) => {
  const device = new FakeWebUsbDevice({ packetSize: 64 });
  const tr = await openWebUsb(device, { packetSize: 1000 }); // rounded down to 960
  const sizes: number[] = [];
  device.peer.onData((c) => sizes.push(c.length));
  await tr.write(new Uint8Array(2500).fill(7));
  t.same(sizes, [960, 960, 580]);
  await tr.close();
});

t.test('a stalled endpoint is cleared and the transfer retried', async (t) => {
  const device = new FakeWebUsbDevice();
  const tr = await openWebUsb(device);
  device.stall('out');
  const atPeer = collect(device.peer, 3);
  await tr.write(Uint8Array.of(1, 2, 3));
  t.same([...(await atPeer)], [1, 2, 3]);
  t.ok(device.calls.includes(`clearHalt(out,${FAKE_EP_OUT})`));
  await tr.close();
});

t.test('the firmware side going away ends the host transport with an error', async (t) => {
  const device = new FakeWebUsbDevice();
  const tr = await openWebUsb(device);
  const w = watchClose(tr);
  await device.peer.close();
  t.match((await w.closed)?.message, /stopped|disconnected/);
});

t.test('findWebUsbDevices filters what getDevices returns', async (t) => {
  const devices = [new FakeWebUsbDevice({ productId: 1, serialNumber: 'A' }), new FakeWebUsbDevice({ productId: 2, serialNumber: 'B' })];
  const usb = { getDevices: async () => devices };
  t.equal((await findWebUsbDevices([], usb)).length, 2);
  t.same((await findWebUsbDevices([{ productId: 2 }], usb)).map((d) => d.serialNumber), ['B']);
  t.same((await findWebUsbDevices([{ vendorId: 0x1209, serialNumber: 'A' }], usb)).map((d) => d.serialNumber), ['A']);
  t.same(await findWebUsbDevices([{ vendorId: 1 }], usb), []);
});

t.test('findWebUsbDevices on the real stack: what sysfs lists, or a clear error where there is no USB bus', { skip: process.platform !== 'linux' && 'compared with Linux sysfs' }, async (t) => {
  // The truth comes from sysfs, not from the code under test: a USB bus is there exactly when
  // /sys/bus/usb/devices is, and each device libusb finds has its ids in a sysfs entry.
  const sysUsb = '/sys/bus/usb/devices';
  if (!existsSync(sysUsb)) {
    await t.rejects(findWebUsbDevices(), /\/sys\/bus\/usb/, 'no USB bus: a rejection naming what is missing');
    return;
  }
  const ids = new Set<string>();
  for (const e of readdirSync(sysUsb)) {
    try {
      ids.add(`${readFileSync(join(sysUsb, e, 'idVendor'), 'utf8').trim()}:${readFileSync(join(sysUsb, e, 'idProduct'), 'utf8').trim()}`);
    } catch {
      // an interface entry (no ids of its own)
    }
  }
  const found = await findWebUsbDevices();
  const hex4 = (n: number) => n.toString(16).padStart(4, '0');
  t.ok(found.length <= ids.size, `${found.length} device(s), sysfs lists ${ids.size}`);
  for (const d of found) t.ok(ids.has(`${hex4(d.vendorId)}:${hex4(d.productId)}`), `${hex4(d.vendorId)}:${hex4(d.productId)} is in sysfs`);
});
