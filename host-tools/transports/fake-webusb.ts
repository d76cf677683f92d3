// A fake WebUSB device for tests and the HIL rig on machines without USB: the USBDevice subset
// openWebUsb uses, over an in-process byte pipe whose far end (`peer`) is the device firmware.
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';
import type { UsbConfigurationLike, UsbTransferStatus, WebUsbDeviceLike } from './webusb.js';

/** Errors named as WebUSB (DOMException) names them, so code can branch on `name`. */
function usbError(name: string, message: string): Error {
  const e = new Error(message);
  e.name = name;
  return e;
}

export interface FakeWebUsbOptions {
  vendorId?: number;
  productId?: number;
  productName?: string;
  serialNumber?: string;
  /** Max packet size of the bulk endpoints; 64 (full speed) by default. */
  packetSize?: number;
}

export const FAKE_INTERFACE = 1; // interface 0 is a bulk-less one, so selection is exercised
export const FAKE_EP_IN = 1;
export const FAKE_EP_OUT = 2;

/**
 * Enforces the order a real device does: transfers need open(), a configuration and a claimed
 * interface, else InvalidStateError. disconnect() is a cable pull: every pending and later call
 * rejects with NetworkError and the peer ends with an error.
 */
export class FakeWebUsbDevice implements WebUsbDeviceLike {
  readonly vendorId: number;
  readonly productId: number;
  readonly manufacturerName = 'qkt';
  readonly productName: string;
  readonly serialNumber: string;
  readonly configurations: readonly UsbConfigurationLike[];
  /** The device side of the pipe: what the emulated firmware reads and writes. */
  readonly peer: Transport;
  /** Calls made, in order, for tests that check the open sequence. */
  readonly calls: string[] = [];

  #opened = false;
  #configuration: UsbConfigurationLike | null = null;
  #claimed = new Set<number>();
  #gone = false;
  #stall = { in: false, out: false };
  #toHost: Uint8Array[] = [];
  #toHostBytes = 0;
  #waiter: ((error?: Error) => void) | undefined;
  #peerCore: EndpointCore;

  constructor(options: FakeWebUsbOptions = {}) {
    this.vendorId = options.vendorId ?? 0x1209; // pid.codes test VID
    this.productId = options.productId ?? 0x0001;
    this.productName = options.productName ?? 'qkt fake terminal';
    this.serialNumber = options.serialNumber ?? 'FAKE0001';
    const packetSize = options.packetSize ?? 64;
    this.configurations = [
      {
        configurationValue: 1,
        interfaces: [
          { interfaceNumber: 0, alternate: { alternateSetting: 0, interfaceClass: 0x02, endpoints: [{ endpointNumber: 3, direction: 'in', type: 'interrupt', packetSize: 8 }] } },
          {
            interfaceNumber: FAKE_INTERFACE,
            alternate: {
              alternateSetting: 0,
              interfaceClass: 0xff,
              endpoints: [
                { endpointNumber: FAKE_EP_IN, direction: 'in', type: 'bulk', packetSize },
                { endpointNumber: FAKE_EP_OUT, direction: 'out', type: 'bulk', packetSize },
              ],
            },
          },
        ],
      },
    ];
    this.#peerCore = new EndpointCore(`fake usb device ${this.serialNumber}`);
    this.peer = makeTransport(
      this.#peerCore,
      async (bytes) => {
        checkBytes(bytes);
        if (this.#peerCore.ended) throw this.#peerCore.closedError();
        this.#toHost.push(Uint8Array.from(bytes));
        this.#toHostBytes += bytes.length;
        this.#wake();
      },
      async () => this.#unplug(undefined, 'the device firmware stopped'),
    );
  }

  get opened(): boolean {
    return this.#opened;
  }
  get configuration(): UsbConfigurationLike | null {
    return this.#configuration;
  }
  /** Bytes the firmware wrote that the host has not read yet. */
  get pendingToHost(): number {
    return this.#toHostBytes;
  }

  /** Simulate a cable pull. */
  disconnect(): void {
    this.#unplug(new Error(`${this.#peerCore.description}: cable pulled`), 'device disconnected');
  }

  /** Make the next transfer on that direction return status "stall" until clearHalt. */
  stall(direction: 'in' | 'out'): void {
    this.#stall[direction] = true;
  }

  #unplug(peerError: Error | undefined, reason: string): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#opened = false;
    this.#claimed.clear();
    this.#wake(usbError('NetworkError', reason));
    this.#peerCore.end(peerError);
  }

