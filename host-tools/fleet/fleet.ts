// A fleet in one process (issue 13, item 1): N emulated terminal modules, each with its own compact
// flash image, device key and batch, enrolled and loaded through the real KMD and carrier formats
// (enrol, export, carrier, inject, receipts collected), then each sending the service traffic of a
// user class drawn from a mix to one station service on loopback mutual TLS. Measures the traffic
// per class and overall, the setup time and the process' memory per terminal, and checks that
// every module consumed exactly the key bits the station consumed for it.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { createTerminal } from '../../firmware/terminal.js';
import { prng } from '../../firmware/flash/faults.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { injectBatch } from '../link/inject.js';
import { KmdHome } from '../kmd/home.js';
import { enrollTerminal, enrollTerminalFlash } from '../kmd/enroll.js';
import { exportBatches, markOnCarrier, readOutbox, stationStore } from '../kmd/export.js';
import { collectReceipts } from '../kmd/collect.js';
import { Carrier } from '../carrier/carrier.js';
import type { BatchEntry } from '../carrier/carrier.js';
import { ensurePki, pkiDir } from '../kmd/serve.js';
import { startStationServer } from '../station/serve.js';
import type { StationServer } from '../station/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from '../station/certs.js';
import type { TlsPems } from '../transports/tls.js';
import { connectStation } from '../station/connect.js';
import { readStationStatus } from '../station/client.js';
import { CLASSES, DelaySample, expectedMessages, otpKeyBitsPerSecond, runTraffic } from '../station/traffic.js';
import { formatBits } from '../units.js';
import type { ClassId, TrafficResult } from '../station/traffic.js';
import { InputError } from '../input-error.js';
import { compactGeometry } from './image.js';
import type { StationStoreKind } from '../station/open-store.js';
import { spawn } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { qktBin } from '../bench/start.js';
import { BROKER_PASSWORD_ENV, BrokerStation, checkBrokerUrl } from '../station/broker.js';
import { redactUrl } from '../redact-url.js';
import type { StationRequester } from '../station/broker.js';
import { checkDbUrl, openStationStore } from '../station/open-store.js';

export const CLASS_IDS: readonly ClassId[] = ['A', 'B', 'C', 'D', 'E'];
/** Most terminals one fleet run takes (one process). */
export const MAX_FLEET_TERMINALS = 20_000;
/** The paper's five user classes, evenly. */
export const DEFAULT_MIX = 'A:1,B:1,C:1,D:1,E:1';

export type Mix = Record<ClassId, number>;

/** `A:1,B:2,...`: each class at most once, a whole weight 0..1,000,000, at least one above 0. */
export function parseMix(spec: string): Mix {
  const mix: Mix = { A: 0, B: 0, C: 0, D: 0, E: 0 };
  const seen = new Set<string>();
  for (const part of spec.split(',')) {
    const m = /^\s*([A-Z]):(\d{1,7})\s*$/.exec(part);
    if (!m) throw new InputError(`--mix must be CLASS:WEIGHT pairs separated by commas (${DEFAULT_MIX}), got ${JSON.stringify(spec)}`);
    const [, c, w] = m as unknown as [string, string, string];
    if (!CLASS_IDS.includes(c as ClassId)) throw new InputError(`--mix: ${c} is not a user class (A, B, C, D, E)`);
    if (seen.has(c)) throw new InputError(`--mix names class ${c} twice`);
    seen.add(c);
    const weight = Number(w);
    if (weight > 1_000_000) throw new InputError(`--mix: the weight of class ${c} must be from 0 to 1000000, got ${w}`);
    mix[c as ClassId] = weight;
  }
  if (CLASS_IDS.every((c) => mix[c] === 0)) throw new InputError('--mix: at least one class needs a weight above 0');
  return mix;
}

/**
 * Each terminal's class: the counts in proportion to the weights (largest remainder, so the default
 * mix at N = 10 is exactly 2 of each, and a class with weight is present once N allows), then
 * dealt to terminals in a seeded shuffle. A count-exact draw, not N independent draws: a small
 * fleet measures every class it was asked for.
 */
