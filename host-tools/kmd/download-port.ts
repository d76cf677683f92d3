// The KMD's download interface on TCP (`qkt kmd serve --download tcp:HOST:PORT`): a listener that
// bounds what strangers can hold (docs/protocol.md 3.11.9). At most `maxConnections` at once; a
// connection must send a valid request frame within `firstFrameMs`, authenticate a carrier within
// `authMs`, and then send a valid frame at least every `idleMs`. With every slot taken a newcomer
// evicts a silent or unauthenticated connection (of the address holding the most, the oldest),
// else one idle long enough, else it is answered DENIED and closed: a flood of sockets that never
// log in cannot lock carriers out.
import type { Transport } from '../../firmware/link/transport.js';
import { connectionRefuser } from '../transports/refuse.js';
import { closeWhenIdle } from '../transports/idle.js';
import type { IdleWatch } from '../transports/idle.js';
import { listenTcp } from '../transports/tcp.js';
import type { TcpListener } from '../transports/tcp.js';
import type { KmdHome } from './home.js';
import { serveDownload } from './download.js';
import { rateLimited } from '../log-limit.js';

/** Defaults of the download port's limits (docs/protocol.md 3.11.9). */
export const DOWNLOAD_PORT_LIMITS = {
  maxConnections: 16,
  firstFrameMs: 10_000,
  authMs: 30_000,
  idleMs: 120_000,
  evictIdleMs: 30_000,
} as const;


export interface DownloadPortOptions {
  /** Connections served at once (default 16); one more evicts a stranger or is answered DENIED. */
  maxConnections?: number;
  /** A connection whose first valid request frame has not come this long after it opened is closed (default 10 s). */
  firstFrameMs?: number;
  /** A connection that has not authenticated a carrier (HELLO, AUTH) this long after it opened is closed (default 30 s). */
  authMs?: number;
  /** A connection that sends no valid request frame for this long is closed (default 120 s). */
  idleMs?: number;
  /** With every slot taken and every connection authenticated, one idle this long gives its slot to a newcomer (default 30 s). */
  evictIdleMs?: number;
  /** Service log (closes and refusals are logged at most once a second per kind). */
  log?: (line: string) => void;
}

/** What the port closed or refused since it started: numbers only, nothing kept per peer. */
export interface DownloadPortCounters {
  accepted: number;
  /** Closed: no valid frame within firstFrameMs. */
  noFrame: number;
  /** Closed: no carrier authenticated within authMs. */
  noAuth: number;
  /** Closed: no valid frame for idleMs. */
  idle: number;
  /** Closed to make room for a newcomer. */
  evicted: number;
  /** Newcomers answered DENIED (or closed at once) because every slot was taken. */
  refused: number;
}

export interface DownloadPort {
  listener: TcpListener;
  readonly counters: Readonly<DownloadPortCounters>;
  /** Connections holding a slot now. */
  readonly open: number;
}

/** Answers every request DENIED: a connection over the limit, until it is closed. */
interface Slot {
  watch: IdleWatch;
  opened: number;
  authenticated: boolean;
  /** The peer's IP address: strangers are evicted from the address that holds the most. */
  address: string;
}

