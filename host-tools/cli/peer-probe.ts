// What answered on a tcp: port that did not answer as a terminal: one short look, after the link
// failed, so `qkt status --port tcp:...` can say "is a qkt station" or "is an HTTP server" instead
// of a bare timeout. It sends one PARAMS frame on a plain connection (what qkt sent already) and
// reads the first bytes, then, if the peer closed on it, tries a TLS handshake without a
// certificate and reads the server's certificate. Nothing here is trusted: it only picks words.
import net from 'node:net';
import tls from 'node:tls';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind, SUPPORTED_VERSIONS } from '../../firmware/link/frame.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { parseTcpAddress } from '../transports/tcp.js';

export type PeerKind = 'qkt-station' | 'tls' | 'http' | 'silent' | 'closed' | 'unreachable' | 'other';

/** The first bytes a plain connection gets back for a PARAMS frame, within `ms`, and how it ended. */
function plainProbe(host: string, port: number, ms: number): Promise<{ bytes: Buffer; ended: 'closed' | 'timeout' | 'error' }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const s = net.connect({ host, port });
    const done = (ended: 'closed' | 'timeout' | 'error') => {
      clearTimeout(timer);
      s.destroy();
      resolve({ bytes: Buffer.concat(chunks), ended });
    };
    const timer = setTimeout(() => done('timeout'), ms);
    let connected = false;
    s.on('connect', () => {
      connected = true;
      s.write(encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: 1, payload: { versions: [...SUPPORTED_VERSIONS] } }));
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (size >= 64) done('timeout');
    });
    // A reset after the connection opened is a hang-up, not an unreachable port.
    s.on('error', () => done(connected ? 'closed' : 'error'));
    s.on('close', () => done('closed'));
  });
}

/** The server certificate's subjectAltName a TLS handshake without a client certificate shows, or undefined if not TLS. */
function tlsProbe(host: string, port: number, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const s = tls.connect({ host, port, rejectUnauthorized: false, minVersion: 'TLSv1.2', ...(net.isIP(host) ? {} : { servername: host }) });
    const done = (v: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), ms);
    s.on('secureConnect', () => done(s.getPeerCertificate()?.subjectaltname ?? ''));
    s.on('error', () => done(undefined));
  });
}

/** What listens on `tcp:HOST:PORT`, in a word (each look at most `ms`). */
export async function probeTcpPeer(address: string, ms = 1000): Promise<PeerKind> {
  const { host, port } = parseTcpAddress(address);
  const plain = await plainProbe(host, port, ms);
  if (plain.ended === 'error' && plain.bytes.length === 0) return 'unreachable';
  if (plain.bytes.subarray(0, 5).toString('latin1') === 'HTTP/') return 'http';
  if (plain.bytes.length === 0 && plain.ended === 'timeout') return 'silent';
  // A TLS server closes on a frame that is no TLS record (some send an alert first: 0x15 0x03).
  if (plain.bytes.length === 0 || (plain.bytes[0] === 0x15 && plain.bytes[1] === 0x03)) {
    const san = await tlsProbe(host, port, ms);
    if (san !== undefined) return san.split(', ').includes('URI:urn:qkt:station:server') ? 'qkt-station' : 'tls';
    return 'closed';
  }
  return 'other';
}

/** The sentence `qkt status` says for what it found on `address` instead of a terminal. */
export function notATerminal(address: string, kind: PeerKind): string | undefined {
  const tlsAddress = `tls:${address.replace(/^tcp:/, '')}`;
  switch (kind) {
    case 'qkt-station':
      return `${address} is a qkt station, not a terminal: use qkt station status --station ${tlsAddress} --cert DIR`;
    case 'tls':
      return `${address} speaks TLS, not the qkt link protocol: it is not a terminal`;
    case 'http':
      return `${address} is an HTTP server, not a terminal`;
    case 'silent':
      return `${address} did not answer as a terminal: the connection opened but nothing answered PARAMS`;
    case 'closed':
      return `${address} did not answer as a terminal: it closed the connection without a reply`;
    default:
      return undefined;
  }
}
