// ADMIN command group: zeroize all keys, factory reset. Each needs a token from the KMD (a MAC
// under the device key over terminal, command and a counter above the last one accepted, so a
// token cannot be replayed). Wrong tokens count against a retry counter kept in flash; at the
// limit the commands lock out for good, as ESAM modules do.
import { verifyAdminToken } from '../crypto/token.js';
import type { AdminCommand } from '../crypto/token.js';
import { AdminCmd, Group } from '../link/groups.js';
import { LinkError, Rc } from '../link/errors.js';
import { bytes } from '../link/fields.js';
import type { CommandGroup } from '../link/dispatch.js';
import { mapServiceErrors } from './pool-errors.js';
import { withIdentity } from './context.js';
import type { ModuleContext } from './context.js';

export const MAX_FAILED_AUTH = 5;

/** `onWiped` runs after every zeroize (open sessions must not outlive the keys); `onFactoryReset` after a reset. */
export function adminGroup(ctx: ModuleContext, onFactoryReset: () => void, onWiped: () => void = () => undefined): CommandGroup {
  const authorize = (token: Uint8Array, command: AdminCommand): void =>
    withIdentity(ctx, ({ terminalId, deviceKey }) => {
      const secure = ctx.secure();
      const failed = secure.failedAuth();
      if (failed.locked) throw new LinkError(Rc.LOCKED_OUT, 'too many bad tokens; the module must go back to the factory');
      const check = verifyAdminToken(deviceKey, token, { terminalId, command });
      const fresh = check.ok && check.counter > secure.adminCounter();
      if (!fresh) {
        const count = failed.count + 1;
        const locked = count >= MAX_FAILED_AUTH;
        // Counted in flash before answering: cutting the power after a guess does not reset it.
        secure.setFailedAuth(count, locked);
        secure.audit(locked ? 'lockout' : 'auth-failed', `${command} ${count}/${MAX_FAILED_AUTH}`);
        if (locked) throw new LinkError(Rc.LOCKED_OUT, `${count} bad tokens: ${command} is locked out`);
        throw new LinkError(Rc.BAD_TOKEN, check.ok ? 'token replayed' : 'token does not verify', { left: MAX_FAILED_AUTH - count });
      }
      secure.setAdminCounter(check.counter);
      if (failed.count > 0) secure.setFailedAuth(0, false);
    });

  return {
    id: Group.ADMIN,
    name: 'admin',
    commands: {
      [AdminCmd.ZEROIZE]: (p) => {
        authorize(bytes(p, 'token', 256), 'zeroize');
        const wiped = mapServiceErrors(() => ctx.pool().zeroizeAll());
        onWiped();
        ctx.secure().audit('zeroize', `${wiped} batch(es) wiped`);
        return { zeroized: true };
      },
      [AdminCmd.FACTORY_RESET]: (p) => {
        authorize(bytes(p, 'token', 256), 'factory-reset');
        mapServiceErrors(() => ctx.pool().zeroizeAll());
        onWiped();
        onFactoryReset();
        return { reset: true };
      },
    },
  };
}