export function assignClasses(n: number, mix: Mix, seed: number): ClassId[] {
  const total = CLASS_IDS.reduce((s, c) => s + mix[c], 0);
  const exact = CLASS_IDS.map((c) => ({ c, q: (n * mix[c]) / total }));
  const counts = new Map(exact.map(({ c, q }) => [c, Math.floor(q)]));
  let left = n - [...counts.values()].reduce((a, b) => a + b, 0);
  for (const { c } of [...exact].filter((e) => mix[e.c] > 0).sort((a, b) => b.q - Math.floor(b.q) - (a.q - Math.floor(a.q)) || CLASS_IDS.indexOf(a.c) - CLASS_IDS.indexOf(b.c))) {
    if (left-- <= 0) break;
    counts.set(c, counts.get(c)! + 1);
  }
  const out: ClassId[] = CLASS_IDS.flatMap((c) => Array<ClassId>(counts.get(c)!).fill(c));
  const rnd = prng((seed ^ 0x0f1ee7) >>> 0);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export type FleetPhase = 'enrol' | 'inject' | 'connect' | 'traffic';

export interface FleetOptions {
  terminals: number;
  mix?: Mix;
  /** Key per terminal, one batch (default 128 kbit, or what the run needs: bitsFor). */
  bits?: number;
  /** How long each terminal sends. */
  seconds: number;
  /** The interval unit T (default one minute). */
  tMs?: number;
  seed?: number;
  /** Keep everything (KMD home, carrier, images, certificates) in this folder, new or empty; images are files then. */
  home?: string;
  /** The KMD's supply, the key use rate's denominator (default 11 kbit/s, the paper's). */
  supplyBitsPerSecond?: number;
  /** A message opened later than this counts as late (default 3 s). */
  deadlineMs?: number;
  /** Terminals set up at once (inject, certificate, TLS handshake; default 8). */
  concurrency?: number;
  /** The station's key store (default 'sqlite': one database; 'files': a 2 MiB pool image per terminal; 'postgres': the database `db` names). */
  store?: StationStoreKind;
  /** The PostgreSQL database of the 'postgres' store (postgres://...). */
  db?: string;
  /**
   * Send the uplinks through an MQTT broker instead of a TLS connection per terminal: 'embedded'
   * (the station process hosts one) or `mqtt://HOST:PORT`. All terminals share one connection.
   */
  broker?: string;
  /** A name for this shard of a fleet (1-16 of A-Z a-z 0-9 _): its terminals are `NAME-T00001`..., apart from other shards' on one station. */
  shard?: string;
  /**
   * Messages a second each terminal sends (its class's message shapes, at this rate in all);
   * default its class's own rates (docs/traffic.md).
   */
  ratePerSecond?: number;
  /**
   * Where the station runs: 'process' (default), the real `qkt station run` in a process of its
   * own (the fleet's RSS is then the terminals' alone, and the two use both cores), 'inline',
   * in this process, or 'none': workers started elsewhere take the uplinks from `broker`.
   */
  station?: 'process' | 'inline' | 'none';
  onProgress?: (phase: FleetPhase, done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface FleetRow {
  class: ClassId | 'all';
  terminals: number;
  messages: number;
  delivered: number;
  late: number;
  failed: number;
  /** Over every message of the row's terminals that the station opened. */
  accessDelayMs: { median: number; p99: number } | null;
  /** Means over the row's terminals. */
  cipherBitsPerSecondPerTerminal: number;
  keyBitsPerSecondPerTerminal: number;
  keyUseRatePerTerminal: number;
}

export interface FleetResult {
  terminals: number;
  bits: number;
  mix: Mix;
  mode: 'otp';
  seconds: number;
  tMs: number;
  seed: number;
  /** Each module's flash: in this process' memory, or files in the kept home. */
  images: { where: 'memory' | 'files'; bytes: number; sectors: number; sectorSize: number };
  /** The station's key store: one SQLite database, or a pool image per terminal. */
  store: StationStoreKind;
  /** Where the station ran: its own process (`qkt station run`), this one, or elsewhere (workers on the broker). */
  station: 'process' | 'inline' | 'none';
  /** The MQTT broker the uplinks went through (no password), or null: a TLS connection per terminal. */
  broker: string | null;
  /** This shard's name (its terminals' id prefix), or null. */
  shard: string | null;
  /** Messages a second per terminal asked for (null: each class's own rates). */
  ratePerSecond: number | null;
  /** Connections to the station: one TLS connection per terminal (the station admits a terminal only on its own certificate), or one to the broker for all. */
  stationConnections: number;
  setupSeconds: number;
  trafficSeconds: number;
  rss: { beforeBytes: number; afterSetupBytes: number; afterBytes: number; perTerminalBytes: number };
  classes: FleetRow[];
  overall: FleetRow;
  /** Every module's consumed key bits (SYSTEM STATUS) equal the station's account of it (STATION STATUS). */
  keysAgree: boolean;
  keyMismatches: number;
  /** Failed messages by reason, over the fleet. */
  failures: Record<string, number>;
  home?: string;
}

interface Member {
  id: string;
  cls: ClassId;
  flash: NorFlash;
  entry?: BatchEntry;
  module?: LinkClient;
  pems?: TlsPems;
  station?: StationRequester;
  link?: LinkClient;
  result?: TrafficResult;
}

/** This process' limit of open files (Linux: /proc/self/limits), or undefined where it cannot be read. */
function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

interface StationProcess {
  address: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * `qkt station run` on the fleet's KMD home, in a process of its own (bin/qkt.js of this build),
 * ready when it prints its ready document. Its log (a line per uplink) is dropped; a failure
 * before ready carries the log's end.
 */
async function startStationProcess(homeDir: string, maxConnections: number, broker: string | undefined): Promise<StationProcess> {
  // A broker's password goes to the station process in its environment, not on its command line
  // (which every user of the machine can read).
  const env: NodeJS.ProcessEnv = { ...process.env, QKT_PARENT_PID: String(process.pid) };
  let where = ['--listen', '127.0.0.1:0', '--max-connections', String(maxConnections)];
  if (broker === 'embedded') where = ['--broker', 'embedded', '--listen', '127.0.0.1:0'];
  else if (broker !== undefined) {
    const u = new URL(broker);
    if (u.password !== '') {
      env[BROKER_PASSWORD_ENV] = decodeURIComponent(u.password);
      u.password = '';
    }
    where = ['--broker', u.toString()];
  }
  const child = spawn(process.execPath, [qktBin(), 'station', 'run', '--home', homeDir, ...where, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 4096) err += d;
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  try {
    const address = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const nl = out.indexOf('\n');
        if (nl < 0) return;
        try {
          const ready = JSON.parse(out.slice(0, nl)) as { listen?: unknown; broker?: unknown };
          resolve(String(ready.listen ?? ready.broker));
        } catch (e) {
          reject(e as Error);
        }
      });
      void exited.then(() => reject(new Error(`the station process ended before it was ready: ${err.trim().slice(-400)}`)));
    });
    child.stdout.resume();
    return { address, pid: child.pid!, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Run `fn` over `items`, at most `limit` at once. */
/** Bytes of one terminal's pool image in the station's file store (a full-size 2 MiB chip image). */
const STATION_POOL_IMAGE_BYTES = 2 * 1024 * 1024;
/** Bytes of one terminal in the SQLite store, besides its keys: rows, index, log. */
const STATION_ROW_BYTES = 16 * 1024;

async function bounded<T>(items: readonly T[], limit: number, fn: (x: T, i: number) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      signal?.throwIfAborted();
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const yieldNow = () => new Promise<void>((r) => setImmediate(r));

function row(cls: ClassId | 'all', rs: TrafficResult[], delays: DelaySample): FleetRow {
  const sum = (f: (r: TrafficResult) => number) => rs.reduce((s, r) => s + f(r), 0);
  const mean = (f: (r: TrafficResult) => number) => (rs.length === 0 ? 0 : sum(f) / rs.length);
  return {
    class: cls,
    terminals: rs.length,
    messages: sum((r) => r.messages),
    delivered: sum((r) => r.delivered),
    late: sum((r) => r.late),
    failed: sum((r) => r.failed),
    accessDelayMs: ((d) => (d ? { median: d.median, p99: d.p99 } : null))(delays.summary()),
    cipherBitsPerSecondPerTerminal: Math.round(mean((r) => r.cipherBitsPerSecond)),
    keyBitsPerSecondPerTerminal: Math.round(mean((r) => r.keyBitsPerSecond)),
    keyUseRatePerTerminal: round3(mean((r) => r.keyUseRate)),
  };
}

/** The kept home: a new folder, or an empty one (a fleet never writes into a folder holding something). */
function prepareHome(dir: string): string {
  const abs = resolve(dir);
  let entries: string[] | undefined;
  try {
    entries = readdirSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new InputError(`--home ${dir}: ${(e as NodeJS.ErrnoException).code === 'ENOTDIR' ? 'not a folder' : (e as Error).message}`);
  }
  if (entries && entries.length > 0) throw new InputError(`--home ${dir} is not empty; give a new or empty folder (a fleet writes a KMD home, a carrier, images and certificates there)`);
  mkdirSync(abs, { recursive: true, mode: 0o700 });
  return abs;
}

/** The default batch: 128 kbit (16 KiB of key), when the run needs no more. */
export const DEFAULT_FLEET_BITS = 131_072;

/**
 * Key bits the run's busiest class needs on average (OTP: each message's pad and 256-bit MAC key,
 * traffic.ts otpKeyBitsPerSecond), with a quarter more for the Poisson draws and 8 kbit for a
 * short run's few messages: a pool that runs dry measures the batch size, not the fleet.
 */
function needBits(o: { seconds: number; tMs: number; mix: Mix }): { bits: number; cls: ClassId; lastsSeconds: (bits: number) => number } {
  const cls = CLASS_IDS.filter((c) => o.mix[c] > 0).reduce((a, b) => (otpKeyBitsPerSecond(CLASSES[b], o.tMs) > otpKeyBitsPerSecond(CLASSES[a], o.tMs) ? b : a));
  const rate = otpKeyBitsPerSecond(CLASSES[cls], o.tMs);
  return { bits: 1.25 * rate * o.seconds + 8192, cls, lastsSeconds: (bits) => Math.floor(Math.max(0, bits - 8192) / 1.25 / rate) };
}

/** The batch when --bits is not given: 128 kbit, or the run's need rounded up to 64 kbit (at most 8 Mbit). */
export function bitsFor(o: { seconds: number; tMs: number; mix: Mix }): number {
  const need = needBits(o).bits;
  return Math.min(2 ** 23, Math.max(DEFAULT_FLEET_BITS, Math.ceil(need / 65_536) * 65_536));
}

export function checkFleetOptions(o: FleetOptions): void {
  if (!Number.isSafeInteger(o.terminals) || o.terminals < 1 || o.terminals > MAX_FLEET_TERMINALS) throw new InputError(`--terminals must be a whole number from 1 to ${MAX_FLEET_TERMINALS}, got ${o.terminals}`);
  if (!(o.seconds > 0 && o.seconds <= 86_400)) throw new InputError(`--seconds must be from above 0 to 86400, got ${o.seconds}`);
  if (o.tMs !== undefined && !(o.tMs >= 10 && o.tMs <= 86_400_000)) throw new InputError(`--t must be from 10 ms to 1 day, got ${o.tMs} ms`);
  if (o.concurrency !== undefined && !(Number.isSafeInteger(o.concurrency) && o.concurrency >= 1)) throw new InputError(`concurrency must be a whole number from 1, got ${o.concurrency}`);
  if (o.shard !== undefined && !/^[A-Za-z0-9_]{1,16}$/.test(o.shard)) throw new InputError(`--shard must be 1-16 of A-Z a-z 0-9 _, got ${JSON.stringify(o.shard)}`);
  if ((o.store === 'postgres') !== (o.db !== undefined)) throw new InputError(o.db === undefined ? '--store postgres needs --db postgres://user@host:port/database' : `--db is the database of a postgres store, not of ${o.store ?? 'sqlite'}`);
  if (o.db !== undefined) {
    try {
      checkDbUrl(o.db);
    } catch (e) {
      throw new InputError((e as Error).message);
    }
  }
  if (o.broker !== undefined) {
    if (o.broker !== 'embedded') checkBrokerUrl(o.broker);
    if (o.store === 'files') throw new InputError('--broker needs a database store (sqlite or postgres): the pool-image store cannot tell a message sent again from a replay');
  }
  if (o.station === 'none' && (o.broker === undefined || o.broker === 'embedded')) throw new InputError('--station none: the station workers run elsewhere and take the uplinks from a broker of their own; give --broker mqtt://HOST:PORT');
  if (o.bits === undefined) return;
  const bits = o.bits;
  if (!Number.isSafeInteger(bits) || bits < 8192 || bits > 2 ** 23 || bits % 8 !== 0) throw new InputError(`--bits must be a multiple of 8 bits from 8 kbit to 8 Mbit, got ${bits}`);
  const need = needBits({ seconds: o.seconds, tMs: o.tMs ?? 60_000, mix: o.mix ?? parseMix(DEFAULT_MIX) });
  if (bits < need.bits) {
    const t = (o.tMs ?? 60_000) / 1000;
    throw new InputError(
      `--bits ${formatBits(bits)} lasts class ${need.cls} about ${need.lastsSeconds(bits)} s at T = ${t} s (with a margin for the random draws); --seconds ${o.seconds} needs --bits ${formatBits(bitsFor({ seconds: o.seconds, tMs: o.tMs ?? 60_000, mix: o.mix ?? parseMix(DEFAULT_MIX) }))} (or leave --bits out), a shorter --seconds or a longer --t`,
    );
  }
}

/**
 * Set up the fleet, run its traffic for `seconds`, check the key accounts and tear it all down
 * (the folder too, unless `home` was given). Setup, in the order the real chain runs it:
 *
 * 1. the KMD home (its supply stocked for N batches), its PKI and the station's server certificate;
 * 2. N modules enrolled, each a compact image (image.ts), in memory or, with `home`, a file;
 * 3. one batch each exported (the station gets the matching keys, inactive), in groups of 64 per
 *    lock, and put on one carrier folder in the real carrier format;
 * 4. per terminal, at most `concurrency` at once: its module started in-process, the batch read
 *    from the carrier and injected over the module's link, the receipt put on the carrier, a
 *    station client certificate issued;
 * 5. the KMD collects the receipts (verified under each device key): the station's keys go active;
 * 6. the station service starts on loopback mutual TLS, and each terminal opens its connection.
 *
 * Then every terminal sends its class's traffic at once (runTraffic, OTP).
 */
export async function runFleet(o: FleetOptions): Promise<FleetResult> {
  checkFleetOptions(o);
  const n = o.terminals;
  const tMs = o.tMs ?? 60_000;
  const seed = o.seed ?? 1;
  const mix = o.mix ?? parseMix(DEFAULT_MIX);
  const bits = o.bits ?? bitsFor({ seconds: o.seconds, tMs, mix });
  const supply = o.supplyBitsPerSecond ?? 11_000;
  const deadlineMs = o.deadlineMs ?? 3000;
  const limit = Math.max(1, Math.min(o.concurrency ?? 8, 64));
  const progress = o.onProgress ?? (() => undefined);
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now();
  const dir = o.home !== undefined ? prepareHome(o.home) : mkdtempSync(join(tmpdir(), 'qkt-fleet-'));
  const geometry = compactGeometry(bits);
  const classes = assignClasses(n, mix, seed);
  // Each terminal's traffic waits on the stop signal (a listener each): not a leak at N > 10.
  if (o.signal) setMaxListeners(4 * n + 16, o.signal);
  const storeKind: StationStoreKind = o.store ?? 'sqlite';
  const stationWhere = o.station ?? 'process';
  let stationChild: StationProcess | undefined;
  const width = String(n).length;
  const members: Member[] = [];
  let server: StationServer | undefined;
  let brokerStation: BrokerStation | undefined;
  try {
    // 0. Room: in the file store each terminal's station pool image is 2 MiB on disk (a
    //    full-size pool per terminal), in the SQLite store its keys and a few rows; with --home
    //    its module image too. Refused before anything is made rather than failing at terminal
    //    9,000 with the disk full.
    // Open files: a connection per terminal here (and one in the station's process).
    const files = openFileLimit();
    if (o.broker === undefined && files !== undefined && n + 256 > files) {
      throw new InputError(`${n} terminals need about ${n + 256} open files (a connection each), and this process may open ${files}: raise it (ulimit -n) or run fewer --terminals`);
    }
    const fs = statfsSync(dir);
    const free = fs.bavail * fs.bsize;
    const perStation = storeKind === 'files' ? STATION_POOL_IMAGE_BYTES : storeKind === 'postgres' ? 0 : bits / 8 + STATION_ROW_BYTES;
    const need = n * (perStation + (o.home !== undefined ? geometry.size : 0) + 64 * 1024);
    if (need > free) {
      throw new InputError(
        `${n} terminals need about ${(need / 2 ** 30).toFixed(1)} GiB in ${o.home ?? tmpdir()} (${storeKind === 'files' ? 'a 2 MiB station pool each' : 'their keys at the station'}), and it has ${(free / 2 ** 30).toFixed(1)} GiB free: fewer --terminals, or --home on a bigger disk`,
      );
    }
    // 1. The KMD.
    // The supply's buffer holds the whole stock (its default, 2^30 bits, is 8,192 terminals at 128 kbit).
    const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: supply, stockBits: bits * n, capacityBits: Math.max(2 ** 30, bits * n), stationStore: storeKind, ...(o.db !== undefined ? { stationDb: o.db } : {}) });
    const cert = await home.locked(async () => {
      await ensurePki(home);
      return o.broker === undefined ? ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1')) : undefined;
    });
    const carrier = Carrier.init(join(dir, 'carrier'), { carrierId: 'car-fleet', kmdId: home.config.kmdId });
    if (o.home !== undefined) mkdirSync(join(dir, 'images'), { mode: 0o700 });
    mkdirSync(join(dir, 'certs'), { mode: 0o700 });

    // 2. Enrolment (each holds the home's lock briefly: one at a time).
    for (let i = 0; i < n; i++) {
      const id = `${o.shard !== undefined ? `${o.shard}-` : ''}T${String(i + 1).padStart(Math.max(5, width), '0')}`;
      let flash: NorFlash;
      if (o.home !== undefined) {
        const path = join(dir, 'images', `${id}.img`);
        enrollTerminal(home, id, path, { geometry, maxKeyBits: geometry.maxKeyBits });
        flash = NorFlash.open(path, geometry);
      } else {
        flash = NorFlash.memory(geometry);
        enrollTerminalFlash(home, id, flash, { where: `memory:${id}`, maxKeyBits: geometry.maxKeyBits });
      }
      members.push({ id, cls: classes[i]!, flash });
      progress('enrol', i + 1, n);
      if (i % 32 === 31) {
        await yieldNow();
        o.signal?.throwIfAborted();
      }
    }

    // 3. Export and the carrier. One station store for the setup (the service opens its own).
    const store = stationStore(home);
    try {
      for (let i = 0; i < n; i += 64) {
        const group = members.slice(i, i + 64);
        for (const [k, e] of exportBatches(home, group.map((m) => m.id), bits, { station: store }).entries()) {
          const added = carrier.addBatch(readOutbox(e));
          markOnCarrier(home, e.terminalId, e.record.batchId, carrier.carrierId);
          group[k]!.entry = added;
        }
        await yieldNow();
        o.signal?.throwIfAborted();
      }

      // 4. The field visit, a few terminals at once.
      let injected = 0;
      await bounded(
        members,
        limit,
        async (m) => {
          const [host, device] = createInProcessPair();
          createTerminal({ flash: m.flash, transport: device });
          m.module = new LinkClient(host);
          const params = await m.module.negotiate();
          const r = await injectBatch(m.module, params, carrier.readBatch(m.entry!), o.signal ? { signal: o.signal } : {});
          carrier.recordReceipt(m.id, r.batchId, r.receipt);
          if (o.broker === undefined) {
            // Over TLS the station admits a terminal on its own certificate only (on a broker, each uplink authenticates itself).
            const certDir = join(dir, 'certs', m.id);
            await issueStationClientCert(pkiDir(home), { kind: 'terminal', id: m.id, generation: 1 }, certDir);
            m.pems = readClientPems(certDir);
          }
          progress('inject', ++injected, n);
        },
        o.signal,
      );

      // 5. Receipts back at the KMD: the station's keys go active.
      const collected = collectReceipts(home, carrier, { station: store });
      if (collected.collected.length !== n) {
        throw new Error(`the KMD collected ${collected.collected.length} of ${n} receipts (${collected.rejected.map((r) => `${r.id}: ${r.reason}`).slice(0, 3).join('; ')})`);
      }
    } finally {
      store.close();
    }

    // 6. The station service, and one connection per terminal: the station admits a terminal's
    //    uplinks only on that terminal's own certificate, so connections cannot be shared. At most
    //    8 handshakes at once (the service evicts beyond 16 in progress from one address).
    //    On a broker: one connection for the whole fleet.
    let address: string;
    if (stationWhere === 'none') {
      address = o.broker!;
    } else if (stationWhere === 'inline') {
      server = await startStationServer(
        o.broker === undefined
          ? { stationDir: home.path('station'), listen: 'tls:127.0.0.1:0', tls: cert!.pems, maxConnections: n + 64 }
          : { stationDir: home.path('station'), broker: o.broker, ...(o.broker === 'embedded' ? { listen: '127.0.0.1:0' } : {}) },
      );
      address = server.address;
    } else {
      stationChild = await startStationProcess(home.dir, n + 64, o.broker);
      address = stationChild.address;
    }
    let connected = 0;
    if (o.broker !== undefined) {
      brokerStation = await BrokerStation.connect(address);
      for (const m of members) {
        m.station = brokerStation.forTerminal(m.id);
        progress('connect', ++connected, n);
      }
    } else {
      await bounded(
        members,
        Math.min(limit, 8),
        async (m) => {
          m.link = new LinkClient(await connectStation(address, m.pems!), { baseTimeoutMs: 10_000, retries: 0 });
          await m.link.negotiate();
          m.station = m.link;
          progress('connect', ++connected, n);
        },
        o.signal,
      );
    }
    const setupSeconds = (performance.now() - t0) / 1000;
    const rssSetup = process.memoryUsage().rss;

    // The traffic: every terminal at once.
    const durationMs = o.seconds * 1000;
    // At --rate, each class's message kinds keep their shares and are scaled to R a second in all.
    const scaleOf = (c: ClassId): number | undefined => (o.ratePerSecond === undefined ? undefined : (o.ratePerSecond * tMs) / 1000 / CLASSES[c].kinds.reduce((a, k) => a + k.perT, 0));
    const total = members.reduce((s, m) => s + expectedMessages(CLASSES[m.cls], { tMs, durationMs, ...(scaleOf(m.cls) !== undefined ? { scale: scaleOf(m.cls)! } : {}) }), 0);
    // Bounded samples of the access delays, per class and over all (a long run of a large fleet).
    const delays = new Map<ClassId, DelaySample>(CLASS_IDS.map((c, i) => [c, new DelaySample(seed + i)]));
    const allDelays = new DelaySample(seed ^ 0xa11);
    let done = 0;
    const t1 = performance.now();
    await Promise.all(
      members.map(async (m, i) => {
        m.result = await runTraffic({
          terminal: m.module!,
          station: m.station!,
          terminalId: m.id,
          cls: CLASSES[m.cls],
          tMs,
          durationMs,
          seed: (seed * 1_000_003 + i) >>> 0,
          mode: 'otp',
          ...(scaleOf(m.cls) !== undefined ? { scale: scaleOf(m.cls)! } : {}),
          supplyBitsPerSecond: supply,
          deadlineMs,
          onMessage: () => progress('traffic', ++done, Math.max(total, done)),
          onOpened: (d) => {
            delays.get(m.cls)!.add(d);
            allDelays.add(d);
          },
          ...(o.signal ? { signal: o.signal } : {}),
        });
      }),
    );
    // Stopped (Ctrl-C): no table of a cut-short run; the finally below removes what was made.
    o.signal?.throwIfAborted();
    const trafficSeconds = (performance.now() - t1) / 1000;
    const rssAfter = process.memoryUsage().rss;

    // Both sides' accounts, terminal by terminal: the station's by STATUS on its TLS connection,
    // or, on a broker (which carries uplinks only), read from its store.
    let mismatches = 0;
    const accounts = o.broker !== undefined ? openStationStore(home.path('station')) : undefined;
    try {
      await bounded(members, limit, async (m) => {
        const pool = (await m.module!.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits?: unknown } | undefined;
        const own = accounts ? accounts.account(m.id) : (await readStationStatus(m.link!)).find((r) => r.terminalId === m.id);
        if (typeof pool?.consumedKeyBits !== 'number' || own === undefined || pool.consumedKeyBits !== own.consumedKeyBits) mismatches++;
      });
    } finally {
      accounts?.close();
    }

    const results = members.map((m) => m.result!);
    const failures: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
    const rows = CLASS_IDS.filter((c) => members.some((m) => m.cls === c)).map((c) => row(c, results.filter((r) => r.class === c), delays.get(c)!));
    return {
      terminals: n,
      bits,
      mix,
      mode: 'otp',
      seconds: o.seconds,
      tMs,
      seed,
      images: { where: o.home !== undefined ? 'files' : 'memory', bytes: geometry.size, sectors: geometry.size / geometry.sectorSize, sectorSize: geometry.sectorSize },
      store: storeKind,
      station: stationWhere,
      broker: o.broker === undefined ? null : redactUrl(address),
      shard: o.shard ?? null,
      ratePerSecond: o.ratePerSecond ?? null,
      stationConnections: o.broker === undefined ? n : 1,
      setupSeconds: round3(setupSeconds),
      trafficSeconds: round3(trafficSeconds),
      rss: { beforeBytes: rssBefore, afterSetupBytes: rssSetup, afterBytes: rssAfter, perTerminalBytes: Math.round((Math.max(rssSetup, rssAfter) - rssBefore) / n) },
      classes: rows,
      overall: row('all', results, allDelays),
      keysAgree: mismatches === 0,
      keyMismatches: mismatches,
      failures,
      ...(o.home !== undefined ? { home: dir } : {}),
    };
  } finally {
    await brokerStation?.close();
    for (const m of members) {
      await m.link?.close().catch(() => undefined);
      await m.module?.close().catch(() => undefined);
      try {
        m.flash.close();
      } catch {
        // a memory image: nothing to flush
      }
    }
    await server?.close().catch(() => undefined);
    await stationChild?.stop();
    if (o.home === undefined) rmSync(dir, { recursive: true, force: true });
  }
}
