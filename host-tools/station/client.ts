// A client of the running master station (docs/protocol.md 3.12): its key accounts per terminal,
// read page by page and checked field by field (STATION STATUS), and a test uplink from a terminal
// module through the station and, in AEAD mode, a downlink back (KEYS SEAL, STATION UPLINK,
// STATION DOWNLINK, KEYS OPEN). The link sessions are the caller's: `qkt station status` and
// `qkt station uplink` open them.
import { Group, KeysCmd, StationCmd, SystemCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { decodeServiceHeader } from '../../firmware/crypto/service.js';
import type { Payload } from '../../firmware/link/codec.js';
import type { LinkClient } from '../link/client.js';
import { printable } from '../peer-text.js';
import type { LastUplink, StationAccount } from './store.js';
import type { StationRole } from './certs.js';

/** One row of STATION STATUS, checked. */
export interface StationTerminalRow extends StationAccount {
  terminalId: string;
  /** The terminal's device generation at the KMD; null when it is not enrolled there (or its record is damaged). */
  generation: number | null;
  lastUplink: LastUplink | null;
  /** When its keys run out at its recent use (docs/protocol.md 3.12.3); null: no use in the last 30 days. */
  forecast: StationForecast | null;
}

/** The station's forecast for one terminal's keys. */
export interface StationForecast {
  /** Key bits a day its uplinks used, averaged over `basisDays`. */
  keyBitsPerDay: number;
  /** UTC days the average covers: from its first day with use in the last 30 to today. */
  basisDays: number;
  /** Whole days the key bits the station holds for it last at that rate. */
  daysLeft: number;
}

/** The station (or what answered in its place) sent something the protocol does not allow. */
export class StationReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StationReplyError';
  }
}

/** The station refused a request: the link's error code and reason, and which step it was. */
export class StationRefusedError extends Error {
  constructor(
    readonly step: 'uplink' | 'downlink' | 'status',
    readonly linkError: LinkError,
    message: string,
  ) {
    super(message);
    this.name = 'StationRefusedError';
  }
}

/** The terminal module sent something the protocol does not allow (a sealed message that is none). */
export class TerminalReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TerminalReplyError';
  }
}

/** The certificate given cannot send this terminal's uplinks (an operator's, another terminal's). */
export class WrongCertificateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WrongCertificateError';
  }
}

/** The terminal module refused a step of the test (no key left, not enrolled...). */
export class TerminalRefusedError extends Error {
  constructor(
    readonly linkError: LinkError | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'TerminalRefusedError';
  }
}

const TERMINAL_ID = /^[A-Za-z0-9._-]{1,32}$/;
const count = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
/** The latest time a JavaScript Date (and so an ISO 8601 line) can show: 8.64e15 ms after the epoch. */
const MAX_DATE_MS = 8.64e15;

/** Most rows of one STATUS page (docs/protocol.md 3.12.3: 16). */
export const STATUS_PAGE_ROWS = 16;
/** Most rows `readStationStatus` reads in all: a station that pages on without end is cut off, not held in memory. */
export const MAX_STATUS_ROWS = 65_536;

function row(x: unknown): StationTerminalRow {
  const r = x as Record<string, unknown> | null;
  const bad = (what: string): never => {
    throw new StationReplyError(`the station sent a malformed STATUS row (${what})`);
  };
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return bad('not a map');
  const id = r['terminalId'];
  if (typeof id !== 'string' || !TERMINAL_ID.test(id)) return bad('terminalId');
  for (const k of ['storedKeyBits', 'consumedKeyBits', 'activeBatches', 'inactiveBatches'] as const) if (!count(r[k])) bad(k);
  // Fields a station of an earlier release does not send are 0 / null; present, they must be right.
  for (const k of ['maxKeyBits', 'activeKeyBits', 'inactiveKeyBits'] as const) if (r[k] !== undefined && !count(r[k])) bad(k);
  const g = r['generation'];
  if (g !== undefined && g !== null && !(count(g) && g >= 1)) bad('generation');
  const u = r['lastUplink'] as Record<string, unknown> | null | undefined;
  let lastUplink: LastUplink | null = null;
  if (u !== undefined && u !== null) {
    if (typeof u !== 'object' || !count(u['at']) || (u['at'] as number) > MAX_DATE_MS || (u['mode'] !== 'otp' && u['mode'] !== 'aead') || !count(u['counter']) || !count(u['bytes']) || !count(u['keyBits'])) bad('lastUplink');
    lastUplink = { at: u['at'] as number, mode: u['mode'] as 'otp' | 'aead', counter: u['counter'] as number, bytes: u['bytes'] as number, keyBits: u['keyBits'] as number };
  }
  const f = r['forecast'] as Record<string, unknown> | null | undefined;
  let forecast: StationForecast | null = null;
  if (f !== undefined && f !== null) {
    if (typeof f !== 'object' || !count(f['keyBitsPerDay']) || !count(f['basisDays']) || !count(f['daysLeft']) || f['keyBitsPerDay'] === 0 || f['basisDays'] === 0) bad('forecast');
    forecast = { keyBitsPerDay: f['keyBitsPerDay'] as number, basisDays: f['basisDays'] as number, daysLeft: f['daysLeft'] as number };
  }
  return {
    terminalId: id,
    generation: typeof g === 'number' ? g : null,
    storedKeyBits: r['storedKeyBits'] as number,
    maxKeyBits: (r['maxKeyBits'] as number | undefined) ?? 0,
    consumedKeyBits: r['consumedKeyBits'] as number,
    activeBatches: r['activeBatches'] as number,
    inactiveBatches: r['inactiveBatches'] as number,
    activeKeyBits: (r['activeKeyBits'] as number | undefined) ?? 0,
    inactiveKeyBits: (r['inactiveKeyBits'] as number | undefined) ?? 0,
    lastUplink,
    forecast,
  };
}

