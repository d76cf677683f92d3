// A tiny certificate authority for a KMD home: one EC P-256 CA, the KMD's TLS server certificate
// and one client certificate per SAE, whose subject CN is the SAE ID the ETSI GS QKD 014 API trusts.
// PEM files; private keys are written mode 0600. Certificates are made with @peculiar/x509.
import 'reflect-metadata'; // @peculiar/x509 (through tsyringe) needs a Reflect polyfill, loaded before it
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../fs-atomic.js';
import { mkdirSecret } from '../secret-file.js';
import { isSaeId, SAE_ID_PATTERN } from './sae-store.js';
import { InputError } from '../input-error.js';

x509.cryptoProvider.set(webcrypto);

export { SAE_ID_PATTERN };

export const CA_KEY_FILE = 'ca.key';
export const CA_CERT_FILE = 'ca.crt';
export const SERVER_KEY_FILE = 'server.key';
export const SERVER_CERT_FILE = 'server.crt';
export const SAE_DIR = 'sae';

export interface PemPaths {
  keyPath: string;
  certPath: string;
}

export interface IssueOptions {
  /** Validity in days from now (default: CA 3650, leaf certificates 825). */
  validDays?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

/** What `startEtsi014Server` needs for mutual TLS, read from a PKI folder. */
export interface ServerTlsPems {
  caCertPem: string;
  certPem: string;
  keyPem: string;
}

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN_ALG = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
// Certificates start a little in the past so a peer whose clock lags slightly still accepts them.
const BACKDATE_MS = 5 * 60_000;

/** Throws TypeError / RangeError unless `saeId` is a valid SAE ID; returns it. */
export function validateSaeId(saeId: unknown, name = 'saeId'): string {
  if (typeof saeId !== 'string') throw new TypeError(`${name} must be a string`);
  if (!isSaeId(saeId)) throw new InputError(`${name} must match ${SAE_ID_PATTERN.source} and not be "." or "..", got ${JSON.stringify(saeId)}`);
  return saeId;
}

/**
 * Create the CA in `dir`: a new P-256 key (`ca.key`, 0600) and a self-signed certificate
 * (`ca.crt`). Refuses to overwrite an existing CA: every certificate it issued would die with it.
 */
export async function createCa(dir: string, o: IssueOptions & { commonName?: string } = {}): Promise<PemPaths> {
  const keyPath = join(dir, CA_KEY_FILE);
  const certPath = join(dir, CA_CERT_FILE);
  if (existsSync(keyPath) || existsSync(certPath)) throw new Error(`a CA already exists in ${dir}`);
  mkdirSecret(dir);
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const { notBefore, notAfter } = validity(o, 3650);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${o.commonName ?? 'qkt KMD CA'}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGN_ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeFileAtomic(keyPath, await privateKeyPem(keys.privateKey), 0o600);
  writeFileAtomic(certPath, cert.toString('pem') + '\n', 0o644);
  return { keyPath, certPath };
}

/**
 * Issue the KMD's TLS server certificate (`server.key`, `server.crt`) for `hostnames`, DNS names
 * or IP addresses, all put in subjectAltName (what TLS clients check, RFC 6125 §6.4.4).
 * Re-issuing replaces the previous one.
 */
export async function issueServerCert(dir: string, hostnames: string[], o: IssueOptions = {}): Promise<PemPaths> {
  return issueLeaf(dir, join(dir, SERVER_KEY_FILE), join(dir, SERVER_CERT_FILE), `CN=${hostnames[0]}`, o, [
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension(hostNames(hostnames)),
  ]);
}

/** subjectAltName entries for host names and IP addresses (validated). */
export function hostNames(hostnames: string[]): x509.JsonGeneralName[] {
  if (!Array.isArray(hostnames) || hostnames.length === 0) throw new InputError('hostnames must name at least one host');
  for (const h of hostnames) {
    if (typeof h !== 'string' || !(isIP(h) || /^[A-Za-z0-9.-]{1,253}$/.test(h))) throw new InputError(`hostnames: not a host name or IP address: ${JSON.stringify(h)}`);
  }
  return hostnames.map((h) => (isIP(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h }));
}

/**
 * Issue a client certificate for SAE `saeId`: `sae/<saeId>.key` (0600) and `sae/<saeId>.crt`,
 * subject CN = saeId, extendedKeyUsage clientAuth. The KMD takes the caller's SAE ID from that CN
 * (ETSI GS QKD 014 §5.1: SAEs and KME authenticate each other). Refuses to re-issue an SAE.
 */
export async function issueSaeCert(dir: string, saeId: string, o: IssueOptions = {}): Promise<PemPaths> {
  validateSaeId(saeId);
  const keyPath = join(dir, SAE_DIR, `${saeId}.key`);
  const certPath = join(dir, SAE_DIR, `${saeId}.crt`);
  if (existsSync(keyPath) || existsSync(certPath)) throw new Error(`SAE ${saeId} already has a certificate in ${join(dir, SAE_DIR)}`);
  return issueLeaf(dir, keyPath, certPath, `CN=${saeId}`, o, [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])]);
}

