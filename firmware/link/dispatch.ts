// Handler registry and dispatch (docs/protocol.md, "Dispatch"): command groups are tables of
// handlers indexed by command id. A missing handler answers NOT_SUPPORTED; a handler's typed
// LinkError becomes an error reply; anything else becomes INTERNAL with no stack on the wire.
import { LinkError, Rc } from './errors.js';
import type { Payload } from './codec.js';

export interface RequestContext {
  group: number;
  command: number;
  seq: number;
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

  async dispatch(payload: Payload, ctx: RequestContext): Promise<DispatchOutcome> {
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
