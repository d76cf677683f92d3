// TLS transport over node:tls: the TCP transport with mutual TLS 1.3 under it (the master station's
// link service, docs/station.md). Same Transport as tcp.ts, the bytes are the link's frames inside TLS.
import { randomInt } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Transport } from '../../firmware/link/transport.js';
import { parseHostPort, socketTransport } from './tcp.js';
import type { TcpAddress } from './tcp.js';
import { InputError } from '../input-error.js';

/** PEM material for one end: its certificate and key, and the CA its peer must chain to. */
export interface TlsPems {
  caCertPem: string;
  certPem: string;
  keyPem: string;
}

/** True for strings the CLI should treat as TLS addresses (`tls:HOST:PORT`). */
export function isTlsAddress(text: string): boolean {
  return text.startsWith('tls:');
}

/**
 * Parse `tls:HOST:PORT` (the prefix is optional: a listen address `HOST:PORT` means TLS where TLS
 * is the only choice; IPv6 hosts in brackets). `tcp:` is refused, so that nobody believes a
 * plain-TCP address is served in the clear.
 */
export function parseTlsAddress(text: string): TcpAddress {
  if (typeof text !== 'string') throw new TypeError('address must be a string');
  if (text.startsWith('tcp:')) throw new InputError(`this service speaks TLS only: give tls:HOST:PORT or HOST:PORT, not ${JSON.stringify(text)}`);
  return parseHostPort(text, 'tls');
}

