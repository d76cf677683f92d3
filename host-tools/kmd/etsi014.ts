// The KMD's key delivery API, ETSI GS QKD 014 V1.1.1 (2019-02) "Protocol and data format of
// REST-based key delivery API": HTTPS with mutual TLS, the caller's SAE ID is its certificate's CN.
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { isSaeId, KeyDeliveryError, MSG_UNAUTHORIZED, type DeliveredKey, type SaeStore } from './sae-store.js';

export interface Etsi014ServerOptions {
  /** Address to listen on. */
  host: string;
  /** Port; 0 picks a free one (see `url`). */
  port: number;
  store: SaeStore;
  /** This KME's ID, reported as source_KME_ID and target_KME_ID (§6.1). */
  kmeId: string;
  /** PEM: the CA that issued the SAE certificates, and this server's certificate and key. */
  tls?: { caCertPem: string; certPem: string; keyPem: string } | undefined;
  /**
   * Test/dev mode only: plain HTTP, the caller's SAE ID taken from an `X-SAE-ID` header that
   * anyone can set. Allowed only on a loopback host, and only without `tls`.
   */
  allowPlainHttp?: boolean;
  /** Where server-side errors go (never key material). Default: stderr. */
  log?: (line: string) => void;
}

export interface Etsi014Server {
  /** Base URL, e.g. `https://127.0.0.1:8443`; the API is under `${url}/api/v1/keys/`. */
  url: string;
  close(): Promise<void>;
}

/** Header naming the caller in plain-HTTP test/dev mode. */
export const SAE_ID_HEADER = 'x-sae-id';
/** Largest request body accepted: 128 key IDs with extensions fit many times over. */
export const MAX_BODY_BYTES = 64 * 1024;

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
// The URI prefix of station certificates (host-tools/station/certs.ts STATION_URI_PREFIX).
const STATION_URI_MARK = 'URI:urn:qkt:station:';
const PATH = /^\/api\/v1\/keys\/([^/]+)\/(status|enc_keys|dec_keys)$/;

// §5.2–§5.4: Get status is GET; Get key and Get key with key IDs are GET or POST.
const METHODS: Record<string, readonly string[]> = { status: ['GET'], enc_keys: ['GET', 'POST'], dec_keys: ['GET', 'POST'] };

/** Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host === '[::1]') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** Start the API server; resolves once it listens. */
export async function startEtsi014Server(o: Etsi014ServerOptions): Promise<Etsi014Server> {
  if (typeof o.kmeId !== 'string' || o.kmeId.length === 0) throw new TypeError('kmeId must be a non-empty string');
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new RangeError(`port must be 0..65535, got ${o.port}`);
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  let server: HttpServer;
  let plain = false;
  if (o.allowPlainHttp) {
    // Without TLS anyone on the network could claim any SAE ID: loopback only.
    if (!isLoopbackHost(o.host)) throw new Error(`plain HTTP is allowed on a loopback host only, not ${o.host}`);
    if (o.tls) throw new TypeError('give either tls or allowPlainHttp, not both');
    server = createHttpServer((req, res) => handle(o, true, log, req, res));
    plain = true;
  } else {
    if (!o.tls) throw new TypeError('tls is required (HTTPS with mutual authentication, ETSI GS QKD 014 §5.1); allowPlainHttp is for loopback tests only');
    server = createHttpsServer(
      {
        ca: o.tls.caCertPem,
        cert: o.tls.certPem,
        key: o.tls.keyPem,
        // ETSI GS QKD 014 §5.1: HTTPS, TLS 1.2 or higher, SAE and KME authenticate each other.
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
      },
      (req, res) => handle(o, false, log, req, res),
    );
  }
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `${plain ? 'http' : 'https'}://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/** The caller's SAE ID: its verified certificate's subject CN (mTLS), or X-SAE-ID in plain mode. */
function callerSaeId(plain: boolean, req: IncomingMessage): string | undefined {
  if (plain) {
    const h = req.headers[SAE_ID_HEADER];
    return typeof h === 'string' && isSaeId(h) ? h : undefined;
  }
  const sock = req.socket as TLSSocket;
  if (!sock.authorized) return undefined;
  const cert = sock.getPeerCertificate();
  const cn = cert?.subject?.CN as string | string[] | undefined;
  if (typeof cn !== 'string' || !isSaeId(cn)) return undefined;
  // A certificate of this CA that is not meant for clients (the server's own) names no SAE.
  if (Array.isArray(cert.ext_key_usage) && !cert.ext_key_usage.includes(CLIENT_AUTH_OID)) return undefined;
  // A master-station client certificate (docs/station.md) is no SAE's, whatever its CN says.
  if ((cert.subjectaltname ?? '').includes(STATION_URI_MARK)) return undefined;
  return cn;
}

async function handle(o: Etsi014ServerOptions, plain: boolean, log: (line: string) => void, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://kme');
    const m = PATH.exec(url.pathname);
    if (!m) return send(res, 404, { message: 'not found' });
    const [, rawSaeId = '', method = ''] = m;
    const allowed = METHODS[method] ?? [];
    if (!allowed.includes(req.method ?? '')) {
      res.setHeader('Allow', allowed.join(', '));
      return send(res, 405, { message: `method not allowed; use ${allowed.join(' or ')}` });
    }
    const caller = callerSaeId(plain, req);
    if (caller === undefined) throw new KeyDeliveryError(401, MSG_UNAUTHORIZED);
    let pathSaeId: string;
    try {
      pathSaeId = decodeURIComponent(rawSaeId);
    } catch {
      throw new KeyDeliveryError(400, 'invalid SAE ID in the URL');
    }
    const body = req.method === 'POST' ? await readJson(req) : undefined;

    if (method === 'status') {
      // §5.2 Get status: the caller is the master SAE, the URL names the slave.
      const counts = o.store.status(caller, pathSaeId);
      // §6.1 Status: field order as in the spec's table.
      return send(res, 200, {
        source_KME_ID: o.kmeId,
        target_KME_ID: o.kmeId,
        master_SAE_ID: caller,
        slave_SAE_ID: pathSaeId,
        ...counts,
      });
    }
    if (method === 'enc_keys') {
      // §5.3 Get key: the caller is the master SAE, the URL names the slave.
      const r = body === undefined ? keyRequestFromQuery(url.searchParams) : keyRequestFromJson(body);
      return sendKeys(res, o.store.issue(caller, pathSaeId, r));
    }
    // §5.4 Get key with key IDs: the caller is the slave SAE, the URL names the master.
    const ids = body === undefined ? keyIdsFromQuery(url.searchParams) : keyIdsFromJson(body);
    return sendKeys(res, o.store.deliver(caller, pathSaeId, ids));
  } catch (e) {
    if (e instanceof KeyDeliveryError) {
      return send(res, e.status, e.details ? { message: e.message, details: e.details } : { message: e.message });
    }
    // §5.2–5.4: 503 "Error of server side". The reason is logged, not sent; it holds no key bytes.
    log(`etsi014: ${req.method} ${req.url}: ${(e as Error)?.message ?? String(e)}`);
    if (!res.headersSent) return send(res, 503, { message: 'error on KME side' });
    res.destroy();
  }
}

/** §6.3 Key container: `{ keys: [{ key_ID, key }] }`, key in base64 (RFC 4648). */
function sendKeys(res: ServerResponse, keys: DeliveredKey[]): void {
  const body = { keys: keys.map((k) => ({ key_ID: k.keyId, key: Buffer.from(k.key).toString('base64') })) };
  for (const k of keys) k.key.fill(0);
  send(res, 200, body);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    // §6: every body is JSON (RFC 8259).
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
    // Key containers must not sit in any cache.
    'Cache-Control': 'no-store',
  });
  res.end(data);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY_BYTES) throw new KeyDeliveryError(400, `request body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  // Every field of a Key request is optional (§6.2): an empty POST body asks for the defaults.
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new KeyDeliveryError(400, 'request body is not valid JSON');
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkFields(what: string, v: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(v)) if (!allowed.includes(k)) throw new KeyDeliveryError(400, `${what}: unknown field ${JSON.stringify(k)}`);
}

