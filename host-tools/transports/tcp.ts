// TCP transport over node:net: the emulated terminal or the KMD download interface listening on
// tcp:HOST:PORT, and host tools connecting to it. Nagle is off: frames are small and latency-bound.
import net from 'node:net';
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';
import { InputError } from '../input-error.js';

export interface TcpAddress {
  host: string;
  port: number;
}

/** True for strings the CLI should treat as TCP addresses rather than serial paths. */
export function isTcpAddress(text: string): boolean {
  return text.startsWith('tcp:');
}

/**
 * Parse `tcp:HOST:PORT` (the `tcp:` prefix is optional; IPv6 hosts in brackets:
 * `tcp:[::1]:7000`). Port 0 is allowed: it asks the OS for a free port when listening.
 */
export function parseTcpAddress(text: string): TcpAddress {
  return parseHostPort(text, 'tcp');
}

/** `SCHEME:HOST:PORT` or `HOST:PORT` (IPv6 hosts in brackets), for tcp: and tls: alike. */
export function parseHostPort(text: string, scheme: string): TcpAddress {
  if (typeof text !== 'string') throw new TypeError('address must be a string');
  const rest = text.startsWith(`${scheme}:`) ? text.slice(scheme.length + 1) : text;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host) throw new InputError(`address must look like ${scheme}:HOST:PORT, got ${JSON.stringify(text)}`);
  if (port > 65_535) throw new InputError(`port must be 0..65535, got ${port}`);
  return { host, port };
}

function formatAddress(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  return `tcp:${h.includes(':') ? `[${h}]` : h}:${port ?? '?'}`;
}

/**
 * Wrap a connected socket. write() resolves when the socket has flushed the bytes to the
 * kernel. The end the application did not ask for (peer closed, reset) is an error.
 */
export function socketTransport(socket: net.Socket, description?: string): Transport {
  const core = new EndpointCore(description ?? `tcp ${formatAddress(socket.remoteAddress, socket.remotePort)}`);
  socket.setNoDelay(true);
  let closing: Promise<void> | undefined;
  let failure: Error | undefined;
  socket.on('data', (chunk: Buffer) => core.deliver(chunk));
  // A reset or a FIN ends the transport at once, not at the 'close' that follows a turn later:
  // the link must not run requests still queued for a peer that is gone (docs/protocol.md 4.8).
  socket.on('error', (err) => core.end(closing ? undefined : (failure ??= err)));
  // allowHalfOpen is false, so a FIN from the peer ends our side too and 'close' follows.
  socket.on('end', () => core.end(closing ? undefined : (failure ??= new Error(`${core.description}: peer closed`))));
  socket.on('close', () => core.end(closing ? undefined : (failure ?? new Error(`${core.description}: connection closed`))));

  const write = async (bytes: Uint8Array): Promise<void> => {
    checkBytes(bytes);
    if (closing || core.ended || socket.destroyed) throw core.closedError();
    await new Promise<void>((resolve, reject) => socket.write(bytes, (err) => (err ? reject(err) : resolve())));
  };
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      if (socket.destroyed && core.ended) return resolve();
      socket.once('close', () => resolve());
      // end() sends what is queued, then FIN; reset after a grace period in case the peer
      // never reads (its window full), so close() always finishes and the peer learns of it
      // (a FIN queued behind bytes it never reads would never reach it).
      socket.end();
      const timer = setTimeout(() => socket.resetAndDestroy(), 2000);
      timer.unref();
    });
    return closing;
  };
  return makeTransport(core, write, close);
}

/** Connect to HOST:PORT; resolves once connected. */
export function connectTcp(host: string, port: number): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socketTransport(socket, `tcp ${formatAddress(host, port)}`));
    });
  });
}

export interface TcpListener {
  /** The bound address; port is the real one when 0 was asked for. */
  readonly address: TcpAddress;
  readonly description: string;
  /** Stop listening and close every connection this listener accepted. Idempotent. */
  close(): Promise<void>;
}

/** Listen on HOST:PORT and hand each accepted connection to `onConnection` as a Transport. */
export function listenTcp(host: string, port: number, onConnection: (transport: Transport, socket: net.Socket) => void): Promise<TcpListener> {
  return new Promise((resolve, reject) => {
    const live = new Set<Transport>();
    const server = net.createServer((socket) => {
      const tr = socketTransport(socket);
      live.add(tr);
      tr.onClose(() => live.delete(tr));
      onConnection(tr, socket);
    });
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      const bound = server.address() as net.AddressInfo;
      const address = { host: bound.address, port: bound.port };
      let closing: Promise<void> | undefined;
      resolve({
        address,
        description: `tcp listener ${formatAddress(address.host, address.port)}`,
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
