// Certificates of the master station's TLS service (docs/station.md), issued by the KMD home's CA
// (host-tools/kmd/pki.ts): the station's server certificate, and client certificates whose role
// (a terminal, or an operator) is one subjectAltName URI `urn:qkt:station:<role>:<id>`; a
// terminal's also names its device generation (`...:terminal:T1:g2`), so re-enrolment retires it.
import 'reflect-metadata'; // @peculiar/x509 needs a Reflect polyfill (pki.ts loads it too)
import * as x509 from '@peculiar/x509';
import { closeSync, existsSync, openSync, readFileSync, unlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { CA_CERT_FILE, hostNames, issueLeaf } from '../kmd/pki.js';
import type { IssueOptions, PemPaths } from '../kmd/pki.js';
import type { TlsPems } from '../transports/tls.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { mkdirSecret } from '../secret-file.js';
import { isId } from '../kmd/home.js';

/** Who a station client is. A terminal may use its own keys; an operator reads the accounts. */
export type StationRole = { kind: 'terminal'; id: string; generation?: number } | { kind: 'operator'; id: string };

/** Every station certificate's URI starts so; the ETSI 014 API refuses certificates that carry one. */
export const STATION_URI_PREFIX = 'urn:qkt:station:';
/** The URI of the station's own server certificate; clients check it. */
export const STATION_SERVER_URI = `${STATION_URI_PREFIX}server`;
/** The folder of the KMD's PKI that holds the station's server key pair. */
export const STATION_PKI_DIR = 'station';
/** File names `qkt station cert` writes into its --out folder. */
export const CLIENT_FILES = { key: 'client.key', cert: 'client.crt', ca: 'ca.crt' } as const;

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';
// `:g<N>`: the terminal's device generation (TerminalRecord.generation). Certificates from before
// it carry none: roleOf reports them without one, and the station refuses them by name.
const ROLE_URI = /^urn:qkt:station:(terminal|operator):([A-Za-z0-9._-]{1,32})(?::g([1-9][0-9]{0,8}))?$/;
// A server certificate that ends within this is replaced on the next `station run`.
const RENEW_MS = 30 * 86_400_000;

export function roleUri(role: StationRole): string {
  const gen = role.kind === 'terminal' && role.generation !== undefined ? `:g${role.generation}` : '';
  return `${STATION_URI_PREFIX}${role.kind}:${role.id}${gen}`;
}

/** The subject CN of a role's certificate, `terminal:T1`: the colon makes it no valid SAE ID. */
export function roleCommonName(role: StationRole): string {
  return `${role.kind}:${role.id}`;
}

export function describeRole(role: StationRole): string {
  return `${role.kind} ${role.id}`;
}

/**
 * The role a verified client certificate (DER) states, or undefined when it states none that the
 * station honours: extendedKeyUsage must include clientAuth, the subjectAltName must hold exactly
 * one `urn:qkt:station:` URI and it must be a terminal or operator one, and the subject CN must
 * say the same. An SAE certificate of the ETSI 014 API (CN = SAE ID, no URI) states none.
 */
export function roleOf(der: Uint8Array): StationRole | undefined {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    return undefined;
  }
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku || !eku.usages.map(String).includes(CLIENT_AUTH_OID)) return undefined;
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = (san?.names.items ?? []).filter((n) => n.type === 'url' && n.value.startsWith(STATION_URI_PREFIX));
  if (uris.length !== 1) return undefined;
  const m = ROLE_URI.exec(uris[0]!.value);
  if (!m) return undefined;
  if (m[1] === 'operator' && m[3] !== undefined) return undefined;
  const role: StationRole = m[1] === 'terminal' ? { kind: 'terminal', id: m[2]!, ...(m[3] !== undefined ? { generation: Number(m[3]) } : {}) } : { kind: 'operator', id: m[2]! };
  const cn = cert.subjectName.getField('CN');
  if (cn.length !== 1 || cn[0] !== roleCommonName(role)) return undefined;
  return role;
}

/** Whether a server certificate (as node:tls reports it) is the station's: checked by clients. */
export function isStationServerCert(subjectaltname: string | undefined): boolean {
  return (subjectaltname ?? '').split(', ').includes(`URI:${STATION_SERVER_URI}`);
}

/** The names a station server certificate carries for `listenHost` (wildcard hosts add none). */
export function serverNames(listenHost: string, extra: string[] = []): string[] {
  const names = ['localhost', '127.0.0.1', '::1'];
  const wildcard = listenHost === '0.0.0.0' || listenHost === '::' || listenHost === '';
  for (const h of [...(wildcard ? [] : [listenHost]), ...extra]) if (!names.includes(h)) names.push(h);
  hostNames(names); // validates every name
  return names;
}

/**
 * The station's server certificate in `<pkiDir>/station/`, issued by the CA in `pkiDir` when
 * missing, when it does not name every one of `names`, or when it ends within 30 days.
 * The caller holds the KMD home's lock. Returns the PEMs `listenTls` needs.
 */