/** Whether `saeId` was issued a certificate by the CA in `dir` (a valid ID with a `sae/<id>.crt`). */
export function hasSaeCert(dir: string, saeId: string): boolean {
  return isSaeId(saeId) && existsSync(join(dir, SAE_DIR, `${saeId}.crt`));
}

/** Read the CA certificate and the server key pair from `dir` for `startEtsi014Server`. */
export function readServerTls(dir: string): ServerTlsPems {
  return {
    caCertPem: readFileSync(join(dir, CA_CERT_FILE), 'utf8'),
    certPem: readFileSync(join(dir, SERVER_CERT_FILE), 'utf8'),
    keyPem: readFileSync(join(dir, SERVER_KEY_FILE), 'utf8'),
  };
}

/**
 * Issue a leaf certificate signed by the CA in `dir`: a new P-256 key written to `keyPath` (0600)
 * and the certificate to `certPath`, with `extra` extensions (EKU, SANs) beside the common ones.
 * Callers check first that they overwrite nothing they mean to keep.
 */
export async function issueLeaf(dir: string, keyPath: string, certPath: string, subject: string, o: IssueOptions, extra: x509.Extension[]): Promise<PemPaths> {
  const caCert = new x509.X509Certificate(readFileSync(join(dir, CA_CERT_FILE), 'utf8'));
  const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(readFileSync(join(dir, CA_KEY_FILE), 'utf8')), EC_ALG, false, ['sign']);
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const { notBefore, notAfter } = validity(o, 825);
  mkdirSecret(dirname(keyPath));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject,
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGN_ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ...extra,
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  writeFileAtomic(keyPath, await privateKeyPem(keys.privateKey), 0o600);
  writeFileAtomic(certPath, cert.toString('pem') + '\n', 0o644);
  return { keyPath, certPath };
}

function validity(o: IssueOptions, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const days = o.validDays ?? defaultDays;
  if (!Number.isSafeInteger(days) || days < 1) throw new RangeError(`validDays must be a positive integer, got ${days}`);
  const now = (o.now ?? (() => new Date()))().getTime();
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + days * DAY_MS) };
}

/** A random positive 128-bit serial (RFC 5280 §4.1.2.2: unique per CA, at most 20 octets). */
function serialNumber(): string {
  const b = new Uint8Array(16);
  webcrypto.getRandomValues(b);
  b[0] = (b[0]! & 0x7f) | 0x01; // positive, and no leading zero octet to strip
  return Buffer.from(b).toString('hex');
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') + '\n';
}

function pemBody(pem: string): ArrayBuffer {
  return x509.PemConverter.decodeFirst(pem);
}
