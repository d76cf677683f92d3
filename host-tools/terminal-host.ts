// Hosts an emulated terminal module in this process on a real cable: a serial device (tty, pty,
// CDC-ACM; one host) or a TCP listener (up to 8 connections at once, each its own link session,
// docs/protocol.md 4.9). Used by `qkt terminal run`, `qkt demo` and the HIL rig. The host holds
// the image's lock (`<image>.lock`) for its whole life: a second module on the same image is
// refused at once, with the pid.
import { createTerminal } from '../firmware/terminal.js';
import type { Terminal } from '../firmware/terminal.js';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { PowerCutError } from '../firmware/flash/errors.js';
import type { Payload } from '../firmware/link/codec.js';
import type { Transport } from '../firmware/link/transport.js';
import { connectionRefuser } from './transports/refuse.js';
import { closeWhenIdle } from './transports/idle.js';
import type { IdleWatch } from './transports/idle.js';
import { openSerial } from './transports/serial.js';
import { listenTcp, parseTcpAddress } from './transports/tcp.js';
import { paced } from './transports/pacing.js';
import type { ReadFlow } from './transports/pacing.js';
import { isPty } from './link/open.js';
import { NoDeviceError, errnoOf } from './link/errors.js';
import { TerminalHostError } from './terminal-host-error.js';
import { lockSync } from './lock.js';
import { flashLockOptions } from './flash-lock.js';
import { requireImage } from './flash-image.js';

export { TerminalHostError };

export interface TerminalHostOptions {
  flashPath: string;
  /** Start a blank module when the image file does not exist (default: MissingImageError). */
  createImage?: boolean;
  port?: string;
  listen?: string;
  baud?: number;
  powerCutAfter?: number;
  onPowerCut?: () => void;
  /** Fire LOW_WATERMARK events when stored key bits fall below this (default: never). */
  lowWatermarkBits?: number;
  /** TCP: connections served at once (default 8); one more is answered DENIED and closed. */
  maxClients?: number;
  /** TCP: a connection that sends no valid request frame for this long is closed (default 120 s). */
  idleMs?: number;
  /** TCP: a connection whose first valid frame has not come this long after it opened is closed (default 10 s). */
  firstFrameMs?: number;
  /** TCP: with every slot taken, a newcomer evicts the connection idle longest if idle this long (default 30 s). */
  evictIdleMs?: number;
  /** Told of each connection the host closes on its own (idle, no frame, evicted, not reading), for a log line. */
  onDrop?: (why: string) => void;
}

/**
 * TCP connections a module serves at once, how long one may go without a valid request frame, how
 * soon its first must come, and how idle one must be for a newcomer to evict it (docs/protocol.md 4.9).
 */
export const TCP_MAX_CLIENTS = 8;
export const TCP_IDLE_MS = 120_000;
export const TCP_FIRST_FRAME_MS = 10_000;
export const TCP_EVICT_IDLE_MS = 30_000;

/** Answers every request DENIED: the session of a connection over the limit, until it is closed. */
export interface TerminalHost {
  /** Where it serves: the serial path or tcp:HOST:PORT with the real port. */
  address: string;
  terminal: Terminal;
  status(): Payload;
  /** Resolves when the cable is gone for good (serial port closed under us). */
  closed: Promise<void>;
  close(): Promise<void>;
}