export async function ensureStationServerCert(pkiDir: string, names: string[], o: IssueOptions = {}): Promise<{ pems: TlsPems; issued: boolean; names: string[] }> {
  const dir = join(pkiDir, STATION_PKI_DIR);
  const keyPath = join(dir, 'server.key');
  const certPath = join(dir, 'server.crt');
  let issued = false;
  let have: string[] = [];
  if (existsSync(certPath) && existsSync(keyPath)) {
    const cert = new x509.X509Certificate(readFileSync(certPath, 'utf8'));
    const now = (o.now ?? (() => new Date()))().getTime();
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    if (cert.notAfter.getTime() - now > RENEW_MS) have = (san?.names.items ?? []).filter((n) => n.type === 'dns' || n.type === 'ip').map((n) => n.value);
  }
  // x509 spells IPv6 addresses its own way: compare them parsed.
  const covered = (h: string) => have.some((n) => n === h || (isIP(h) === 6 && isIP(n) === 6 && sameIp6(n, h)));
  if (!names.every(covered)) {
    mkdirSecret(dir);
    await issueLeaf(pkiDir, keyPath, certPath, `CN=qkt station`, o, [
      new x509.ExtendedKeyUsageExtension([SERVER_AUTH_OID]),
      new x509.SubjectAlternativeNameExtension([...hostNames(names), { type: 'url', value: STATION_SERVER_URI }]),
    ]);
    issued = true;
  }
  return {
    pems: { caCertPem: readFileSync(join(pkiDir, CA_CERT_FILE), 'utf8'), certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') },
    issued,
    names,
  };
}

function sameIp6(a: string, b: string): boolean {
  const expand = (s: string) => {
    const [head = '', tail = ''] = s.split('::');
    const h = head ? head.split(':') : [];
    const t = s.includes('::') ? (tail ? tail.split(':') : []) : [];
    const fill = s.includes('::') ? Array(8 - h.length - t.length).fill('0') : [];
    return [...h, ...fill, ...t].map((x) => parseInt(x, 16)).join(':');
  };
  return expand(a) === expand(b);
}

export class StationCertError extends Error {
  constructor(
    message: string,
    readonly code: 'BAD_ID' | 'EXISTS',
  ) {
    super(message);
    this.name = 'StationCertError';
  }
}

/**
 * Issue a client certificate for `role` into `outDir`: `client.key` (0600), `client.crt` and the
 * CA's `ca.crt`, which a client needs to verify the station. Refuses when any of them exists
 * (an existing key is never overwritten; the first of two concurrent issues wins, the other
 * is refused). The folder is made 0700 if missing.
 */
export async function issueStationClientCert(pkiDir: string, role: StationRole, outDir: string, o: IssueOptions = {}): Promise<PemPaths & { caPath: string }> {
  if (!isId(role.id)) throw new StationCertError(`${role.kind} id must be 1-32 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(role.id)}`, 'BAD_ID');
  if (role.kind === 'terminal' && role.generation !== undefined && !(Number.isInteger(role.generation) && role.generation >= 1 && role.generation < 1e9)) {
    throw new StationCertError(`terminal generation must be an integer 1..999999999, got ${role.generation}`, 'BAD_ID');
  }
  const keyPath = join(outDir, CLIENT_FILES.key);
  const certPath = join(outDir, CLIENT_FILES.cert);
  const caPath = join(outDir, CLIENT_FILES.ca);
  for (const p of [keyPath, certPath, caPath]) if (existsSync(p)) throw new StationCertError(`${p} exists; give an empty --out folder`, 'EXISTS');
  mkdirSecret(outDir);
  // Claim the key's name first (O_EXCL): of two issues into one folder only one goes on.
  try {
    closeSync(openSync(keyPath, 'wx', 0o600));
  } catch {
    throw new StationCertError(`${keyPath} exists; give an empty --out folder`, 'EXISTS');
  }
  try {
    const paths = await issueLeaf(pkiDir, keyPath, certPath, `CN=${roleCommonName(role)}`, o, [
      new x509.ExtendedKeyUsageExtension([CLIENT_AUTH_OID]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: roleUri(role) }]),
    ]);
    writeFileAtomic(caPath, readFileSync(join(pkiDir, CA_CERT_FILE), 'utf8'), 0o644);
    return { ...paths, caPath };
  } catch (e) {
    for (const p of [keyPath, certPath]) if (existsSync(p)) unlinkSync(p);
    throw e;
  }
}

/** Read a client's PEMs from a folder `qkt station cert` wrote. */
export function readClientPems(dir: string): TlsPems {
  return {
    caCertPem: readFileSync(join(dir, CLIENT_FILES.ca), 'utf8'),
    certPem: readFileSync(join(dir, CLIENT_FILES.cert), 'utf8'),
    keyPem: readFileSync(join(dir, CLIENT_FILES.key), 'utf8'),
  };
}
