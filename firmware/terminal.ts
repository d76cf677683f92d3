// The terminal crypto module as firmware: wires the link (transport -> framing -> dispatch) to the
// command groups. All I/O is injected, so the same module runs in-process, on a pty, TCP or USB.
import { DeviceLink } from './link/device-link.js';
import type { DeviceLinkLimits } from './link/device-link.js';
import { Dispatcher } from './link/dispatch.js';
import { HEADER_SIZE, CRC_SIZE } from './link/frame.js';
import type { Transport } from './link/transport.js';
import { systemGroup } from './commands/system.js';
import { diagGroup } from './commands/diag.js';
import { FIRMWARE } from './version.js';
import type { Payload } from './link/codec.js';

/**
 * Link limits. RAM budget, stated like an MCU's: one receive buffer (COBS of maxBody), `window`
 * queued requests including the one executing, and a response cache of 2*window+2 frames: about
 * 8.3 KiB + 4 x 8.3 KiB + 10 x 8.3 KiB = 125 KiB worst case; typical responses are tiny.
 */
export const DEFAULT_LIMITS: DeviceLinkLimits = { maxBody: 8192 + 64, window: 4 };

/** Bytes of framing around a bulk chunk's data: header, CRC and the CBOR map {t, o, d}. */
export const CHUNK_OVERHEAD = HEADER_SIZE + CRC_SIZE + 40;

export interface TerminalOptions {
  /** A cable to attach at once (more can be attached later, one link each). */
  transport?: Transport;
  limits?: Partial<DeviceLinkLimits>;
  /** Extra status fields (pool, identity) from the services above the link. */
  status?: () => Payload;
}

export interface Terminal {
  /** The most recently attached link. */
  readonly link: DeviceLink;
  readonly dispatcher: Dispatcher;
  /** Serve the module on another cable (e.g. each TCP connection); the module state is shared. */
  attach(transport: Transport): DeviceLink;
  status(): Payload;
}

export function createTerminal(o: TerminalOptions): Terminal {
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const maxChunk = limits.maxBody - CHUNK_OVERHEAD;
  const dispatcher = new Dispatcher();
  let link: DeviceLink | undefined;
  const attach = (transport: Transport): DeviceLink => (link = new DeviceLink(transport, dispatcher, limits));
  if (o.transport) attach(o.transport);
  const status = (): Payload => ({
    terminalId: null,
    enrolled: false,
    firmware: FIRMWARE,
    pool: { storedKeyBits: 0, maxKeyBits: 0, consumedKeyBits: 0, batches: [] },
    ...o.status?.(),
    link: link ? { ...link.stats } : {},
  });
  dispatcher.register(
    systemGroup({
      params: () => ({ maxFrame: limits.maxBody, window: limits.window, maxChunk, firmware: FIRMWARE }),
      status,
    }),
  );
  dispatcher.register(diagGroup({ maxChunk }));
  return {
    get link(): DeviceLink {
      if (!link) throw new Error('no transport attached');
      return link;
    },
    dispatcher,
    attach,
    status,
  };
}