/** Every terminal's account the caller may see (an operator: all, page by page; a terminal: its own). */
export async function readStationStatus(station: LinkClient): Promise<StationTerminalRow[]> {
  const rows: StationTerminalRow[] = [];
  let after: string | undefined;
  for (;;) {
    let reply: Payload;
    try {
      reply = await station.request(Group.STATION, StationCmd.STATUS, after === undefined ? {} : { after });
    } catch (e) {
      if (e instanceof LinkError) throw new StationRefusedError('status', e, `the station refused STATUS: ${e.message}`);
      throw e;
    }
    const list = reply['terminals'];
    if (!Array.isArray(list)) throw new StationReplyError('the station sent a STATUS reply without a terminals list');
    if (list.length > STATUS_PAGE_ROWS) throw new StationReplyError(`the station sent a STATUS page of ${list.length} rows (at most ${STATUS_PAGE_ROWS})`);
    const page = list.map(row);
    // Rows in id order, each after the previous page's last: a station that repeats or reorders
    // rows cannot make us list a terminal twice or loop.
    let last = after;
    for (const r of page) {
      if (last !== undefined && r.terminalId <= last) throw new StationReplyError('the station sent STATUS rows out of order or repeated');
      last = r.terminalId;
    }
    if (rows.length + page.length > MAX_STATUS_ROWS) throw new StationReplyError(`the station sent more than ${MAX_STATUS_ROWS} STATUS rows: stopped reading`);
    rows.push(...page);
    const next = reply['next'];
    if (next === undefined) return rows;
    // Each page must move on: `next` is its last row's id (3.12.3).
    if (typeof next !== 'string' || page.length === 0 || next !== last) throw new StationReplyError('the station sent a STATUS page that does not move on');
    after = next;
  }
}

export interface TestUplinkResult {
  terminalId: string;
  mode: 'otp' | 'aead';
  /** The station took the message and opened it. */
  accepted: true;
  /** The station opened exactly the bytes the terminal sealed (their count; the data is in its inbox). */
  decrypted: boolean;
  /** The message's counter (service header): the AEAD nonce counter or the OTP message number. */
  counter: number;
  bytes: number;
  /** Key bits the station consumed for it, and the terminal (OTP: 256 + 8 per byte; AEAD: the 256-bit session key). */
  stationKeyBits: number;
  /** AEAD: a downlink of the same bytes sealed by the station and opened by the terminal. */
  downlink?: { opened: boolean };
}

async function onTerminal(terminal: LinkClient, what: string, group: number, command: number, p: Payload): Promise<Payload> {
  try {
    return await terminal.request(group, command, p);
  } catch (e) {
    if (e instanceof LinkError) throw new TerminalRefusedError(e, `the terminal refused ${what}: ${e.message}`);
    throw e;
  }
}

/**
 * Seal `data` on the terminal module (a KEYS session of `mode`, closed after), send it to the
 * station as the terminal's UPLINK, and check the station opened it; in AEAD mode also have the
 * station seal the same bytes as a downlink and the terminal open it. Spends keys on both sides,
 * as any uplink does.
 */
export async function sendTestUplink(terminal: LinkClient, station: LinkClient, o: { mode: 'otp' | 'aead'; data: Uint8Array; caller: StationRole | undefined }): Promise<TestUplinkResult> {
  const terminalId = await beforeUplinks(terminal, station, o.caller);
  return testUplink(terminal, station, terminalId, o);
}

