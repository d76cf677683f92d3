// `qkt station run`: the master station as a service on mutual TLS 1.3 (docs/station.md), speaking
// the link protocol (group STATION) inside it: terminals' sealed uplinks come in and are opened
// with the matching pre-applied keys (each key taken once, by the id the message names), downlinks are sealed under a terminal's
// session key, and STATUS accounts key use per terminal. Opened service data goes to the
// station's inbox (one JSON line per message), as it would to the SCADA front end. One service per
// store (its service lock, held for the service's life; it alone appends to inbox.jsonl); the
// pools are shared with the KMD's exports and collects, each operation under that pool's lock,
// so batches exported while the service runs are served (store.ts). Who may do what is decided by
// the caller's client certificate (certs.ts roleOf): a terminal its own UPLINK and DOWNLINK and
// its own STATUS row, an operator STATUS; anything else is DENIED before a key is read, and a
// connection whose certificate names no station role is closed at once.
import { appendFileSync, closeSync, constants as fsConstants, existsSync, fstatSync, lstatSync, openSync, readSync, renameSync, statSync } from 'node:fs';
import { sha256 } from '@noble/hashes/sha2.js';
import { dirname, join } from 'node:path';
import { Dispatcher } from '../../firmware/link/dispatch.js';
import type { CommandGroup } from '../../firmware/link/dispatch.js';
import { DeviceLink } from '../../firmware/link/device-link.js';
import { Group, StationCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { bytes, optionalUint, text, uint } from '../../firmware/link/fields.js';
import { systemGroup } from '../../firmware/commands/system.js';
import { DEFAULT_LIMITS, CHUNK_OVERHEAD } from '../../firmware/terminal.js';
import { decodeServiceHeader } from '../../firmware/crypto/service.js';
import { FIRMWARE } from '../../firmware/version.js';
import { PoolError } from '../../firmware/keypool/errors.js';
import { CryptoFormatError } from '../../firmware/crypto/errors.js';
import type { TLSSocket } from 'node:tls';
import type { Transport } from '../../firmware/link/transport.js';
import { formatTlsAddress, listenTls, parseTlsAddress } from '../transports/tls.js';
import type { TlsPems } from '../transports/tls.js';
import { Station, StationError } from './station.js';
import { roleOf } from './certs.js';
import { accountRow } from './accounts.js';
import type { StationRole } from './certs.js';
import { StationStoreError, stationServiceLockOptions } from './store.js';
import type { StationKeyStore } from './store.js';
import { openStationStore } from './open-store.js';
import { LockBusyError, lockSync } from '../lock.js';
import { isId, MAX_RECORD_BYTES } from '../kmd/home.js';
import { DamagedFileError, readJsonFile } from '../json-file.js';
import { rateLimited } from '../log-limit.js';
import { InputError } from '../input-error.js';
import { NoDeviceError } from '../link/errors.js';
import { randomBytes } from 'node:crypto';
import { decodePayload, encodePayload } from '../../firmware/link/codec.js';
import type { Payload } from '../../firmware/link/codec.js';
import { answerTopic, connectBroker, DEFAULT_SHARE, EMBEDDED_BROKER_PORT, MAX_REQUEST_BYTES, startEmbeddedBroker, TAG_RE, terminalOfTopic, workerTopic } from './broker.js';
import { redactUrl } from '../redact-url.js';
import type { BrokerConnection, EmbeddedBroker } from './broker.js';

export const STATION_FIRMWARE = `qkt-station ${FIRMWARE.split(' ')[1]}`;

const NO_ROLE = 'certificate names no station role; issue one with qkt station cert';

/** Most rows of one STATUS reply (docs/protocol.md 3.12.3): 16 rows fit a frame with room to spare. */
export const STATUS_PAGE = 16;

/**
 * The inbox is bounded: rotated at 64 MiB, four older files kept (inbox.jsonl.1 to .4), so a
 * station that hears every terminal for ten years holds at most 5 x the bound of it. The SCADA
 * front end must read it (and the rotated files) before they go: at the paper's class A rates
 * one terminal fills 64 MiB in about nine hours (`qkt station run --inbox-max` sets the bound).
 */
export const INBOX_MAX_BYTES = 64 * 1024 * 1024;
export const INBOX_KEEP = 4;

/** Defaults of the limits below (docs/station.md "What strangers cost"). */
export const STATION_LIMITS = { maxPerIdentity: 8, idleTimeoutMs: 300_000 } as const;

/**
 * The terminal's current device generation as the KMD home that holds `stationDir` records it
 * (`terminals/<id>.json`, written atomically: read without its lock), undefined when not enrolled.
 */
function kmdGeneration(stationDir: string): (terminalId: string) => number | undefined | 'damaged' {
  // Asked on every STATION request: the record (which also holds the device key) is read and parsed
  // only when it changed since the last read (its inode, size or mtime), not once per request.
  const seen = new Map<string, { stamp: string; generation: number | 'damaged' }>();
  return (id) => {
    const file = join(dirname(stationDir), 'terminals', `${id}.json`);
    let st;
    try {
      st = lstatSync(file);
    } catch {
      seen.delete(id);
      return undefined;
    }
    const stamp = `${st.ino}/${st.size}/${st.mtimeMs}`;
    const known = seen.get(id);
    if (known?.stamp === stamp) return known.generation;
    let record: unknown;
    try {
      // As the KMD reads its records (json-file.ts): no link followed, capped, never quoted.
      record = readJsonFile(file, MAX_RECORD_BYTES);
    } catch (e) {
      if (!(e instanceof DamagedFileError)) throw e;
      record = null;
    }
    if (record === undefined) return undefined;
    const g = record !== null && typeof record === 'object' ? (record as { generation?: unknown }).generation : undefined;
    const generation = record === null || typeof record !== 'object' ? 'damaged' : typeof g === 'number' && Number.isInteger(g) && g >= 1 ? g : 1; // records from before generations: 1
    seen.set(id, { stamp, generation });
    return generation;
  };
}

/** The verified peer certificate's station role (listenTls refused unverified ones already). */
function callerOf(socket: TLSSocket): Caller {
  if (!socket.authorized) return undefined;
  const raw = socket.getPeerCertificate().raw;
  return raw ? roleOf(new Uint8Array(raw)) : undefined;
}

export interface StationServerOptions {
  /** The station store (a KMD home's `station` folder). */
  stationDir: string;
  /**
   * `tls:HOST:PORT` or `HOST:PORT`: mutual TLS there. With `broker: 'embedded'`: where the
   * embedded broker listens instead.
   */
  listen?: string;
  /**
   * The station's server certificate and key, and the KMD CA that clients' certificates chain to;
   * or a function that makes them, called once the service lock is held (so a second `station
   * run` that will be refused re-issues nothing). Needed with `listen` and no broker.
   */
  tls?: TlsPems | (() => Promise<TlsPems>);
  /**
   * Take uplinks from an MQTT broker instead of TLS connections (broker.ts, docs/protocol.md 3.12.5):
   * `mqtt://HOST:PORT`, or 'embedded' (an aedes broker in this process, on `listen`). On a
   * PostgreSQL store several such workers may serve one database, sharing the subscription.
   */
  broker?: string;
  /** The share group of the workers' subscription (default qkt-station). */
  share?: string;
  /** Service log: one line per uplink, per refused handshake (rate-limited), never key material. */
  log?: (line: string) => void;
  /** Limits on strangers (listenTls): handshake timeout, handshakes and connections open at once. */
  handshakeTimeoutMs?: number;
  maxHandshaking?: number;
  maxHandshakingPerAddress?: number;
  maxConnections?: number;
  /**
   * Most connections open at once per certificate identity (a terminal's id, an operator's name;
   * default 8): one more closes that identity's oldest, so a terminal reconnecting after a
   * network blip gets in while its dead connections still look open.
   */
  maxPerIdentity?: number;
  /** A connection that carried no byte either way for this long is closed (default 300 s). */
  idleTimeoutMs?: number;
  /**
   * The inbox is rotated when it passes this many bytes (default INBOX_MAX_BYTES): inbox.jsonl
   * becomes inbox.jsonl.1, .1 becomes .2, and so on, the oldest beyond INBOX_KEEP dropped.
   */
  inboxMaxBytes?: number;
  /**
   * The terminal's current device generation (undefined: not enrolled); a terminal certificate
   * of another generation is DENIED. Default: read from the KMD home that holds `stationDir`.
   */
  terminalGeneration?: (terminalId: string) => number | undefined | 'damaged';
}

/** What the service refused, since it started: counters only (bounded numbers, no peer data kept). */
export interface StationCounters {
  /** Connections that failed the TLS handshake (no certificate, another CA, not TLS, timeout), were evicted from it (the handshake budget) or turned away at accept (maxConnections). */
  handshakeFailures: number;
  /** Requests answered DENIED (for another terminal, by an operator, a certificate of an older generation). */
  denied: number;
  /** Authenticated connections accepted (with a station role or not). */
  connections: number;
  /** Connections closed right after the handshake: their certificate names no station role. */
  noRole: number;
  /** Connections closed because a newer one of the same identity came beyond maxPerIdentity. */
  evicted: number;
  /** Connections closed after idleTimeoutMs without a byte. */
  idleClosed: number;
  /** Broker messages dropped unanswered: malformed (no reply tag or number), too large, or beyond the in-flight bound (the sender publishes again). */
  brokerDropped: number;
}

export interface StationServer {
  /** `tls:HOST:PORT`, or the broker's address (no password) for a broker worker. */
  address: string;
  /** A broker worker: the broker, whether the subscription is shared, and whether this worker files the inbox now. */
  broker?: { url: string; version: 4 | 5; share: string | undefined; readonly filer: boolean };
  readonly counters: Readonly<StationCounters>;
  close(): Promise<void>;
}

export async function startStationServer(o: StationServerOptions): Promise<StationServer> {
  if (o.broker === undefined && (o.listen === undefined || o.tls === undefined)) throw new TypeError('a station serves on --listen (with its TLS) or takes uplinks from a broker');
  const store = openStationStore(o.stationDir);
  let serviceLock: ReturnType<typeof lockSync> | undefined;
  try {
    if (o.broker !== undefined && store.kind === 'files') {
      throw new InputError(
        "a station on a broker needs a database store (the pool-image store cannot tell a message sent again from a replay): make the home with qkt kmd init --station-store sqlite or postgres",
      );
    }
    // Workers on a broker and a PostgreSQL store: any number, on this home or others; the one
    // that files the inbox is chosen by the database (serveStore). Otherwise one service per home.
    if (o.broker !== undefined && store.kind === 'postgres') return await serveStore(store, o, () => undefined, true);
    serviceLock = lockSync(o.stationDir, stationServiceLockOptions(o.stationDir));
    // One service files a database's uplinks (the inbox lines it holds): on PostgreSQL, where
    // another home or machine may name the same database, the database says who (a lock held
    // for the service's life, on its connection).
    if (store.claimService && !store.claimService()) {
      const e = new LockBusyError(`the station database of ${o.stationDir}`, 'pg_advisory_lock', undefined);
      e.message = 'another station service (qkt station run, on another home or machine) uses this PostgreSQL database: one service per database files its uplinks';
      throw e;
    }
    const lock = serviceLock;
    return await serveStore(store, o, () => lock.release(), false);
  } catch (e) {
    serviceLock?.release();
    store.close();
    throw e;
  }
}

/**
 * The ids of the inbox's lines at or above `minId` (SQL stores' lines begin `{"id":N,`), read
 * backwards from the end of inbox.jsonl, and of inbox.jsonl.1 when the inbox does not reach back
 * that far (a rotation), until a line below `minId`. Only regular files are read (a FIFO or a
 * device put there is not opened for a blocking read).
 */
export function filedIdsSince(inbox: string, minId: number): Set<number> {
  const ids = new Set<number>();
  for (const f of [inbox, `${inbox}.1`]) {
    let fd: number | undefined;
    try {
      fd = openSync(f, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
      const st = fstatSync(fd);
      if (!st.isFile()) continue;
      let end = st.size;
      let carry = '';
      while (end > 0) {
        const len = Math.min(end, 256 * 1024);
        const buf = Buffer.alloc(len);
        readSync(fd, buf, 0, len, end - len);
        end -= len;
        const lines = (buf.toString('utf8') + carry).split('\n');
        carry = end > 0 ? lines.shift()! : '';
        for (let i = lines.length - 1; i >= 0; i--) {
          const m = /^\{"id":(\d+),/.exec(lines[i]!);
          if (!m) continue;
          const id = Number(m[1]);
          if (id < minId) return ids;
          ids.add(id);
        }
      }
    } catch {
      // absent or unreadable: look further back
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return ids;
}

/** The caller of one connection, as its verified certificate says (undefined: no station role). */
type Caller = StationRole | undefined;

async function serveStore(store: StationKeyStore, o: StationServerOptions, unlock: () => void, worker: boolean): Promise<StationServer> {
  const stationDir = o.stationDir;
  const log = o.log ?? (() => undefined);
  const counters: StationCounters = { handshakeFailures: 0, denied: 0, connections: 0, noRole: 0, evicted: 0, idleClosed: 0, brokerDropped: 0 };
  const generationOf = o.terminalGeneration ?? kmdGeneration(stationDir);
  // Refusals that a peer can repeat at will are logged at most once a second per kind.
  const logHandshake = rateLimited(log);
  const logNoRole = rateLimited(log);
  const logEvicted = rateLimited(log);
  const logGeneration = rateLimited(log);
  const logResend = rateLimited(log);
  const station = new Station(store);
  store.onGroupFailure = (e) => {
    // The uplinks of that turn were refused (their keys are unused again): no session keeps one.
    station.forgetSessions();
    log(`station: a store commit failed, its uplinks refused: ${(e as NodeJS.ErrnoException).code ?? e.message}`);
  };
  const inbox = join(stationDir, 'inbox.jsonl');
  const inboxMax = o.inboxMaxBytes ?? INBOX_MAX_BYTES;
  const sizeOf = (f: string): number | undefined => {
    try {
      const st = lstatSync(f);
      return st.isFile() ? st.size : undefined;
    } catch {
      return 0; // absent
    }
  };
  let inboxBytes = sizeOf(inbox) ?? 0;
  const logInbox = rateLimited(log);
  /**
   * Past the bound: inbox.jsonl becomes .1, .1 becomes .2, and so on. Only when every one of them
   * is a regular file or absent (a reader may have put a directory or a link there): otherwise,
   * or if a rename fails, the inbox goes on growing and the log says why. Rotating is never a
   * reason to lose an uplink whose keys were taken (it runs after the station opened it).
   */
  const rotate = (): void => {
    const names = [inbox, ...Array.from({ length: INBOX_KEEP }, (_, i) => `${inbox}.${i + 1}`)];
    if (names.some((f) => sizeOf(f) === undefined)) {
      logInbox(`station: inbox not rotated: ${names.find((f) => sizeOf(f) === undefined)} is not a regular file`);
      return;
    }
    try {
      for (let i = INBOX_KEEP - 1; i >= 1; i--) if (existsSync(names[i]!)) renameSync(names[i]!, names[i + 1]!);
      renameSync(inbox, names[1]!);
      inboxBytes = 0;
    } catch (e) {
      logInbox(`station: inbox not rotated: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  /** Append one line; past the bound, rotate first (the service is the inbox's one writer). */
  const file = (line: string) => {
    if (inboxBytes + line.length > inboxMax) {
      // What is there now: a reader may have taken the file away (then nothing to rotate).
      inboxBytes = sizeOf(inbox) ?? inboxBytes;
      if (inboxBytes > 0 && inboxBytes + line.length > inboxMax) rotate();
    }
    // Appended to a regular file only: a FIFO with no reader, a device or a link put in the
    // inbox's place fails the write (ENXIO, ELOOP, or below) instead of blocking the service.
    const fd = openSync(inbox, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW, 0o600);
    try {
      if (!fstatSync(fd).isFile()) throw Object.assign(new Error('the inbox is not a regular file'), { code: 'ENOTREGULAR' });
      appendFileSync(fd, line);
    } finally {
      closeSync(fd);
    }
    inboxBytes += Buffer.byteLength(line);
  };
  // SQL stores: the inbox lines come from the store's `opened` rows, in id order. A line written
  // is marked filed in the next group (no commit of its own) or by the timer. A line that cannot
  // be written (the inbox taken away, a full disk) stays unfiled in the store, and so do the ones
  // after it (the inbox stays in id order): the timer files them, oldest first, once it can. At
  // start, the rows not marked filed are filed unless the inbox already has their ids (the
  // station died between writing a line and marking it): a line is filed exactly once.
  let filed: number[] = [];
  let backlog = false;
  const markFiled = () => {
    if (filed.length === 0) return;
    store.markFiled?.(filed);
    filed = [];
  };
  /** File every unfiled row in id order; false (the backlog stays) if a line cannot be written. */
  const drainUnfiled = (skipIds?: Set<number>): boolean => {
    markFiled();
    for (;;) {
      const rows = store.unfiled!(1000);
      if (rows.length === 0) return true;
      const done: number[] = [];
      try {
        for (const r of rows) {
          if (!skipIds?.has(r.id)) file(`{"id":${r.id},${r.line.slice(1)}\n`);
          done.push(r.id);
        }
      } catch (e) {
        logInbox(`station: inbox line not written, kept in the store to file later: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        return false;
      } finally {
        store.markFiled!(done);
      }
    }
  };
  /** File what the store holds unfiled, less the lines the inbox already has (a stop between writing and marking). */
  const catchUp = (): void => {
    if (!store.unfiled) return;
    const pending = store.unfiled(1);
    if (pending.length > 0) {
      const already = filedIdsSince(inbox, pending[0]!.id);
      backlog = !drainUnfiled(already);
      if (already.size > 0 || !backlog) log(`station: filed the uplinks opened before ${worker ? 'this worker took the filing over' : 'the last stop'} and not yet in the inbox (${already.size} were there already)`);
    }
  };
  // Workers on one PostgreSQL database (a broker's shared subscription): each opens uplinks and
  // commits their lines unfiled; one of them, the holder of the database's service lock, files
  // them all, in id order, from the store (a timer, not the handler). When it dies its lock goes
  // with its connection, and another worker takes the filing over within a tick.
  let filer = !worker;
  if (filer) catchUp();
  const markTimer = setInterval(
    () => {
      // Not while a group is open: its rows are not committed yet (they would be filed, and the
      // group might still fail).
      if (store.groupOpen) return;
      try {
        if (!filer) {
          if (!store.claimService!()) return;
          filer = true;
          log('station: this worker files the inbox now (the database\'s service lock was free)');
          catchUp();
          return;
        }
        if (backlog || worker) backlog = !drainUnfiled();
        else markFiled();
      } catch (e) {
        log(`station: could not file or mark inbox lines: ${(e as Error).message}`);
      }
    },
    worker ? 250 : 1000,
  ).unref();
  const maxChunk = DEFAULT_LIMITS.maxBody - CHUNK_OVERHEAD;
  const known = (id: string) => {
    // The id names a folder of the store: only plain terminal ids, never a path.
    if (!isId(id)) throw new LinkError(Rc.BAD_REQUEST, 'field "t" must be a terminal id');
    if (!store.hasTerminal(id)) throw new LinkError(Rc.WRONG_TERMINAL, `the station holds no keys for terminal ${id}`);
    return id;
  };
  const guard = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof StationError) throw new LinkError(Rc.AUTH_FAILED, e.message.slice(0, 80));
      if (e instanceof LockBusyError) throw new LinkError(Rc.BUSY, e.message.slice(0, 80));
      if (e instanceof StationStoreError) throw new LinkError(Rc.KEY_NOT_AVAILABLE, e.message.slice(0, 80));
      if (e instanceof PoolError) throw new LinkError(Rc.KEY_NOT_AVAILABLE, e.message.slice(0, 80));
      if (e instanceof CryptoFormatError || e instanceof RangeError) throw new LinkError(Rc.BAD_REQUEST, e.message.slice(0, 80));
      throw e;
    }
  };
  const deny = (reason: string): never => {
    counters.denied++;
    throw new LinkError(Rc.DENIED, reason);
  };
  // Entitlement, checked after the field is parsed and before anything of the store is read:
  // a terminal acts for itself only (who holds keys for whom is not told to others).
  const entitled = (caller: Caller, terminalId: string): string => {
    if (!caller) return deny(NO_ROLE);
    if (caller.kind !== 'terminal') return deny(`an ${caller.kind} certificate may not use terminal keys`);
    if (caller.id !== terminalId) return deny(`this certificate is for terminal ${caller.id}, not ${terminalId}`);
    current(caller);
    return terminalId;
  };
  // A terminal certificate speaks for the device generation it names only: `kmd enroll --again`
  // gives the terminal a new module and generation, and the old module's certificate is refused.
  const current = (caller: StationRole & { kind: 'terminal' }): void => {
    // Reasons are short: the link carries 80 characters (the log line says it in full).
    const fix = `qkt station cert --terminal ${caller.id}`;
    if (caller.generation === undefined) {
      logGeneration(`station: DENIED a certificate for terminal ${caller.id} that names no device generation (issued before generations)`);
      deny(`cert names no generation: ${fix}`);
    }
    const now = generationOf(caller.id);
    if (now === 'damaged') {
      // Fail safe: without the record the certificate's generation cannot be checked.
      logGeneration(`station: DENIED terminal ${caller.id}: its record at the KMD is damaged (qkt kmd status names it)`);
      deny(`the KMD's record of ${caller.id} is damaged; see qkt kmd status`);
    }
    if (now === undefined) {
      logGeneration(`station: DENIED a certificate for terminal ${caller.id}, which is not enrolled at this KMD`);
      deny(`terminal ${caller.id} is not enrolled at this KMD`);
    }
    if (caller.generation !== now) {
      logGeneration(`station: DENIED a certificate for terminal ${caller.id} generation ${caller.generation}; the terminal is at generation ${now} (enrolled again)`);
      deny(`cert generation ${caller.generation} retired (now ${now}): ${fix}`);
    }
  };
  /**
   * Open one uplink of `terminalId` (known to the store, entitled): its keys taken and the uplink
   * recorded in the store's group, answered once that is durable. The TLS handler and the broker
   * worker both come here.
   */
  const uplink = (terminalId: string, m: Uint8Array): Promise<{ n: number; keyBits: number }> => {
    const { mode, counter } = guard(() => decodeServiceHeader(m).header);
    // The keys are taken and the uplink recorded in the store's group: the answer goes
    // once that is durable (one commit for every uplink of this turn, on the SQL stores).
    // The SQL stores also hold the inbox line in that commit and know the uplink by its
    // digest: it is filed exactly once, and a retry after a lost answer (the station died
    // between commit and answer) gets the same answer. The file store files after its
    // commit: a crash in between loses the line, never opens a message twice.
    const digest = store.recordOpened ? sha256(m) : undefined;
    if (filed.length > 0) {
      // The lines filed since the last group, marked in this one (a savepoint of their own).
      const ids = filed;
      filed = [];
      store.grouped(() => store.markFiled!(ids)).catch(() => filed.push(...ids));
    }
    return store
      .grouped(() => {
        if (digest) {
          const before = store.openedBefore!(terminalId, digest);
          if (before) return { answer: { n: before.n, keyBits: before.keyBits } };
        }
        const before = station.consumedBits.get(terminalId) ?? 0;
        const data = guard(() => station.openUplink(terminalId, m));
        const keyBits = (station.consumedBits.get(terminalId) ?? 0) - before;
        const at = Date.now();
        try {
          store.recordUplink(terminalId, { at, mode, counter, bytes: data.length, keyBits });
        } catch (e) {
          // Informational only: the uplink is opened; STATUS shows an older last uplink.
          log(`station: could not record ${terminalId}'s last uplink: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
        const line = JSON.stringify({ at: new Date(at).toISOString(), terminal: terminalId, mode, counter, bytes: data.length, data: Buffer.from(data).toString('base64') });
        data.fill(0);
        const id = digest ? store.recordOpened!(terminalId, digest, line, data.length, keyBits) : undefined;
        return { answer: { n: data.length, keyBits }, line, id };
      })
      .then(({ answer, line, id }) => {
        if (line !== undefined) {
          if (id === undefined) {
            file(`${line}\n`); // the file store: a line it cannot write fails the answer
          } else if (!backlog && !worker) {
            // The SQL stores: the uplink is the station's now (committed with its line); a
            // line that cannot be written waits in the store, and the terminal is answered.
            try {
              file(`{"id":${id},${line.slice(1)}\n`);
              filed.push(id);
            } catch (e) {
              backlog = true;
              logInbox(`station: inbox line not written, kept in the store to file later: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
            }
          }
          log(`station: ${terminalId} ${mode} uplink, ${answer.n} bytes, ${answer.keyBits} key bits`);
        } else {
          // Rate-limited: on a broker anyone who saw a message can send it again.
          logResend(`station: ${terminalId} sent an uplink again that was opened before (its answer was lost): answered again, not opened`);
        }
        return answer;
      });
  };
  const stationGroup = (caller: Caller): CommandGroup => ({
    id: Group.STATION,
    name: 'station',
    commands: {
      [StationCmd.UPLINK]: (p) => {
        const terminalId = known(entitled(caller, text(p, 't', 32)));
        return uplink(terminalId, bytes(p, 'm', maxChunk));
      },
      [StationCmd.DOWNLINK]: (p) => {
        const terminalId = known(entitled(caller, text(p, 't', 32)));
        const range = { batchId: bytes(p, 'b', 16, 16), bitOffset: uint(p, 'o'), bits: 256 };
        const m = guard(() => station.sealDownlink(terminalId, range, bytes(p, 'd', 4096)));
        return { m };
      },
      [StationCmd.STATUS]: (p) => {
        if (!caller) return deny(NO_ROLE);
        if (caller.kind === 'terminal') current(caller);
        const after = p['after'] === undefined ? undefined : text(p, 'after', 32);
        const max = Math.min(optionalUint(p, 'max', 2 ** 32 - 1) ?? STATUS_PAGE, STATUS_PAGE);
        // An operator sees every terminal's account, a page at a time in id order; a terminal its own.
        // (A page costs a stat per row: a station of ten thousand terminals pages in linear time,
        // and a terminal's own row is one stat.)
        const page =
          caller.kind === 'operator'
            ? store.terminalsPage(after, Math.max(max, 1))
            : { ids: store.hasTerminal(caller.id) ? [caller.id] : [], more: false }; // its own row, whatever `after` says
        const terminals = page.ids.map((id) => {
          const g = generationOf(id);
          return guard(() => accountRow(store, id, typeof g === 'number' ? g : null));
        });
        return { terminals, ...(page.more ? { next: page.ids[page.ids.length - 1]! } : {}) };
      },
    },
  });
  const system = systemGroup({
    params: () => ({ maxFrame: DEFAULT_LIMITS.maxBody, window: DEFAULT_LIMITS.window, maxChunk, firmware: STATION_FIRMWARE }),
    status: () => ({ firmware: STATION_FIRMWARE }),
  });
  // Refused handshakes are logged at most once a second (a stranger cannot fill the log), with
  // the count of those not logged; the counter counts them all.
  const onHandshakeError = (reason: string, peer: string) => {
    counters.handshakeFailures++;
    logHandshake(`station: TLS handshake from ${peer} refused: ${reason}`);
  };
  // Open connections per certificate identity, oldest first (only identities with one open).
  const maxPerIdentity = o.maxPerIdentity ?? STATION_LIMITS.maxPerIdentity;
  const byIdentity = new Map<string, Transport[]>();
  const admit = (identity: string, t: Transport) => {
    const list = byIdentity.get(identity) ?? [];
    list.push(t);
    byIdentity.set(identity, list);
    t.onClose(() => {
      const l = byIdentity.get(identity);
      const i = l?.indexOf(t) ?? -1;
      if (i >= 0) l!.splice(i, 1);
      if (l?.length === 0) byIdentity.delete(identity);
    });
    while (list.length > maxPerIdentity) {
      const oldest = list.shift()!;
      counters.evicted++;
      logEvicted(`station: ${identity} opened more than ${maxPerIdentity} connections; closed its oldest, ${oldest.description}`);
      void oldest.close();
    }
  };
  const idleTimeoutMs = o.idleTimeoutMs ?? STATION_LIMITS.idleTimeoutMs;
  /** After the service stopped taking uplinks: the inbox filed as far as it can be, the store let go. */
  const finish = (): void => {
    clearInterval(markTimer);
    try {
      if (store.groupOpen) {
        // filed at the next start (it reads which lines the inbox holds)
      } else if (backlog || (worker && filer)) drainUnfiled();
      else markFiled();
    } catch {
      // marked at the next start instead (the inbox's ids tell what is filed)
    }
    station.close();
    unlock();
  };
  try {
    if (o.broker !== undefined) return await serveBroker(o, { uplink, known, maxChunk, log, counters, finish, worker, filer: () => filer });
    return await serveTls();
  } catch (e) {
    clearInterval(markTimer);
    throw e;
  }

  async function serveTls(): Promise<StationServer> {
    const { host, port } = parseTlsAddress(o.listen!);
    const pems = typeof o.tls === 'function' ? await o.tls() : o.tls!;
    const l = await listenTls(
      host,
      port,
      {
        ...pems,
        onHandshakeError,
        ...(o.handshakeTimeoutMs ? { handshakeTimeoutMs: o.handshakeTimeoutMs } : {}),
        ...(o.maxHandshaking ? { maxHandshaking: o.maxHandshaking } : {}),
        ...(o.maxHandshakingPerAddress ? { maxHandshakingPerAddress: o.maxHandshakingPerAddress } : {}),
        ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}),
      },
      (t, socket) => {
        const caller = callerOf(socket);
        counters.connections++;
        if (!caller) {
          // Verified by the CA but no station role (an SAE certificate of the ETSI 014 API): it
          // may do nothing here, so it holds no connection slot either.
          counters.noRole++;
          logNoRole(`station: ${t.description}: certificate names no station role; connection closed`);
          void t.close();
          return;
        }
        socket.setTimeout(idleTimeoutMs);
        socket.on('timeout', () => {
          counters.idleClosed++;
          void t.close();
        });
        admit(`${caller.kind} ${caller.id}`, t);
        // One dispatcher per connection: its handlers know the caller, no request can borrow another's.
        const dispatcher = new Dispatcher();
        dispatcher.register(system);
        dispatcher.register(stationGroup(caller));
        void new DeviceLink(t, dispatcher, DEFAULT_LIMITS);
      },
    );
    return {
      address: formatTlsAddress(l.address.host, l.address.port),
      counters,
      close: async () => {
        await l.close();
        finish();
      },
    };
  }
}

/** Broker messages being opened at once by one worker; beyond it a message is dropped (its sender publishes it again). */
const MAX_BROKER_BUSY = 4096;

interface WorkerParts {
  uplink: (terminalId: string, m: Uint8Array) => Promise<{ n: number; keyBits: number }>;
  known: (id: string) => string;
  maxChunk: number;
  log: (line: string) => void;
  counters: StationCounters;
  finish: () => void;
  worker: boolean;
  filer: () => boolean;
}

/**
 * A station worker on an MQTT broker (broker.ts): uplinks from the (shared) subscription, each
 * opened as a TLS one is, answered on the sender's answer topic with its number. A message with
 * no usable reply tag or number is dropped (counted); any other is answered, a refusal with its
 * code. Closing stops the subscription, lets the uplinks in hand be answered, then disconnects.
 */
async function serveBroker(o: StationServerOptions, w: WorkerParts): Promise<StationServer> {
  let embedded: EmbeddedBroker | undefined;
  let conn: BrokerConnection | undefined;
  try {
    let url = o.broker!;
    let login: { username?: string; password?: string } = {};
    if (url === 'embedded') {
      const { host, port } = parseTlsAddress(o.listen ?? `127.0.0.1:${EMBEDDED_BROKER_PORT}`);
      embedded = await startEmbeddedBroker(host, port);
      url = embedded.url;
      login = embedded.stationLogin;
    }
    const c = await connectBroker(url, { ...login, clientId: `qkt-station-${randomBytes(8).toString('hex')}` });
    conn = c;
    const share = c.shared ? (o.share ?? DEFAULT_SHARE) : undefined;
    if (!c.shared && w.worker) w.log(`station: the broker offers no shared subscriptions (MQTT ${c.version === 4 ? '3.1.1' : '5, refused'}): run one worker on it`);
    const logInternal = rateLimited(w.log);
    let busy = 0;
    c.client.on('message', (topic, payload) => {
      const t = terminalOfTopic(topic);
      const p = t !== undefined && payload.length <= MAX_REQUEST_BYTES ? decodePayload(payload) : undefined;
      const a = p?.['a'];
      const k = p?.['k'];
      if (!p || typeof a !== 'string' || !TAG_RE.test(a) || typeof k !== 'number' || !Number.isSafeInteger(k) || k < 0 || busy >= MAX_BROKER_BUSY) {
        w.counters.brokerDropped++;
        return;
      }
      busy++;
      const reply = (body: Payload) => c.client.publish(answerTopic(a), Buffer.from(encodePayload({ k, t: t!, ...body })), { qos: 1 }, () => undefined);
      new Promise<{ n: number; keyBits: number }>((resolve) => {
        if (text(p, 't', 32) !== t) throw new LinkError(Rc.BAD_REQUEST, 'field "t" must be the terminal the topic names');
        resolve(w.uplink(w.known(t!), bytes(p, 'm', w.maxChunk)));
      })
        .then(
          (answer) => reply({ rc: Rc.OK, ...answer }),
          (e: unknown) => {
            if (e instanceof LinkError) return reply({ rc: e.rc, ...(e.reason ? { r: e.reason } : {}) });
            // Not a refusal of the message: the store failed (its group's commit: on PostgreSQL
            // two workers' groups can deadlock on terminals' locks when senders resend under
            // load). Nothing of it was taken: left unanswered, its sender publishes it again and
            // it is opened then (or answered from the store, if it was committed after all),
            // instead of being refused for good.
            w.counters.brokerDropped++;
            logInternal(`station: an uplink from the broker failed, left unanswered for its sender to send again: ${(e as Error).message}`);
            return undefined;
          },
        )
        .finally(() => busy--);
    });
    const topic = workerTopic(share);
    const shown = redactUrl(url);
    const refused = () => new NoDeviceError(shown, `the MQTT broker at ${shown} refused the subscription to ${topic}`);
    const granted = await c.client.subscribeAsync(topic, { qos: 1 }).catch(() => {
      throw refused();
    });
    if (granted.some((g) => g.qos > 2)) throw refused();
    return {
      address: shown,
      broker: {
        url: shown,
        version: c.version,
        share,
        get filer() {
          return w.filer();
        },
      },
      counters: w.counters,
      close: async () => {
        await c.client.unsubscribeAsync(topic).catch(() => undefined);
        // The uplinks in hand are answered (each waits for its commit), a few seconds at most.
        for (let i = 0; busy > 0 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
        await c.client.endAsync().catch(() => undefined);
        await embedded?.close();
        w.finish();
      },
    };
  } catch (e) {
    await conn?.client.endAsync(true).catch(() => undefined);
    await embedded?.close();
    throw e;
  }
}
