// The carrier's side of the KMD download interface (`qkt carrier load --kmd PORT`): connect,
// authenticate with the carrier key (and check the KMD holds it too), optionally ask for exports,
// read the notification and download each pending sealed batch onto the carrier, then tell the
// KMD it is taken. Every message after AUTH is sealed under the session key (download-session.ts).
import { randomBytes } from 'node:crypto';
import { DownloadCmd, Group } from '../../firmware/link/groups.js';
import { LinkError } from '../../firmware/link/errors.js';
import type { Payload } from '../../firmware/link/codec.js';
import type { DeviceParams, LinkClient, RequestOptions } from '../link/client.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { SEALED_MAX_BYTES } from '../carrier/carrier.js';
import { connectDevice } from '../link/session.js';
import type { Carrier } from '../carrier/carrier.js';
import { printable } from '../peer-text.js';
import { DownloadError } from './download-error.js';
import { carrierProof, readCarrierKey } from './carriers.js';
import { KmdError, isId } from './home.js';
import { NONCE_BYTES, TO_CARRIER, TO_KMD, open, seal, sessionKey } from './download-session.js';

export { DownloadError };

/** Where download progress goes (the CLI's progress bar fits it). */
export interface DownloadProgress {
  update(done: number, total: number, label: string): void;
}

export interface DownloadResult {
  carrierId: string;
  carrier: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

export interface Pending {
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  bytes: number;
}

/** A session after AUTH: each request gets the next counter and a MAC; each response is checked. */
export class DownloadSession {
  private counter = 0;

  constructor(
    private readonly client: LinkClient,
    private readonly key: Uint8Array,
  ) {}

  async request(command: number, inner: Payload, opts: RequestOptions = {}): Promise<Payload> {
    const c = ++this.counter;
    const reply = await this.client.request(Group.DOWNLOAD, command, seal(this.key, TO_KMD, command, c, inner), opts);
    let r;
    try {
      r = open(this.key, TO_CARRIER, command, reply);
    } catch (e) {
      if (e instanceof LinkError) throw new DownloadError('NOT_AUTHENTIC', `the KMD's reply does not authenticate (${printable(e.reason ?? 'malformed')}): someone else may be on the line`);
      throw e;
    }
    if (r.counter !== c) throw new DownloadError('NOT_AUTHENTIC', `the KMD's reply carries counter ${r.counter}, not ${c}: someone else may be on the line`);
    return r.inner;
  }

  /** Zeroize the session key. */
  end(): void {
    this.key.fill(0);
  }
}

/**
 * HELLO and AUTH with the carrier's key and a fresh nonce; the AUTH reply must be sealed under the
 * session key (counter 0), which only a KMD holding this carrier's key can do.
 */
export async function authenticate(client: LinkClient, key: Uint8Array, carrierId: string, kmdId: string, port = 'the port'): Promise<DownloadSession> {
  const hello = await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: carrierId });
  if (hello['kmdId'] !== kmdId) {
    throw new DownloadError('WRONG_KMD', `the KMD on ${port} is ${printable(hello['kmdId'], 40)}; carrier ${carrierId} belongs to ${kmdId}`);
  }
  const challenge = hello['challenge'];
  if (!(challenge instanceof Uint8Array) || challenge.length !== 32) throw new DownloadError('MALFORMED', `the KMD on ${port} sent no 32-byte challenge`);
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  const mac = carrierProof(key, kmdId, carrierId, challenge);
  const reply = await client.request(Group.DOWNLOAD, DownloadCmd.AUTH, { mac, nonce });
  const k = sessionKey(key, kmdId, carrierId, challenge, nonce);
  try {
    const r = open(k, TO_CARRIER, DownloadCmd.AUTH, reply);
    if (r.counter !== 0 || r.inner['carrier'] !== carrierId) throw new LinkError(0, 'wrong counter or carrier');
  } catch (e) {
    k.fill(0);
    if (e instanceof LinkError) throw new DownloadError('NOT_AUTHENTIC', `the KMD on ${port} did not prove it holds carrier ${carrierId}'s key; not downloading`);
    throw e;
  }
  return new DownloadSession(client, k);
}

/** NOTIFY's list, checked: ids name files on the carrier, sizes size buffers. */
export function pendingList(reply: Payload): Pending[] {
  const list = reply['pending'];
  if (!Array.isArray(list)) throw new DownloadError('MALFORMED', 'the KMD sent a malformed notification');
  return list.map((x: unknown) => {
    const p = x as Record<string, unknown>;
    const ok =
      p !== null &&
      typeof p === 'object' &&
      isId(p['terminalId']) &&
      typeof p['batchId'] === 'string' &&
      /^[0-9a-f]{32}$/.test(p['batchId']) &&
      Number.isSafeInteger(p['seq']) &&
      Number.isSafeInteger(p['bits']) &&
      Number.isSafeInteger(p['bytes']) &&
      (p['bytes'] as number) > 0 &&
      (p['bytes'] as number) <= SEALED_MAX_BYTES;
    if (!ok) throw new DownloadError('MALFORMED', `the KMD sent a malformed pending batch ${printable(safeJson(x), 60)}`);
    return { terminalId: p['terminalId'] as string, batchId: p['batchId'] as string, seq: p['seq'] as number, bits: p['bits'] as number, bytes: p['bytes'] as number };
  });
}

