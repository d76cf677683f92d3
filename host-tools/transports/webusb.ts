// Raw USB bulk transport through the `usb` package's WebUSB API: for devices that expose a
// vendor-class interface with one bulk IN and one bulk OUT endpoint (no CDC-ACM driver needed).
import { WebUSB } from 'usb';
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';

// The subset of the WebUSB USBDevice this transport uses, declared here so the fake device and
// usb's UsbDevice both fit, and so we do not depend on global DOM typings.
export interface UsbEndpointLike {
  readonly endpointNumber: number;
  readonly direction: 'in' | 'out';
  readonly type: 'bulk' | 'interrupt' | 'isochronous';
  readonly packetSize: number;
}
export interface UsbAlternateLike {
  readonly alternateSetting: number;
  readonly interfaceClass: number;
  readonly endpoints: readonly UsbEndpointLike[];
}
export interface UsbInterfaceLike {
  readonly interfaceNumber: number;
  readonly alternate: UsbAlternateLike;
}
export interface UsbConfigurationLike {
  readonly configurationValue: number;
  readonly interfaces: readonly UsbInterfaceLike[];
}
export type UsbTransferStatus = 'ok' | 'stall' | 'babble';
export interface WebUsbDeviceLike {
  readonly vendorId: number;
  readonly productId: number;
  readonly manufacturerName?: string | null | undefined;
  readonly productName?: string | null | undefined;
  readonly serialNumber?: string | null | undefined;
  readonly opened: boolean;
  readonly configuration: UsbConfigurationLike | null | undefined;
  readonly configurations: readonly UsbConfigurationLike[];
  open(): Promise<void>;
  close(): Promise<void>;
  selectConfiguration(configurationValue: number): Promise<void>;
  claimInterface(interfaceNumber: number): Promise<void>;
  releaseInterface(interfaceNumber: number): Promise<void>;
  clearHalt?(direction: 'in' | 'out', endpointNumber: number): Promise<void>;
  /** usb@3 takes an extra timeout in ms (default 1000); browsers take two arguments. */
  transferIn(endpointNumber: number, length: number, timeout?: number): Promise<{ data?: DataView | undefined; status: UsbTransferStatus }>;
  transferOut(endpointNumber: number, data: Uint8Array, timeout?: number): Promise<{ bytesWritten: number; status: UsbTransferStatus }>;
}

export interface WebUsbOptions {
  /** Interface to claim; default: the first whose alternate has a bulk IN and a bulk OUT endpoint. */
  interfaceNumber?: number;
  /** Endpoint numbers (without the direction bit); default: found on the interface. */
  endpointIn?: number;
  endpointOut?: number;
  /**
   * Bytes per bulk transfer, both directions; default 16 KiB, rounded down to a multiple of the
   * endpoint's max packet size so every transfer but the last of a write is made of full packets.
   */
  packetSize?: number;
  /** Per-transfer timeout passed to usb@3; an IN timeout just means "no data yet". Default 1000. */
  transferTimeoutMs?: number;
}

export interface WebUsbFilter {
  vendorId?: number;
  productId?: number;
  serialNumber?: string;
}

/** What findWebUsbDevices needs from a WebUSB object; injectable for tests. */
export interface WebUsbLike {
  getDevices(): Promise<readonly WebUsbDeviceLike[]>;
}

/**
 * All USB devices matching any filter (all devices for no filters), through usb's WebUSB with
 * allowAllDevices: a CLI has no browser permission prompt. Rejects where there is no USB bus.
 */
export async function findWebUsbDevices(filters: readonly WebUsbFilter[] = [], usb?: WebUsbLike): Promise<WebUsbDeviceLike[]> {
  const source: WebUsbLike = usb ?? (new WebUSB({ allowAllDevices: true }) as unknown as WebUsbLike);
  const devices = await source.getDevices();
  return devices.filter(
    (d) =>
      filters.length === 0 ||
      filters.some(
        (f) =>
          (f.vendorId === undefined || f.vendorId === d.vendorId) &&
          (f.productId === undefined || f.productId === d.productId) &&
          (f.serialNumber === undefined || f.serialNumber === d.serialNumber),
      ),
  );
}

const hex4 = (n: number) => n.toString(16).padStart(4, '0');
const isTimeout = (e: unknown) => e instanceof Error && /timed? ?out/i.test(`${e.name} ${e.message}`);

/** Pick the interface and bulk endpoints, from the options or from the descriptors. */
function chooseEndpoints(config: UsbConfigurationLike, options: WebUsbOptions) {
  const bulk = (alt: UsbAlternateLike, dir: 'in' | 'out') => alt.endpoints.find((e) => e.type === 'bulk' && e.direction === dir);
  const iface =
    options.interfaceNumber !== undefined
      ? config.interfaces.find((i) => i.interfaceNumber === options.interfaceNumber)
      : config.interfaces.find((i) => bulk(i.alternate, 'in') && bulk(i.alternate, 'out'));
  if (!iface) {
    throw new Error(
      options.interfaceNumber !== undefined
        ? `no interface ${options.interfaceNumber} in configuration ${config.configurationValue}`
        : 'no interface with a bulk IN and a bulk OUT endpoint',
    );
  }
  const pick = (dir: 'in' | 'out', wanted: number | undefined): UsbEndpointLike => {
    const ep = wanted !== undefined ? iface.alternate.endpoints.find((e) => e.endpointNumber === wanted && e.direction === dir) : bulk(iface.alternate, dir);
    if (!ep) throw new Error(`interface ${iface.interfaceNumber} has no ${dir.toUpperCase()} endpoint${wanted !== undefined ? ` ${wanted}` : ''}`);
    return ep;
  };
  return { iface, epIn: pick('in', options.endpointIn), epOut: pick('out', options.endpointOut) };
}

