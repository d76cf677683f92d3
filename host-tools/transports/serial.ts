// Serial transport over node-serialport: a real tty, a socat pty, or a USB CDC-ACM device.
// Incoming bytes are split on 0x00 so the framer above mostly gets one whole frame per chunk.
import { SerialPort } from 'serialport';
import { SerialPortStream, type OpenOptions } from '@serialport/stream';
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';
import { BoundedDelimiterParser, DEFAULT_MAX_BUFFER } from './bounded-delimiter.js';

export interface SerialOptions {
  /** Line rate; default 115200. Ignored by ptys, honoured by real UARTs and most CDC-ACM bridges. */
  baudRate?: number;
  /**
   * The I/O binding; default is serialport's native one. Tests pass `SerialPortMock.binding`:
   * SerialPort and SerialPortMock differ only in this.
   */
  binding?: OpenOptions['binding'];
  /** Cap on bytes held while waiting for a 0x00 delimiter; see BoundedDelimiterParser. */
  maxBuffer?: number;
}

export interface SerialTransport extends Transport {
  /** The open port, for modem lines, baud changes and tests. Do not read from it directly. */
  readonly port: SerialPortStream;
  /** The splitter; its `overflows` counts lines that ran past maxBuffer without a delimiter. */
  readonly parser: BoundedDelimiterParser;
}

/**
 * Open `path` and resolve once it is open. The port is used raw: bytes pass untouched (ptys
 * must be created raw with echo off, see pty-pair.ts). Received bytes up to each 0x00 are
 * delivered per frame; a trailing partial frame is held until its delimiter arrives, or passed
 * on when it exceeds maxBuffer. write() resolves when the binding has written the bytes (to the
 * kernel; no tcdrain, which can block on a pty nobody reads). A close that close() did not ask
 * for (cable pulled, device gone, EIO on a pty whose peer died) ends it with an error.
 */
export async function openSerial(path: string, options: SerialOptions = {}): Promise<SerialTransport> {
  if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
  const baudRate = options.baudRate ?? 115_200;
  if (!Number.isInteger(baudRate) || baudRate <= 0) throw new RangeError(`baudRate must be a positive integer, got ${baudRate}`);
  const binding = options.binding ?? SerialPort.binding;
  const port = new SerialPortStream({ binding, path, baudRate, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  keepPollInterests(port);

  const core = new EndpointCore(`serial ${path}`);
  const parser = new BoundedDelimiterParser({
    delimiter: [0],
    includeDelimiter: true,
    maxBuffer: options.maxBuffer ?? DEFAULT_MAX_BUFFER,
  });
  port.pipe(parser);
  parser.on('data', (frame: Buffer) => core.deliver(frame));

  let closing: Promise<void> | undefined;
  const finish = (error?: Error) => {
    port.unpipe(parser);
    parser.destroy();
    core.end(error);
  };
  // serialport emits 'close' with a DisconnectedError when a read or write failed under it.
  port.on('close', (err?: Error | null) => finish(closing ? undefined : (err ?? new Error(`serial ${path}: port closed`))));
  // A stream error (a failed write destroys the Duplex) ends the transport; after the end it is moot.
  port.on('error', (err: Error) => {
    if (core.ended) return;
    finish(err);
    if (port.isOpen) port.close();
  });

  const write = async (bytes: Uint8Array): Promise<void> => {
    checkBytes(bytes);
    if (closing || core.ended) throw core.closedError();
    // Copy into a Buffer of our own: the stream may hold it past this call.
    const buf = Buffer.from(bytes);
    await new Promise<void>((resolve, reject) =>
      port.write(buf, (err) => (err ? reject(err) : resolve())),
    );
  };

  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      if (!port.isOpen) {
        finish(core.ended ? core.closeError : undefined);
        resolve();
        return;
      }
      port.close(() => {
        finish();
        resolve();
      });
    });
    return closing;
  };

  return Object.assign(makeTransport(core, write, close), { port, parser });
}

/** What the native poller of @serialport/bindings-cpp (Linux, macOS) offers its JS wrapper. */
interface UnixPoller {
  poll(eventFlag?: number): void;
  listenerCount(event: string): number;
}

/**
 * Work around a lost wake-up in @serialport/bindings-cpp 13 (src/poller.cpp, Poller::poll): each
 * poll(flag) restarts the libuv poll with that flag alone, so a read that starts waiting
 * ("readable") while a write waits ("writable", the tty's buffer full) drops the write's interest.
 * Unless bytes arrive later, the write never completes and every later one queues behind it. Found
 * by the fuzzer (hil/fuzz.test.ts): its link to `terminal run --port` on a pty stopped for good,
 * its own write of an oversize burst waiting while it read the module's replies; a module's
 * replies on a serial port go through the same path. Regression test in serial.test.ts.
 * Here every poll asks for the events still awaited too. A spurious event is harmless: the read or
 * write is retried and waits again on EAGAIN.
 */
function keepPollInterests(port: SerialPortStream): void {
  const poller = (port.port as unknown as { poller?: UnixPoller } | undefined)?.poller;
  if (!poller || typeof poller.poll !== 'function' || typeof poller.listenerCount !== 'function') return; // not the unix binding (mock, Windows)
  const poll = poller.poll.bind(poller);
  poller.poll = (eventFlag = 0) =>
    poll(eventFlag | (poller.listenerCount('readable') ? READABLE : 0) | (poller.listenerCount('writable') ? WRITABLE : 0) | (poller.listenerCount('disconnect') ? DISCONNECT : 0));
}
// Event flags of the bindings' Poller (EVENTS in @serialport/bindings-cpp/dist/poller.js).
const READABLE = 0b001;
const WRITABLE = 0b010;
const DISCONNECT = 0b100;