/** One pending batch's bytes, by pipelined sealed READs (up to the KMD's window at once), each block checked. */
export async function readPending(dl: DownloadSession, params: Pick<DeviceParams, 'window' | 'maxChunk'>, p: Pending, onBytes?: (n: number) => void): Promise<Uint8Array> {
  const buf = new Uint8Array(p.bytes);
  for (let off = 0; off < p.bytes; ) {
    const reads: Array<Promise<void>> = [];
    for (let k = 0; k < params.window && off < p.bytes; k++, off += params.maxChunk) {
      const at = off;
      reads.push(
        dl.request(DownloadCmd.READ, { b: p.batchId, o: at, n: params.maxChunk }, { expectBytes: params.maxChunk + 64 }).then((r) => {
          const d = r['d'];
          if (!(d instanceof Uint8Array) || d.length !== Math.min(params.maxChunk, p.bytes - at)) {
            throw new DownloadError('MALFORMED', `the KMD sent a short or malformed block of batch ${p.batchId.slice(0, 8)} at ${at}`);
          }
          buf.set(d, at);
          onBytes?.(d.length);
        }),
      );
    }
    await Promise.all(reads);
  }
  return buf;
}

/**
 * Download what the KMD on `port` holds for `carrier` (opened, and locked, by the caller), asking it
 * first to export for `terminals` (with `bits`) that have nothing waiting.
 */
export async function downloadFromKmd(o: { port: string; carrier: Carrier; terminals: string[]; bits?: number; progress?: DownloadProgress }): Promise<DownloadResult> {
  const carrier = o.carrier;
  if (o.terminals.length > 0 && o.bits === undefined) throw new KmdError('--bits is required with --terminal', 'BAD_INPUT');
  let key: Uint8Array;
  try {
    key = readCarrierKey(carrier.path);
  } catch (e) {
    if (e instanceof KmdError) throw new DownloadError('NO_CARRIER_KEY', e.message);
    throw e;
  }
  const s = await connectDevice(o.port, { device: 'KMD' });
  let session: DownloadSession | undefined;
  try {
    const { client, params } = s;
    session = await authenticate(client, key, carrier.carrierId, carrier.kmdId, o.port);
    key.fill(0);
    const dl = session;
    let pending = pendingList(await dl.request(DownloadCmd.NOTIFY, {}));
    if (o.terminals.length > 0) {
      // Ask only for terminals that have nothing waiting (a re-run after a cut takes what is there).
      const missing = o.terminals.filter((id) => !pending.some((p) => p.terminalId === id));
      if (missing.length > 0) {
        pending = pendingList(await dl.request(DownloadCmd.REQUEST, { terminals: missing, bits: o.bits! }, { timeoutMs: 60_000 }));
      }
      pending = pending.filter((p) => o.terminals.includes(p.terminalId));
    }
    const total = pending.reduce((a, p) => a + p.bytes, 0);
    let done = 0;
    const loaded: DownloadResult['loaded'] = [];
    for (const p of pending) {
      const buf = await readPending(dl, params, p, (n) => {
        done += n;
        o.progress?.update(done * 8, total * 8, 'download'); // bytes of the sealed batches, shown as bits
      });
      let h;
      try {
        h = parseSealedHeader(buf).header;
      } catch (e) {
        throw new DownloadError('MALFORMED', `the KMD's batch ${p.batchId.slice(0, 8)} is not a sealed batch (${(e as Error).message})`);
      }
      if (h.terminalId !== p.terminalId || Buffer.from(h.batchId).toString('hex') !== p.batchId) {
        throw new DownloadError('MALFORMED', `the KMD's batch ${p.batchId.slice(0, 8)} names another terminal or batch in its header`);
      }
      const added = carrier.addBatch(buf); // validates the sealed layout before anything is written
      await dl.request(DownloadCmd.TAKEN, { b: p.batchId });
      loaded.push({ terminalId: p.terminalId, batchId: p.batchId, seq: p.seq, bits: p.bits, outcome: added.outcome });
    }
    return { carrierId: carrier.carrierId, carrier: carrier.path, loaded };
  } finally {
    key.fill(0);
    session?.end();
    await s.close();
  }
}

/** `x` as JSON for a message, or a word when it has none (a BigInt, a cycle). */
function safeJson(x: unknown): string {
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    return typeof x;
  }
}
