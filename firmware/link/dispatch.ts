// Handler registry and dispatch (docs/protocol.md, "Dispatch"): command groups are tables of
// handlers indexed by command id. A missing handler answers NOT_SUPPORTED; a handler's typed
// LinkError becomes an error reply; anything else becomes INTERNAL with no stack on the wire.
import { LinkError, Rc } from './errors.js';
import type { Payload } from './codec.js';

export interface RequestContext {
  group: number;
  command: number;
  seq: number;
  /** The link (one host's session) the request came on: an identity handlers may own state by. */
  link?: LinkPeer;
}

/** What a handler may know of the link a request came on: who it is and whether it is still open. */
export interface LinkPeer {
  readonly open: boolean;
  /** The link's counters (framing, requests, duplicates, busy), for STATUS. */
  readonly stats: object;
  /** Module clock when the link last received bytes: its peer is alive (e.g. mid-way through a slow chunk). */
  readonly lastHeard?: number;
}

export type Handler = (payload: Payload, ctx: RequestContext) => Payload | Promise<Payload>;

export interface CommandGroup {
  id: number;
  name: string;
  commands: Readonly<Record<number, Handler>>;
  /** Runs before every command of the group (e.g. "module must be enrolled"); throws LinkError. */
  guard?: (ctx: RequestContext) => void;
}

export type DispatchOutcome = { ok: true; payload: Payload } | { ok: false; error: LinkError };

export class Dispatcher {
  private readonly groups = new Map<number, CommandGroup>();
  /** Called with non-LinkError failures, for a device-side log. Must not put them on the wire. */
  onInternalError: ((e: unknown, ctx: RequestContext) => void) | undefined;
  /** A handler still running after `ms` is abandoned: `onExpire` resets, the host gets INTERNAL. */
  watchdog: { ms: number; onExpire: (ctx: RequestContext) => void } | undefined;

  register(group: CommandGroup): void {
    if (this.groups.has(group.id)) throw new Error(`group ${group.id} is already registered`);
    this.groups.set(group.id, group);
  }

  /** The end of the queue of work on module state: every dispatch and `exclusive` runs after it. */
  private tail: Promise<unknown> = Promise.resolve();

  /**
   * Run a request's handler. Requests from every link run one at a time, in arrival order: the
   * dispatcher is the one writer of the module state behind it (docs/protocol.md 4.5), so an
   * async handler of one link never interleaves with another link's.
   */
  dispatch(payload: Payload, ctx: RequestContext): Promise<DispatchOutcome> {
    return this.exclusive(() => this.run(payload, ctx));
  }

  /**
   * Run `fn` in the same queue as the handlers (e.g. dropping a closed link's state). Work queued
   * behind other work starts on a turn of its own (setImmediate): handlers that finish without
   * yielding would otherwise run the whole queue before the event loop delivers a connection's
   * close. Work that finds the queue empty starts at once (no turn is lost on an idle module).
   */
  exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const start = this.queued > 0 ? this.tail.then(() => new Promise<void>((resolve) => setImmediate(resolve))) : this.tail;
    this.queued++;
    const done = start.then(fn).finally(() => this.queued--);
    this.tail = done.catch(() => undefined);
    return done;
  }

  /** Work queued or running in `exclusive`. */
  private queued = 0;

  private async run(payload: Payload, ctx: RequestContext): Promise<DispatchOutcome> {
    // A request whose link closed while it waited is dropped: its answer could reach no one, and
    // one that changes state (a SEAL spends keys) must not run for a host that is gone.
    if (ctx.link && !ctx.link.open) return { ok: false, error: new LinkError(Rc.BUSY, 'link closed') };
    const group = this.groups.get(ctx.group);
    const handler = group?.commands[ctx.command];
    if (!group || !handler) {
      return { ok: false, error: new LinkError(Rc.NOT_SUPPORTED, `group ${ctx.group} command ${ctx.command}`) };
    }
    try {
      group.guard?.(ctx);
      const result = handler(payload, ctx);
      if (!this.watchdog || !(result instanceof Promise)) return { ok: true, payload: await result };
      return { ok: true, payload: await this.watch(result, ctx, this.watchdog) };
    } catch (e) {
      if (e instanceof LinkError) return { ok: false, error: e };
      if (e === WATCHDOG) return { ok: false, error: new LinkError(Rc.INTERNAL, 'watchdog reset') };
      this.onInternalError?.(e, ctx);
      return { ok: false, error: new LinkError(Rc.INTERNAL) };
    }
  }

  private watch(p: Promise<Payload>, ctx: RequestContext, w: { ms: number; onExpire: (ctx: RequestContext) => void }): Promise<Payload> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        w.onExpire(ctx);
        reject(WATCHDOG);
      }, w.ms);
    });
    return Promise.race([p, expired]).finally(() => clearTimeout(timer));
  }
}

const WATCHDOG = Symbol('watchdog');
