// A server at its connection limit answers a newcomer's requests (its PARAMS first) DENIED with a
// reason, then closes it after a short grace: a clear answer, not a hang. Refused connections are
// bounded too: past as many again, a newcomer is closed at once without an answer. One mechanism
// for every listener with a cap (a module on TCP, the KMD's download port).
import type { Transport } from '../../firmware/link/transport.js';
import { DeviceLink } from '../../firmware/link/device-link.js';
import { Dispatcher } from '../../firmware/link/dispatch.js';
import type { DispatchOutcome } from '../../firmware/link/dispatch.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { DEFAULT_LIMITS } from '../../firmware/terminal.js';

/** How long a refused connection stays open to answer its requests DENIED before it is closed. */
export const REFUSE_GRACE_MS = 2000;

class RefusingDispatcher extends Dispatcher {
  constructor(private readonly reason: string) {
    super();
  }
  override dispatch(): Promise<DispatchOutcome> {
    return Promise.resolve({ ok: false, error: new LinkError(Rc.DENIED, this.reason) });
  }
}

/** A function that refuses one connection as above; at most `max` are being refused at once. */
export function connectionRefuser(reason: string, max: number): (t: Transport) => void {
  const refusing = new Set<Transport>();
  const refusal = new RefusingDispatcher(reason);
  return (t) => {
    if (refusing.size >= max) return void t.close();
    refusing.add(t);
    t.onClose(() => refusing.delete(t));
    void new DeviceLink(t, refusal, DEFAULT_LIMITS);
    setTimeout(() => void t.close(), REFUSE_GRACE_MS).unref();
  };
}