export async function startTerminalHost(o: TerminalHostOptions): Promise<TerminalHost> {
  // The module's flash: an image file; a missing one is a blank, unenrolled module's flash, made
  // only when asked (before the lock, which would leave a file beside a mistyped path).
  requireImage(o.flashPath, o.createImage === true);
  const imageLock = lockSync(o.flashPath, flashLockOptions(o.flashPath));
  let flash: NorFlash;
  try {
    flash = NorFlash.open(o.flashPath);
  } catch (e) {
    imageLock.release();
    throw new TerminalHostError('IMAGE', `cannot use flash image ${o.flashPath}: ${(e as Error).message}`, errnoOf(e));
  }
  if (o.powerCutAfter) flash.faults.cutAfter(o.powerCutAfter, 'torn');
  const closeFlash = () => {
    try {
      flash.close();
    } finally {
      imageLock.release();
    }
  };
  let terminal: Terminal;
  try {
    terminal = createTerminal({ flash, ...(o.baud ? { lineRate: o.baud } : {}), ...(o.lowWatermarkBits ? { lowWatermarkBits: o.lowWatermarkBits } : {}), ...(o.onPowerCut ? { onPowerCut: () => o.onPowerCut!() } : {}) });
  } catch (e) {
    // A cut during boot (mount, boot audit record) is a cut like any other.
    if (e instanceof PowerCutError && o.onPowerCut) o.onPowerCut();
    closeFlash();
    throw e;
  }
  // --baud on a pty or TCP: the module's end behaves like a UART at that rate in both directions
  // (its replies leave, and the host's bytes are taken, at baud/10 bytes per second), whether or
  // not the host paces too. On a pty the reader pauses while bytes wait, so a faster host is held
  // back by the kernel's pty buffer; on TCP more than 1 MiB waiting is dropped, as a UART overruns.
  const pace = (t: Transport, readFlow?: ReadFlow): Transport => (o.baud ? paced(t, { baud: o.baud, ...(readFlow ? { readFlow } : {}) }) : t);
  if (o.port) {
    const serial = await openSerial(o.port, o.baud ? { baudRate: o.baud } : {}).catch((e: Error) => {
      closeFlash();
      throw new NoDeviceError(o.port!, `cannot open ${o.port}: ${e.message}`, errnoOf(e));
    });
    const transport = o.baud && isPty(o.port) ? pace(serial, { pause: () => serial.parser.pause(), resume: () => serial.parser.resume() }) : serial;
    const closed = new Promise<void>((resolve) => transport.onClose(() => resolve()));
    // The module's only cable: a host that stops reading loses answers, never the module's port.
    terminal.attach(transport, { overflow: 'drop' });
    return {
      address: o.port,
      terminal,
      status: () => terminal.status(),
      closed,
      close: async () => {
        await transport.close();
        closeFlash();
      },
    };
  }
  const { host, port } = parseTcpAddress(o.listen!);
  const maxClients = o.maxClients ?? TCP_MAX_CLIENTS;
  const idleMs = o.idleMs ?? TCP_IDLE_MS;
  const firstMs = o.firstFrameMs ?? TCP_FIRST_FRAME_MS;
  const evictIdleMs = o.evictIdleMs ?? TCP_EVICT_IDLE_MS;
  const live = new Map<Transport, IdleWatch>();
  const refuse = connectionRefuser(`terminal serves ${maxClients} connections at once; try again later`, maxClients);
  /**
   * With every slot taken: the oldest connection that has sent no valid frame yet (a client sends
   * its first at once; one that has not is a stranger holding a slot, however recently it came:
   * sockets that never send and reconnect as they are closed held all 8 slots in a review), else the
   * connection idle longest (by valid frames), if idle long enough to evict.
   */
  const evictable = (): Transport | undefined => {
    let silent: [Transport, number] | undefined;
    let worst: [Transport, number] | undefined;
    for (const [tr, w] of live) {
      const idle = w.idleFor();
      if (!w.framed() && (!silent || idle > silent[1])) silent = [tr, idle];
      if (!worst || idle > worst[1]) worst = [tr, idle];
    }
    if (silent) return silent[0];
    return worst && worst[1] >= evictIdleMs ? worst[0] : undefined;
  };
  const listener = await listenTcp(host, port, (t) => {
    if (live.size >= maxClients) {
      // Slots are for connections in use: one silent (no valid frame) for evictIdleMs gives its
      // slot to the newcomer. Its link closes as any other (its transfer freed for a resume).
      const victim = evictable();
      if (victim) {
        o.onDrop?.(live.get(victim)?.framed() === false ? 'evicted: no valid frame yet with every slot taken' : 'evicted: idle longest with every slot taken');
        live.delete(victim);
        void victim.close();
      }
    }
    if (live.size >= maxClients) {
      // Over the limit: a clear answer, not a hang. The connection's requests (its PARAMS first)
      // are answered DENIED, then it is closed. Refused connections are bounded too: past as many
      // again, a connection is closed at once.
      refuse(t);
      return;
    }
    // Each connection is a link of its own; closing one never touches another's. Only valid
    // request frames (the link knows them) keep it open, not bytes.
    const tr = pace(t);
    const watch = closeWhenIdle(tr, idleMs, { firstMs, onIdle: (why) => o.onDrop?.(why === 'idle' ? 'idle' : 'no valid frame') });
    live.set(t, watch);
    t.onClose(() => live.delete(t));
    terminal.attach(tr, { onFrame: () => watch.frame(), onShed: (why) => o.onDrop?.(why) });
  }).catch((e: Error) => {
    closeFlash();
    throw new TerminalHostError('LISTEN', `cannot listen on ${o.listen}: ${e.message}`, errnoOf(e));
  });
  return {
    address: `tcp:${listener.address.host}:${listener.address.port}`,
    terminal,
    status: () => terminal.status(),
    closed: new Promise<void>(() => undefined),
    close: async () => {
      await listener.close();
      closeFlash();
    },
  };
}
