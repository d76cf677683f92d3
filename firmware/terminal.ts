// The terminal crypto module as firmware. It boots like one: power-on self-tests, mount the
// secure area and the key pool from flash, then serve the link. All I/O is injected (transport,
// flash, clock, RNG), so the same module runs in-process, on a pty, TCP or USB.
import { randomBytes } from 'node:crypto';
import { DeviceLink } from './link/device-link.js';
import type { DeviceLinkHooks, DeviceLinkLimits } from './link/device-link.js';
import { Dispatcher } from './link/dispatch.js';
import type { CommandGroup, RequestContext } from './link/dispatch.js';
import { HEADER_SIZE, CRC_SIZE } from './link/frame.js';
import { Group, SystemEvent } from './link/groups.js';
import { LinkError, Rc } from './link/errors.js';
import type { Transport } from './link/transport.js';
import type { Payload } from './link/codec.js';
import { systemGroup } from './commands/system.js';
import { diagGroup } from './commands/diag.js';
import { injectGroup } from './commands/inject.js';
import { keysGroup } from './commands/keys.js';
import { adminGroup } from './commands/admin.js';
import type { ModuleContext } from './commands/context.js';
import { runSelfTests } from './crypto/selftest.js';
import type { SelfTestName } from './crypto/selftest.js';
import { KeyPool } from './keypool/key-pool.js';
import type { BlockDevice } from './flash/block-device.js';
import { PowerCutError } from './flash/errors.js';
import { openSecureArea, SECURE_SECTORS } from './secure/secure-area.js';
import { POOL_OPTIONS } from './secure/enroll.js';
import type { SecureArea } from './secure/types.js';
import { FIRMWARE } from './version.js';

/**
 * Link limits. RAM budget, stated like an MCU's: one receive buffer (COBS of maxBody), `window`
 * queued requests including the one executing, and a response cache of 2*window+2 frames: about
 * 8.3 KiB + 4 x 8.3 KiB + 10 x 8.3 KiB = 125 KiB worst case; typical responses are tiny. The
 * inject path adds one sealed chunk (4 KiB + 16) and the service path one 4 KiB message.
 */
export const DEFAULT_LIMITS: DeviceLinkLimits = { maxBody: 8192 + 64, window: 4 };

/** Bytes of framing around a bulk chunk's data: header, CRC and the CBOR map {t, o, d}. */
export const CHUNK_OVERHEAD = HEADER_SIZE + CRC_SIZE + 40;


export type ModuleState = 'ready' | 'unenrolled' | 'selftest-failed' | 'flash-error';

export interface TerminalOptions {
  /** A cable to attach at once (more can be attached later, one link each). */
  transport?: Transport;
  /** The module's NOR flash. Without one the module is blank (link tests, benchmarks). */
  flash?: BlockDevice;
  clock?: () => number;
  rng?: (n: number) => Uint8Array;
  limits?: Partial<DeviceLinkLimits>;
  /** Fault injection: make one power-on self-test fail. */
  selfTest?: { corrupt?: SelfTestName };
  /** A handler still running after this long is stopped and the module state reloaded (default 5 s; 0 = off). */
  watchdogMs?: number;
  /** Called when the flash lost power mid-operation: the module is dead until rebooted. */
  onPowerCut?: (e: PowerCutError) => void;
  /**
   * The line rate of the module's link in baud, when it has one (a UART's rate; an emulated
   * module's pacing, `terminal run --baud`): told in PARAMS (`baud`) so a host times its replies
   * by the slower end.
   */
  lineRate?: number;
  /** Fire a LOW_WATERMARK event when stored key bits fall below this. */
  lowWatermarkBits?: number;
}

export interface Terminal {
  /** The most recently attached link. */
  readonly link: DeviceLink;
  readonly dispatcher: Dispatcher;
  readonly state: ModuleState;
  /**
   * Serve the module on another cable (e.g. each TCP connection): a link of its own (window,
   * sequence numbers, response cache, receive state); the module state behind it is shared and
   * every link's requests run one at a time through the one dispatcher.
   */
  attach(transport: Transport, hooks?: Pick<DeviceLinkHooks, 'onFrame' | 'onShed' | 'overflow'>): DeviceLink;
  /** Links attached and not yet closed. */
  readonly linkCount: number;
  status(): Payload;
}