/**
 * Open the device, select its configuration, claim the bulk interface and resolve with a
 * Transport over it. A reader loop keeps one transferIn outstanding; writes are queued and
 * split into transfers of `packetSize` bytes. A transfer that fails for another reason than a
 * timeout or our own close (device unplugged: NetworkError / NotFoundError) ends the transport
 * with that error.
 */
export async function openWebUsb(device: WebUsbDeviceLike, options: WebUsbOptions = {}): Promise<Transport> {
  const timeout = options.transferTimeoutMs ?? 1000;
  const requested = options.packetSize ?? 16 * 1024;
  if (!Number.isInteger(requested) || requested < 1) throw new RangeError(`packetSize must be a positive integer, got ${requested}`);
  const wasOpen = device.opened;
  if (!wasOpen) await device.open();
  let chosen: ReturnType<typeof chooseEndpoints>;
  try {
    // A device in the unconfigured state (configuration null) gets its first configuration.
    if (!device.configuration) {
      const first = device.configurations[0];
      if (!first) throw new Error('device has no configurations');
      await device.selectConfiguration(first.configurationValue);
    }
    const config = device.configuration;
    if (!config) throw new Error('device did not take a configuration');
    chosen = chooseEndpoints(config, options);
    await device.claimInterface(chosen.iface.interfaceNumber);
  } catch (error) {
    // Leave the device as we found it: a failed open must not keep it opened.
    if (!wasOpen) await device.close().catch(() => {});
    throw error;
  }
  const { iface, epIn, epOut } = chosen;
  const roundTo = (size: number, packet: number) => (packet > 0 && size >= packet ? size - (size % packet) : size);
  const inSize = roundTo(requested, epIn.packetSize);
  const outSize = roundTo(requested, epOut.packetSize);

  const name = device.productName ? ` "${device.productName}"` : '';
  const core = new EndpointCore(`usb ${hex4(device.vendorId)}:${hex4(device.productId)}${name} if${iface.interfaceNumber}`);
  let closing: Promise<void> | undefined;

  const release = async () => {
    // Releasing the interface aborts the outstanding transferIn; errors here mean the device is gone.
    await device.releaseInterface(iface.interfaceNumber).catch(() => {});
    await device.close().catch(() => {});
  };
  const fail = (error: unknown) => {
    if (closing || core.ended) return;
    core.end(error instanceof Error ? error : new Error(String(error)));
    void release();
  };

  const readLoop = async () => {
    while (!closing && !core.ended) {
      let result: Awaited<ReturnType<WebUsbDeviceLike['transferIn']>>;
      try {
        result = await device.transferIn(epIn.endpointNumber, inSize, timeout);
      } catch (error) {
        if (closing || core.ended) return;
        if (isTimeout(error)) continue;
        return fail(error);
      }
      if (result.status === 'stall') {
        // A halted endpoint is cleared and the read retried (USB 2.0 §9.4.5), not fatal.
        try {
          await device.clearHalt?.('in', epIn.endpointNumber);
        } catch (error) {
          return fail(error);
        }
        continue;
      }
      if (result.status !== 'ok') return fail(new Error(`${core.description}: transferIn ${result.status}`));
      const view = result.data;
      // Copy: the binding may reuse its buffer for the next transfer.
      if (view && view.byteLength > 0) core.deliver(new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice());
    }
  };
  void readLoop();

  const sendAll = async (bytes: Uint8Array) => {
    let offset = 0;
    let stalls = 0;
    while (offset < bytes.length) {
      if (closing || core.ended) throw core.closedError();
      const slice = bytes.subarray(offset, offset + outSize);
      const r = await device.transferOut(epOut.endpointNumber, slice, timeout);
      if (r.status === 'stall') {
        if (++stalls > 3) throw new Error(`${core.description}: OUT endpoint keeps stalling`);
        await device.clearHalt?.('out', epOut.endpointNumber);
        continue;
      }
      offset += r.bytesWritten;
    }
  };
  // Writes go out one after another: WebUSB would interleave concurrent transferOut calls.
  let tail: Promise<void> = Promise.resolve();
  const write = (bytes: Uint8Array): Promise<void> => {
    try {
      checkBytes(bytes);
    } catch (e) {
      return Promise.reject(e);
    }
    if (closing || core.ended) return Promise.reject(core.closedError());
    const copy = Uint8Array.from(bytes);
    const done = tail.then(() => sendAll(copy));
    tail = done.catch((error) => fail(error));
    return done;
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await release();
      core.end();
    })();
    return closing;
  };
  return makeTransport(core, write, close);
}