export function formatTlsAddress(host: string, port: number): string {
  return `tls:${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export interface TlsConnectOptions {
  caCertPem: string;
  /** Our certificate and key; without them a server that requires one refuses us. */
  certPem?: string;
  keyPem?: string;
  /** Name checked against the server certificate's subjectAltName; default: the host. */
  servername?: string;
  /** Extra check of the verified server certificate (e.g. its role); return an Error to refuse. */
  checkServer?: (cert: tls.PeerCertificate) => Error | undefined;
  /** Give up a handshake that has not finished after this long (default 10 s). */
  timeoutMs?: number;
}

/**
 * Connect with TLS 1.3, presenting our certificate and verifying the server's against `caCertPem`
 * (and its name, RFC 6125). Resolves once the handshake is done. Note that with TLS 1.3 a server
 * that refuses our certificate says so only after this resolves: the first read or write fails.
 */
export function connectTls(host: string, port: number, o: TlsConnectOptions): Promise<Transport> {
  return new Promise((resolve, reject) => {
    // Our own TCP socket, so Nagle is off on the socket that carries the bytes (frames are small).
    const raw = net.connect({ host, port, noDelay: true });
    const socket = tls.connect({
      socket: raw,
      ca: o.caCertPem,
      ...(o.certPem !== undefined ? { cert: o.certPem } : {}),
      ...(o.keyPem !== undefined ? { key: o.keyPem } : {}),
      minVersion: 'TLSv1.3',
      servername: isIpLiteral(o.servername ?? host) ? undefined : (o.servername ?? host),
      // Checked against the name we dialled (node would say "localhost" for an IP without SNI).
      checkServerIdentity: (_name, cert) => tls.checkServerIdentity(o.servername ?? host, cert) ?? o.checkServer?.(cert),
    });
    const timer = setTimeout(() => socket.destroy(new Error(`TLS handshake with ${formatTlsAddress(host, port)} timed out`)), o.timeoutMs ?? 10_000);
    const onError = (err: Error) => {
      clearTimeout(timer);
      raw.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      raw.setNoDelay(true);
      resolve(socketTransport(socket, `tls ${formatTlsAddress(host, port)}`));
    });
  });
}

function isIpLiteral(h: string): boolean {
  return net.isIP(h) !== 0;
}

export interface TlsListenOptions extends TlsPems {
  /** A connection whose handshake has not finished after this long is dropped (default 10 s). */
  handshakeTimeoutMs?: number;
  /**
   * Most connections still in their handshake at once (default 64). A newcomer beyond it evicts
   * the oldest handshake in progress (as a SYN cache does), first one that has not sent a byte:
   * a stranger's idle socket goes before a real client's handshake, which sends its ClientHello
   * at once and finishes in milliseconds. So strangers can delay, never lock out, a real client.
   */
  maxHandshaking?: number;
  /**
   * Most handshakes in progress from one remote address (default 16); a newcomer beyond it evicts
   * that address's oldest (idle first). One address cannot fill the whole handshake budget.
   */
  maxHandshakingPerAddress?: number;
  /** Most connections open at once, authenticated or not; more are closed at accept (default 4096). */
  maxConnections?: number;
  /** Told of each failed handshake (no certificate, another CA, not TLS, too slow); never key material. */
  onHandshakeError?: (reason: string, peer: string) => void;
}

export interface TlsListener {
  readonly address: TcpAddress;
  readonly description: string;
  /** Stop listening and close every connection this listener accepted. Idempotent. */
  close(): Promise<void>;
}

/**
 * Listen with TLS 1.3 only, requiring a client certificate that chains to `caCertPem` (a client
 * without one, or with one from another CA, fails the handshake and never reaches
 * `onConnection`). Each authenticated connection is handed over with its TLS socket, whose
 * `getPeerCertificate()` says who the caller is.
 */
export function listenTls(host: string, port: number, o: TlsListenOptions, onConnection: (transport: Transport, socket: tls.TLSSocket) => void): Promise<TlsListener> {
  return new Promise((resolve, reject) => {
    const live = new Set<Transport>();
    const server = tls.createServer(
      {
        ca: o.caCertPem,
        cert: o.certPem,
        key: o.keyPem,
        minVersion: 'TLSv1.3',
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
      },
      (socket) => {
        const tr = socketTransport(socket, `tls ${formatTlsAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0)}`);
        live.add(tr);
        tr.onClose(() => live.delete(tr));
        onConnection(tr, socket);
      },
    );
    server.maxConnections = o.maxConnections ?? 4096;
    server.on('drop', (d?: { remoteAddress?: string; remotePort?: number }) => o.onHandshakeError?.('too many connections', `${d?.remoteAddress ?? '?'}:${d?.remotePort ?? 0}`));
    // Handshakes in progress, oldest first (a Set keeps insertion order), and per remote address:
    // a raw socket leaves both when its handshake completes (secureConnection) or it closes,
    // whichever comes first. WeakMap/WeakSet: nothing outlives its socket; the per-address map
    // holds only addresses with a handshake in progress.
    const handshaking = new Set<net.Socket>();
    const byAddress = new Map<string, Set<net.Socket>>();
    const peers = new WeakMap<net.Socket, string>();
    const refused = new WeakSet<net.Socket>();
    const maxHandshaking = o.maxHandshaking ?? 64;
    const maxPerAddress = o.maxHandshakingPerAddress ?? 16;
    const done = (raw: net.Socket) => {
      if (!handshaking.delete(raw)) return;
      const a = raw.remoteAddress ?? '?';
      const set = byAddress.get(a);
      set?.delete(raw);
      if (set?.size === 0) byAddress.delete(a);
    };
    // The oldest of `from` that has not sent a byte yet, else the oldest.
    const victimOf = (from: Set<net.Socket>): net.Socket | undefined => {
      let oldest: net.Socket | undefined;
      for (const s of from) {
        if (s.bytesRead === 0) return s;
        oldest ??= s;
      }
      return oldest;
    };
    // When the whole budget is full: a handshake of the address holding the most in progress. Of
    // those, the oldest that has sent nothing yet (a real client sends its ClientHello at once, so
    // silent sockets are strangers and the newest arrival is never picked); if all have sent
    // bytes, one picked at random. An honest terminal's one handshake is never the target while any
    // address holds more; among equals (strangers spread over many addresses sending a few bytes)
    // a random pick leaves a handshake that needs a few milliseconds a fair chance however fast
    // the others churn, where oldest-first evicted it for certain (review).
    const globalVictim = (): net.Socket | undefined => {
      let most = 0;
      for (const set of byAddress.values()) most = Math.max(most, set.size);
      const candidates = [...handshaking].filter((c) => byAddress.get(c.remoteAddress ?? '?')?.size === most);
      const silent = candidates.find((c) => c.bytesRead === 0);
      if (silent) return silent;
      return candidates.length > 0 ? candidates[randomInt(candidates.length)] : victimOf(handshaking);
    };
    const evict = (victim: net.Socket, why: string) => {
      done(victim);
      o.onHandshakeError?.(why, peers.get(victim) ?? '?');
      refused.add(victim);
      victim.destroy();
    };
    server.on('connection', (raw: net.Socket) => {
      raw.setNoDelay(true);
      const address = raw.remoteAddress ?? '?';
      const peer = `${address}:${raw.remotePort ?? 0}`;
      peers.set(raw, peer);
      const mine = byAddress.get(address);
      if (mine && mine.size >= maxPerAddress) evict(victimOf(mine)!, 'evicted: too many handshakes in progress from its address');
      if (handshaking.size >= maxHandshaking) evict(globalVictim()!, 'evicted: too many handshakes in progress');
      handshaking.add(raw);
      const set = byAddress.get(address) ?? new Set<net.Socket>();
      set.add(raw);
      byAddress.set(address, set);
      raw.once('close', () => done(raw));
    });
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      const raw = rawOf(socket);
      if (raw) done(raw);
    });
    server.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
      const raw = rawOf(socket);
      // A handshake evicted above was reported there; its reset is not a second failure.
      if (!raw || !refused.has(raw)) o.onHandshakeError?.(handshakeReason(err), (raw && peers.get(raw)) ?? `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`);
      // With a listener installed node leaves the socket open (a timed-out handshake would hold
      // its connection slot for ever): end it here.
      socket.destroy();
    });
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      const bound = server.address() as net.AddressInfo;
      const address = { host: bound.address, port: bound.port };
      let closing: Promise<void> | undefined;
      resolve({
        address,
        description: `tls listener ${formatTlsAddress(address.host, address.port)}`,
        close: () => {
          closing ??= (async () => {
            const stopped = new Promise<void>((r) => server.close(() => r()));
            await Promise.all([...live].map((tr) => tr.close()));
            await stopped;
          })();
          return closing;
        },
      });
    });
  });
}

/** The TCP socket under a server-side TLS socket (node keeps it as `_parent`; undefined if it stops). */
function rawOf(socket: tls.TLSSocket): net.Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return parent instanceof net.Socket ? parent : undefined;
}

/** A short, fixed-vocabulary reason for a failed handshake: an error code, never peer-chosen text. */
function handshakeReason(err: Error & { code?: string }): string {
  if (/timed? ?out/i.test(err.message)) return 'handshake timeout';
  return (err.code ?? 'TLS_ERROR').slice(0, 64);
}
