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
      return { versions: [...SUPPORTED_VERSIONS], ...info.params() };
    },
    [SystemCmd.STATUS]: (_p, c) => info.status(c),
  };
  if (info.auditLog) {
    const log = info.auditLog;
    commands[SystemCmd.AUDIT_LOG] = (p) => log(optionalUint(p, 'from') ?? 0, optionalUint(p, 'max', 64) ?? 32);
  }
  return { id: Group.SYSTEM, name: 'system', commands };
}