export function createTerminal(o: TerminalOptions = {}): Terminal {
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const maxChunk = limits.maxBody - CHUNK_OVERHEAD;
  const clock = o.clock ?? Date.now;
  const rng = o.rng ?? ((n: number) => new Uint8Array(randomBytes(n)));
  const dispatcher = new Dispatcher();
  let link: DeviceLink | undefined;
  const links: DeviceLink[] = [];

  // ---- boot
  let state = 'ready' as ModuleState;
  let reason: string | undefined;
  let secure: SecureArea | undefined;
  let pool: KeyPool | undefined;
  const selfTest = runSelfTests(o.selfTest);

  const mount = (): void => {
    pool = undefined;
    secure = undefined;
    if (!selfTest.ok) {
      state = 'selftest-failed';
      reason = `self-test failed: ${selfTest.results.filter((r) => !r.ok).map((r) => r.name).join(', ')}`;
      // The secure area is still read, so status can say who the module is and show its log.
      try {
        if (o.flash) secure = openSecureArea(o.flash, clock);
      } catch {
        /* a blank or damaged secure area: nothing to show */
      }
      return;
    }
    if (!o.flash) {
      state = 'unenrolled';
      return;
    }
    try {
      secure = openSecureArea(o.flash, clock);
      if (!secure.terminalId()) {
        const h = secure.health();
        // A damaged area without a readable identity: say so, never pose as a blank module.
        state = h.damaged ? 'flash-error' : 'unenrolled';
        reason = h.damaged ? `secure area: ${h.reason}` : undefined;
        return;
      }
      pool = KeyPool.mount(o.flash, {
        ...POOL_OPTIONS,
        ...(o.lowWatermarkBits ? { lowWatermarkBits: o.lowWatermarkBits } : {}),
        onLowWatermark: (s) => {
          for (const l of links) void l.emit(Group.SYSTEM, SystemEvent.LOW_WATERMARK, { storedKeyBits: s.storedKeyBits });
        },
      });
      const p = pool;
      // Only the full ids of live batches survive a compaction of the secure area.
      secure.setLiveBatches(() => {
        const st = p.status();
        return [...st.batches.map((b) => b.batchId), ...(st.staging ? [st.staging.batchId] : [])];
      });
      state = 'ready';
      reason = undefined;
    } catch (e) {
      if (e instanceof PowerCutError) throw e;
      state = 'flash-error';
      reason = (e as Error).message;
    }
  };
  mount();
  if (state === 'selftest-failed') {
    // Logged where it can be: a module whose crypto is wrong still has a working flash.
    try {
      const s = secure as SecureArea | undefined;
      if (s?.terminalId()) s.audit('selftest-failed', reason ?? '');
    } catch {
      /* nowhere to log it */
    }
  } else {
    const s = secure as SecureArea | undefined; // set by mount()
    if (s?.terminalId()) s.audit('boot', FIRMWARE);
  }

  const ready = (): void => {
    if (state === 'selftest-failed') throw new LinkError(Rc.SELF_TEST_FAILED, reason);
    if (state === 'unenrolled') throw new LinkError(Rc.NOT_ENROLLED, 'module not enrolled');
    if (state === 'flash-error') throw new LinkError(Rc.FLASH_ERROR, reason);
  };
  const ctx: ModuleContext = {
    identity: () => {
      ready();
      return secure!.identity()!;
    },
    pool: () => {
      ready();
      return pool!;
    },
    secure: () => {
      ready();
      return secure!;
    },
    clock,
    rng,
  };

  const batchHex = (poolId: number): string => {
    const full = secure?.batchIdFor(poolId);
    return full ? Buffer.from(full).toString('hex') : poolId.toString(16).padStart(8, '0');
  };
  const status = (c?: RequestContext): Payload => {
    // The terminal id alone: STATUS never takes a copy of the device key.
    const terminalId = state === 'unenrolled' ? undefined : secure?.terminalId();
    const ps = pool?.status();
    const health = secure?.health();
    return {
      terminalId: terminalId ?? null,
      enrolled: terminalId !== undefined,
      firmware: FIRMWARE,
      state,
      ...(reason ? { reason } : {}),
      selfTest: { ok: selfTest.ok, failed: selfTest.results.filter((r) => !r.ok).map((r) => r.name) },
      pool: ps
        ? {
            storedKeyBits: ps.storedKeyBits,
            maxKeyBits: ps.maxKeyBits,
            consumedKeyBits: ps.consumedKeyBits,
            batches: ps.batches.map((b) => ({ batchId: batchHex(b.batchId), seq: b.seq, purpose: b.purpose, bits: b.bits, consumedBits: b.consumedBits })),
            staging: ps.staging ? { batchId: batchHex(ps.staging.batchId), seq: ps.staging.seq, bits: ps.staging.bits, durableBits: ps.staging.durableBits } : null,
            lastSeq: ps.lastSeq,
          }
        : { storedKeyBits: 0, maxKeyBits: 0, consumedKeyBits: 0, batches: [], staging: null, lastSeq: null },
      audit: { events: secure && terminalId ? secure.auditCount() : 0, pendingRefusals: health?.pendingRefusals ?? 0 },
      secureArea: { damaged: health?.damaged ?? false, ...(health?.reason ? { reason: health.reason } : {}) },
      // The counters of the link asking (each connection has its own); else the last attached.
      link: c?.link ? { ...c.link.stats } : link ? { ...link.stats } : {},
    };
  };

  dispatcher.register(
    systemGroup({
      params: () => ({
        maxFrame: limits.maxBody,
        window: limits.window,
        maxChunk,
        firmware: FIRMWARE,
        ...(o.lineRate ? { baud: o.lineRate } : {}),
        ...(o.flash ? { flash: { ...o.flash.geometry }, secureSectors: SECURE_SECTORS } : {}),
      }),
      status,
      auditLog: (from, max) => {
        if (!secure || !secure.terminalId()) return { events: [], total: 0 };
        return { events: secure.auditLog(from, max).map((e) => ({ ...e })), total: secure.auditCount() };
      },
    }),
  );
  const diag = diagGroup({ maxChunk, rng });
  dispatcher.register(diag);
  const inject = injectGroup(ctx);
  const keys = keysGroup(ctx);
  /** Forget in-RAM state (open transfer, sessions) and reload from flash, as a reset would. */
  const reset = (): void => {
    inject.reset();
    keys.reset();
    try {
      mount();
    } catch (e) {
      // The flash has no power: the cut was reported when it happened; the module is dead.
      if (!(e instanceof PowerCutError)) throw e;
    }
  };
  // Service groups: refused unless the module is ready; a flash failure inside one resets the
  // module's state from flash, so no half-applied RAM state outlives it.
  const guarded = (g: CommandGroup): CommandGroup => ({
    ...g,
    guard: (c) => {
      ready();
      g.guard?.(c);
    },
    commands: Object.fromEntries(
      Object.entries(g.commands).map(([id, h]) => [
        id,
        async (p: Payload, c: RequestContext) => {
          try {
            return await h(p, c);
          } catch (e) {
            if (e instanceof LinkError && e.rc === Rc.FLASH_ERROR) reset();
            throw e;
          }
        },
      ]),
    ),
  });
  dispatcher.register(guarded(inject));
  dispatcher.register(guarded(keys));
  dispatcher.register(
    guarded(
      adminGroup(
        ctx,
        () => {
          secure!.factoryReset();
          mount();
        },
        () => keys.reset(),
      ),
    ),
  );
  dispatcher.onInternalError = (e) => {
    if (e instanceof PowerCutError) o.onPowerCut?.(e);
  };
  const watchdogMs = o.watchdogMs ?? 5000;
  if (watchdogMs > 0) {
    dispatcher.watchdog = {
      ms: watchdogMs,
      onExpire: (ctx) => {
        // As a hardware watchdog would: drop the stuck handler's in-RAM state, reload from flash.
        reset();
        secure?.audit('watchdog-reset', `group ${ctx.group} command ${ctx.command}`);
      },
    };
  }

  const attach = (transport: Transport, hooks: Pick<DeviceLinkHooks, 'onFrame' | 'onShed' | 'overflow'> = {}): DeviceLink => {
    const mine = new DeviceLink(transport, dispatcher, limits, { ...hooks, clock });
    link = mine;
    links.push(mine);
    // The link that closed leaves the event list, not the one attached last, and the transfer
    // and KEYS sessions it owned are dropped (keys wiped) in the dispatcher's queue, after its
    // last request ran; the other links and their state are untouched (docs/protocol.md 4.9).
    transport.onClose(() => {
      const i = links.indexOf(mine);
      if (i >= 0) links.splice(i, 1);
      void dispatcher.exclusive(() => {
        inject.release(mine);
        keys.release(mine);
        diag.release(mine);
      });
    });
    return mine;
  };
  if (o.transport) attach(o.transport);
  return {
    get link(): DeviceLink {
      if (!link) throw new Error('no transport attached');
      return link;
    },
    get state() {
      return state;
    },
    get linkCount() {
      return links.length;
    },
    dispatcher,
    attach,
    status: () => status(),
  };
}
