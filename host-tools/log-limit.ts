// Log lines a peer can cause at will (a failed authentication, a malformed request) must not let
// it flood the service's log: such lines go through a limiter that writes at most one a second,
// the next one saying how many it left out. One limiter per log function, shared by every
// connection that logs through it (a flooder reconnecting gets no fresh allowance).

const limiters = new WeakMap<(line: string) => void, (line: string) => void>();

/** A logger that writes at most one line per `intervalMs`, the next one counting those it left out. */
export function rateLimited(log: (line: string) => void, intervalMs = 1000, now: () => number = Date.now): (line: string) => void {
  let last = -Infinity;
  let unlogged = 0;
  return (line) => {
    const t = now();
    // A clock set back (an NTP step, a wrong RTC fixed) starts a new interval: it must not silence
    // the log until the clock is past the old time again.
    if (t - last < intervalMs && t >= last) return void unlogged++;
    log(`${line}${unlogged ? ` (and ${unlogged} more since the last report)` : ''}`);
    last = t;
    unlogged = 0;
  };
}

/** The one rate-limited logger (1 line a second) for `log`, made on first use. */
export function sharedRateLimited(log: (line: string) => void): (line: string) => void {
  let l = limiters.get(log);
  if (!l) limiters.set(log, (l = rateLimited(log)));
  return l;
}
