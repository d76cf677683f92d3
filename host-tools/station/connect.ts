// A client's connection to the master station (docs/station.md): mutual TLS 1.3 with a certificate
// from `qkt station cert`, the server checked to chain to the KMD CA and to be the station's.
import type { Transport } from '../../firmware/link/transport.js';
import { connectTls, parseTlsAddress } from '../transports/tls.js';
import type { TlsPems } from '../transports/tls.js';
import { isStationServerCert, STATION_SERVER_URI } from './certs.js';

/**
 * Connect to `tls:HOST:PORT` presenting `pems` (readClientPems(dir) for a folder `qkt station
 * cert` wrote). A server whose certificate is from the KMD CA but not the station's (the ETSI 014
 * API's, say) is refused.
 */
export function connectStation(address: string, pems: TlsPems, o: { timeoutMs?: number } = {}): Promise<Transport> {
  const { host, port } = parseTlsAddress(address);
  return connectTls(host, port, {
    ...pems,
    ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    checkServer: (cert) => (isStationServerCert(cert.subjectaltname) ? undefined : new Error(`the server at ${address} is not a qkt station (its certificate lacks ${STATION_SERVER_URI})`)),
  });
}