function arrayOf<T>(what: string, v: unknown, check: (x: unknown) => x is T, itemDesc: string): T[] {
  if (!Array.isArray(v) || !v.every(check)) throw new KeyDeliveryError(400, `${what} shall be an array of ${itemDesc}`);
  return v;
}

function intParam(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new KeyDeliveryError(400, `${name} shall be an integer`);
  return v;
}

/** §6.2 Key request (POST enc_keys). */
function keyRequestFromJson(b: unknown): { number?: number; size?: number; additionalSlaveSaeIds?: string[] } {
  if (!isObject(b)) throw new KeyDeliveryError(400, 'Key request shall be a JSON object');
  checkFields('Key request', b, ['number', 'size', 'additional_slave_SAE_IDs', 'extension_mandatory', 'extension_optional']);
  const r: { number?: number; size?: number; additionalSlaveSaeIds?: string[] } = {};
  if (b.number !== undefined) r.number = intParam('number', b.number);
  if (b.size !== undefined) r.size = intParam('size', b.size);
  if (b.additional_slave_SAE_IDs !== undefined) r.additionalSlaveSaeIds = arrayOf('additional_slave_SAE_IDs', b.additional_slave_SAE_IDs, (x): x is string => typeof x === 'string', 'SAE IDs');
  if (b.extension_mandatory !== undefined) {
    const ext = arrayOf('extension_mandatory', b.extension_mandatory, isObject, 'objects');
    // §6.2: a KME that does not support a mandatory extension shall refuse the request; it supports none.
    if (ext.length > 0) {
      throw new KeyDeliveryError(400, 'not all extension_mandatory parameters are supported', [{ extension_mandatory_unsupported: ext.flatMap((e) => Object.keys(e)) }]);
    }
  }
  // §6.2: extension_optional parameters the KME does not support are ignored.
  if (b.extension_optional !== undefined) arrayOf('extension_optional', b.extension_optional, isObject, 'objects');
  return r;
}

/** §5.3 GET enc_keys: optional `number` and `size` query parameters. */
function keyRequestFromQuery(q: URLSearchParams): { number?: number; size?: number } {
  const r: { number?: number; size?: number } = {};
  for (const k of new Set(q.keys())) {
    if (k !== 'number' && k !== 'size') throw new KeyDeliveryError(400, `unknown query parameter ${JSON.stringify(k)}`);
    const all = q.getAll(k);
    if (all.length !== 1) throw new KeyDeliveryError(400, `${k} shall be given once`);
    const v = all[0] ?? '';
    if (!/^-?[0-9]{1,15}$/.test(v)) throw new KeyDeliveryError(400, `${k} shall be an integer`);
    r[k] = Number(v);
  }
  return r;
}

/** §6.4 Key IDs (POST dec_keys): `{ key_IDs: [{ key_ID }] }`. */
function keyIdsFromJson(b: unknown): string[] {
  if (!isObject(b)) throw new KeyDeliveryError(400, 'Key IDs shall be a JSON object');
  checkFields('Key IDs', b, ['key_IDs', 'key_IDs_extension']);
  const list = arrayOf('key_IDs', b.key_IDs, isObject, 'objects');
  return list.map((e) => {
    checkFields('key_IDs item', e, ['key_ID', 'key_ID_extension']);
    if (typeof e.key_ID !== 'string') throw new KeyDeliveryError(400, 'key_ID shall be a string');
    return e.key_ID;
  });
}

/** §5.4 GET dec_keys: one `key_ID` query parameter. */
function keyIdsFromQuery(q: URLSearchParams): string[] {
  for (const k of q.keys()) if (k !== 'key_ID') throw new KeyDeliveryError(400, `unknown query parameter ${JSON.stringify(k)}`);
  const all = q.getAll('key_ID');
  if (all.length !== 1) throw new KeyDeliveryError(400, 'key_ID shall be given once');
  return all;
}