  #wake(error?: Error): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(error);
  }

  #check(call: string, needs: { open?: boolean; claimed?: number }): void {
    this.calls.push(call);
    if (this.#gone) throw usbError('NotFoundError', `${call}: device disconnected`);
    if (needs.open && !this.#opened) throw usbError('InvalidStateError', `${call}: device not opened`);
    if (needs.claimed !== undefined && !this.#claimed.has(needs.claimed)) {
      throw usbError('InvalidStateError', `${call}: interface ${needs.claimed} not claimed`);
    }
  }

  async open(): Promise<void> {
    this.#check('open', {});
    this.#opened = true;
  }

  async close(): Promise<void> {
    this.#check('close', {});
    this.#claimed.clear();
    this.#wake(usbError('AbortError', 'device closed'));
    this.#opened = false;
    // The host let go of the device: the firmware side sees its link end.
    this.#peerCore.end(new Error(`${this.#peerCore.description}: host closed the device`));
  }

  async selectConfiguration(value: number): Promise<void> {
    this.#check(`selectConfiguration(${value})`, { open: true });
    const c = this.configurations.find((x) => x.configurationValue === value);
    if (!c) throw usbError('NotFoundError', `no configuration ${value}`);
    this.#configuration = c;
  }

  async claimInterface(n: number): Promise<void> {
    this.#check(`claimInterface(${n})`, { open: true });
    if (!this.#configuration?.interfaces.some((i) => i.interfaceNumber === n)) throw usbError('NotFoundError', `no interface ${n}`);
    this.#claimed.add(n);
  }

  async releaseInterface(n: number): Promise<void> {
    this.#check(`releaseInterface(${n})`, { open: true, claimed: n });
    this.#claimed.delete(n);
    // Releasing aborts transfers in flight on the interface, as in the WebUSB spec.
    this.#wake(usbError('AbortError', 'interface released'));
  }

  async clearHalt(direction: 'in' | 'out', endpointNumber: number): Promise<void> {
    this.#check(`clearHalt(${direction},${endpointNumber})`, { open: true, claimed: FAKE_INTERFACE });
    this.#stall[direction] = false;
  }

  async transferIn(endpointNumber: number, length: number): Promise<{ data?: DataView; status: UsbTransferStatus }> {
    this.#check('transferIn', { open: true, claimed: FAKE_INTERFACE });
    if (endpointNumber !== FAKE_EP_IN) throw usbError('NotFoundError', `no IN endpoint ${endpointNumber}`);
    if (this.#waiter) throw usbError('InvalidStateError', 'transferIn already pending (the fake allows one)');
    if (this.#stall.in) return { status: 'stall' };
    while (this.#toHostBytes === 0) {
      await new Promise<void>((resolve, reject) => (this.#waiter = (e) => (e ? reject(e) : resolve())));
    }
    // Hand over up to `length` bytes, as a transfer ends on a full buffer or a short packet.
    const out = new Uint8Array(Math.min(length, this.#toHostBytes));
    let filled = 0;
    while (filled < out.length) {
      const head = this.#toHost[0]!;
      const take = Math.min(head.length, out.length - filled);
      out.set(head.subarray(0, take), filled);
      filled += take;
      if (take === head.length) this.#toHost.shift();
      else this.#toHost[0] = head.subarray(take);
    }
    this.#toHostBytes -= filled;
    return { data: new DataView(out.buffer), status: 'ok' };
  }

  async transferOut(endpointNumber: number, data: Uint8Array): Promise<{ bytesWritten: number; status: UsbTransferStatus }> {
    this.#check('transferOut', { open: true, claimed: FAKE_INTERFACE });
    if (endpointNumber !== FAKE_EP_OUT) throw usbError('NotFoundError', `no OUT endpoint ${endpointNumber}`);
    if (this.#stall.out) return { bytesWritten: 0, status: 'stall' };
    const copy = Uint8Array.from(data);
    // The bus takes time: deliver on a later macrotask, like the in-process pair.
    await new Promise<void>((r) => setImmediate(r));
    if (this.#gone) throw usbError('NetworkError', 'device disconnected');
    this.#peerCore.deliver(copy);
    return { bytesWritten: copy.length, status: 'ok' };
  }
}