/**
 * What must hold before a terminal spends a key on a message for the station: the module is
 * enrolled, the certificate is this terminal's, the station takes it (its generation is current)
 * and holds keys for the terminal. Returns the terminal's id.
 */
export async function beforeUplinks(terminal: LinkClient, station: LinkClient, caller: StationRole | undefined): Promise<string> {
  const st = await onTerminal(terminal, 'STATUS', Group.SYSTEM, SystemCmd.STATUS, {});
  const terminalId = st['terminalId'];
  if (typeof terminalId !== 'string' || !TERMINAL_ID.test(terminalId)) throw new TerminalRefusedError(undefined, 'the module on the port is not enrolled (no terminal id): enrol it with qkt kmd enroll');
  // Checked before the terminal spends a key on the message: the certificate is this terminal's,
  // the station takes it (its generation is current) and holds keys for the terminal.
  const fix = `give its own (qkt station cert --terminal ${terminalId})`;
  if (caller?.kind !== 'terminal') throw new WrongCertificateError(`the certificate is ${caller ? `operator ${caller.id}'s` : 'no station certificate'}, not terminal ${terminalId}'s: ${fix}`);
  if (caller.id !== terminalId) throw new WrongCertificateError(`the certificate is terminal ${caller.id}'s; the terminal on the port is ${terminalId}: ${fix}`);
  const own = await readStationStatus(station);
  // A row with no key left (its batches used up or voided at the KMD) holds none either: the
  // terminal's key would be spent on a message the station cannot open.
  if (!own.some((r) => r.terminalId === terminalId && r.storedKeyBits > 0)) {
    throw new StationRefusedError('uplink', new LinkError(Rc.WRONG_TERMINAL), `the station holds no keys for terminal ${terminalId}: nothing sent (load a batch for it and inject it first)`);
  }
  return terminalId;
}

async function testUplink(terminal: LinkClient, station: LinkClient, terminalId: string, o: { mode: 'otp' | 'aead'; data: Uint8Array }): Promise<TestUplinkResult> {
  const neg = await onTerminal(terminal, 'a key session', Group.KEYS, KeysCmd.NEGOTIATE, o.mode === 'otp' ? { mode: 'otp', enc: 'any', auth: 'any' } : { mode: 'aead', enc: 'any' });
  const s = neg['s'];
  try {
    const sealed = await onTerminal(terminal, 'to seal the test message', Group.KEYS, KeysCmd.SEAL, { s: s as number, d: o.data });
    const m = sealed['m'];
    if (!(m instanceof Uint8Array)) throw new TerminalRefusedError(undefined, 'the terminal sent no sealed message');
    let header;
    try {
      header = decodeServiceHeader(m).header;
    } catch (e) {
      // What answered on the port is not a module sealing by the protocol (or a broken one).
      throw new TerminalReplyError(`the terminal sent a malformed sealed message (${printable((e as Error).message, 80)}): nothing sent to the station`);
    }
    let up: Payload;
    try {
      up = await station.request(Group.STATION, StationCmd.UPLINK, { t: terminalId, m });
    } catch (e) {
      if (e instanceof LinkError) throw new StationRefusedError('uplink', e, `the station refused the uplink from ${terminalId}: ${e.message}`);
      throw e;
    }
    if (!count(up['n']) || !count(up['keyBits'])) throw new StationReplyError('the station sent a malformed UPLINK reply');
    const result: TestUplinkResult = {
      terminalId,
      mode: o.mode,
      accepted: true,
      decrypted: up['n'] === o.data.length,
      counter: header.counter,
      bytes: up['n'],
      stationKeyBits: up['keyBits'],
    };
    if (o.mode === 'aead') {
      const key = header.keyIds[0]!;
      let down: Payload;
      try {
        down = await station.request(Group.STATION, StationCmd.DOWNLINK, { t: terminalId, b: key.batchId, o: key.bitOffset, d: o.data });
      } catch (e) {
        if (e instanceof LinkError) throw new StationRefusedError('downlink', e, `the station accepted the uplink but refused the downlink: ${e.message}`);
        throw e;
      }
      const dm = down['m'];
      if (!(dm instanceof Uint8Array)) throw new StationReplyError('the station sent a malformed DOWNLINK reply');
      const opened = (await onTerminal(terminal, "the station's downlink", Group.KEYS, KeysCmd.OPEN, { s: s as number, m: dm }))['d'];
      result.downlink = { opened: opened instanceof Uint8Array && Buffer.from(opened).equals(Buffer.from(o.data)) };
    }
    return result;
  } finally {
    await terminal.request(Group.KEYS, KeysCmd.CLOSE, { s: s as number }).catch(() => undefined);
  }
}