/** Serve the download interface on HOST:PORT, each connection its own session, within the limits above. */
export async function listenDownloadPort(home: KmdHome, host: string, port: number, o: DownloadPortOptions = {}): Promise<DownloadPort> {
  const log = o.log ?? (() => undefined);
  const max = o.maxConnections ?? DOWNLOAD_PORT_LIMITS.maxConnections;
  const firstMs = o.firstFrameMs ?? DOWNLOAD_PORT_LIMITS.firstFrameMs;
  const authMs = o.authMs ?? DOWNLOAD_PORT_LIMITS.authMs;
  const idleMs = o.idleMs ?? DOWNLOAD_PORT_LIMITS.idleMs;
  const evictIdleMs = o.evictIdleMs ?? DOWNLOAD_PORT_LIMITS.evictIdleMs;
  const counters: DownloadPortCounters = { accepted: 0, noFrame: 0, noAuth: 0, idle: 0, evicted: 0, refused: 0 };
  const logClosed = rateLimited(log);
  const logRefused = rateLimited(log);
  const live = new Map<Transport, Slot>();
  const refuse = connectionRefuser(`KMD download port serves ${max} connections at once; try again later`, max);
  let seq = 0;
  /**
   * With every slot taken: a connection on which no carrier has logged in, of the address that
   * holds the most such (a flood from one address evicts its own, never a carrier connecting from
   * elsewhere, which is silent for the moment before its PARAMS arrives and a stranger until its
   * AUTH, a few round trips later); of those, the oldest that has sent no valid frame yet, else
   * the oldest. With every slot logged in: the one idle longest, if idle long enough.
   */
  const victim = (): [Transport, string] | undefined => {
    const strangers = new Map<string, number>();
    for (const s of live.values()) if (!s.authenticated) strangers.set(s.address, (strangers.get(s.address) ?? 0) + 1);
    const most = Math.max(0, ...strangers.values());
    let silent: [Transport, Slot] | undefined;
    let stranger: [Transport, Slot] | undefined;
    let idlest: [Transport, Slot] | undefined;
    for (const [tr, s] of live) {
      if (!s.authenticated) {
        if (strangers.get(s.address) !== most) continue;
        if (!s.watch.framed()) {
          if (!silent || s.opened < silent[1].opened) silent = [tr, s];
        } else if (!stranger || s.opened < stranger[1].opened) stranger = [tr, s];
      } else if (!idlest || s.watch.idleFor() > idlest[1].watch.idleFor()) idlest = [tr, s];
    }
    if (silent) return [silent[0], 'no valid frame yet'];
    if (stranger) return [stranger[0], 'not authenticated'];
    if (idlest && idlest[1].watch.idleFor() >= evictIdleMs) return [idlest[0], `idle ${Math.round(idlest[1].watch.idleFor() / 1000)} s`];
    return undefined;
  };
  const listener = await listenTcp(host, port, (t, socket) => {
    if (live.size >= max) {
      const v = victim();
      if (v) {
        counters.evicted++;
        logClosed(`download: ${v[0].description} closed to make room (${v[1]}; ${max} connections open)`);
        live.delete(v[0]);
        void v[0].close();
      }
    }
    if (live.size >= max) {
      // Over the limit with everyone authenticated and busy: a clear answer, not a hang. Refused
      // connections are bounded too: past as many again, one is closed at once without an answer.
      counters.refused++;
      logRefused(`download: ${t.description} refused: ${max} connections open`);
      refuse(t);
      return;
    }
    counters.accepted++;
    const watch = closeWhenIdle(t, idleMs, {
      firstMs,
      onIdle: (why) => {
        if (why === 'no-frame') counters.noFrame++;
        else counters.idle++;
        logClosed(`download: ${t.description} closed: ${why === 'no-frame' ? `no valid frame within ${firstMs / 1000} s` : `no valid frame for ${idleMs / 1000} s`}`);
      },
    });
    const slot: Slot = { watch, opened: seq++, authenticated: false, address: socket.remoteAddress ?? '?' };
    live.set(t, slot);
    const authTimer = setTimeout(() => {
      if (slot.authenticated) return;
      counters.noAuth++;
      logClosed(`download: ${t.description} closed: no carrier authenticated within ${authMs / 1000} s`);
      void t.close();
    }, authMs);
    authTimer.unref();
    t.onClose(() => {
      clearTimeout(authTimer);
      live.delete(t);
    });
    serveDownload(home, t, log, {
      onFrame: () => watch.frame(),
      onAuthenticated: () => {
        slot.authenticated = true;
        clearTimeout(authTimer);
      },
    });
  });
  return {
    listener,
    counters,
    get open() {
      return live.size;
    },
  };
}
