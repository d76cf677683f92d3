// SYSTEM command group: the parameters reply (the device's limits, which hosts negotiate rather
// than hard-code) and identity/status. Served even by an unenrolled or self-test-failed module.
import { Group, SystemCmd } from '../link/groups.js';
import { SUPPORTED_VERSIONS } from '../link/frame.js';
import type { CommandGroup, RequestContext } from '../link/dispatch.js';
import { LinkError, Rc } from '../link/errors.js';
import { optionalUint } from '../link/fields.js';
import type { Payload } from '../link/codec.js';

export interface SystemInfo {
  params(): Payload;
  /** The module's status; `ctx.link` is the link asking (its counters are reported). */
  status(ctx?: RequestContext): Payload;
  auditLog?(from: number, max: number): Payload;
}

/** Most names in an `only` list, and the longest name. */
const MAX_ONLY = 32;
const MAX_ONLY_NAME = 32;

/**
 * The reply cut down to the top-level keys the request lists in `only` (and `always`): a host on a
 * noisy line asks for what it needs, in a frame small enough to arrive whole (docs/protocol.md
 * 3.6.1). Without `only`, the whole reply.
 */
function pick(reply: Payload, request: Payload, always: string[] = []): Payload {
  const only = request['only'];
  if (only === undefined) return reply;
  if (!Array.isArray(only) || only.length > MAX_ONLY || !only.every((k) => typeof k === 'string' && k.length <= MAX_ONLY_NAME)) {
    throw new LinkError(Rc.BAD_REQUEST, `only must be a list of at most ${MAX_ONLY} names of at most ${MAX_ONLY_NAME} characters`);
  }
  const keep = new Set<string>([...(only as string[]), ...always]);
  return Object.fromEntries(Object.entries(reply).filter(([k]) => keep.has(k)));
}

export function systemGroup(info: SystemInfo): CommandGroup {
  const commands: Record<number, CommandGroup['commands'][number]> = {
    [SystemCmd.PARAMS]: (p) => {
      // The host lists the versions it speaks; with none in common there is no session.
      if (p['versions'] !== undefined) {
        const host = Array.isArray(p['versions']) ? p['versions'] : [];
        if (!host.some((v) => SUPPORTED_VERSIONS.includes(v as number))) {
          throw new LinkError(Rc.BAD_VERSION, `device speaks ${SUPPORTED_VERSIONS.join(', ')}`);
        }
      }
      return pick({ versions: [...SUPPORTED_VERSIONS], ...info.params() }, p, ['versions']);
    },
    [SystemCmd.STATUS]: (p, c) => pick(info.status(c), p),
  };
  if (info.auditLog) {
    const log = info.auditLog;
    commands[SystemCmd.AUDIT_LOG] = (p) => log(optionalUint(p, 'from') ?? 0, optionalUint(p, 'max', 64) ?? 32);
  }
  return { id: Group.SYSTEM, name: 'system', commands };
}
