// `qkt station status` and `qkt station uplink`: the running master station from the CLI, over
// mutual TLS with a certificate from `qkt station cert` (docs/station.md): its key accounts per
// terminal and last uplinks (an operator's certificate: every terminal; or `--home H`: read from
// the KMD home's station store, no service needed), and a test uplink from a
// terminal module on a port through the station (the terminal's certificate). The work is in
// host-tools/station/client.ts.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, defineCommand, Exit, int, str } from '../command.js';
import type { Values } from '../command.js';
import { openKmd } from '../home.js';
import { openStationStore } from '../../station/open-store.js';
import { accountRow } from '../../station/accounts.js';
import { connectDevice } from '../../link/session.js';
import { LinkClient } from '../../link/client.js';
import { connectStation } from '../../station/connect.js';
import { CLIENT_FILES, readClientPems, roleOf } from '../../station/certs.js';
import type { StationRole } from '../../station/certs.js';
import { readStationStatus, sendTestUplink, StationRefusedError, StationReplyError, TerminalRefusedError, TerminalReplyError, WrongCertificateError } from '../../station/client.js';
import type { StationTerminalRow, TestUplinkResult } from '../../station/client.js';
import { formatTlsAddress, parseTlsAddress } from '../../transports/tls.js';
import { formatBits } from '../../units.js';
import { resolvePort } from '../port-select.js';

/** A negotiated link to the station at `address`, presenting the certificate in `dir`. */
async function openStation(address: string, dir: string): Promise<{ client: LinkClient; address: string; caller: StationRole | undefined }> {
  let where: string;
  try {
    const a = parseTlsAddress(address);
    where = formatTlsAddress(a.host, a.port);
  } catch (e) {
    throw new CliError(`--station: ${(e as Error).message}`, Exit.USAGE);
  }
  for (const f of Object.values(CLIENT_FILES)) {
    if (!existsSync(join(dir, f))) throw new CliError(`--cert ${dir}: no ${f} there; issue a certificate with qkt station cert --out ${dir}`, Exit.STATE);
  }
  let pems;
  try {
    pems = readClientPems(dir);
  } catch (e) {
    throw new CliError(`--cert ${dir}: cannot read the certificate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, Exit.STATE);
  }
  let transport;
  try {
    transport = await connectStation(where, pems, { timeoutMs: 10_000 });
  } catch (e) {
    throw new CliError(`cannot reach the station at ${where}: ${(e as Error).message}`, Exit.NO_DEVICE);
  }
  const client = new LinkClient(transport, { baseTimeoutMs: 3000, retries: 1 });
  try {
    await client.negotiate();
  } catch (e) {
    await client.close().catch(() => undefined);
    const name = (e as Error).name;
    // TLS 1.3: the station checks the client's certificate after the client finished; a refusal
    // shows as the connection closing before the first answer.
    if (name === 'LinkClosedError') {
      throw new CliError(`the station at ${where} closed the connection: it did not accept the certificate in ${dir} (another KMD's CA, or no station role); issue one with qkt station cert`, Exit.REFUSED);
    }
    if (name === 'LinkTimeoutError') throw new CliError(`the station at ${where} did not answer (${(e as Error).message})`, Exit.NO_DEVICE);
    throw e;
  }
  // The role the certificate names, as the station reads it (a PEM's base64 body is its DER).
  const der = Buffer.from(pems.certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return { client, address: where, caller: roleOf(new Uint8Array(der)) };
}

/**
 * The station at --station with the certificate in --cert first (a wrong address or certificate
 * costs the terminal no key), then the module on `port`; `fn` runs with both, refusals mapped to
 * the CLI's words and exit codes, and both are closed after.
 */
export async function withStationAndTerminal<R>(v: Values, port: string, baud: number | undefined, fn: (terminal: LinkClient, station: Awaited<ReturnType<typeof openStation>>) => Promise<R>): Promise<R> {
  const station = await openStation(str(v, 'station')!, str(v, 'cert')!);
  try {
    const terminal = await connectDevice(port, baud ? { baud } : {});
    try {
      return await fn(terminal.client, station);
    } catch (e) {
      throw cliError(e);
    } finally {
      await terminal.close();
    }
  } finally {
    await station.client.close().catch(() => undefined);
  }
}

/** Station-side and terminal-side refusals as the CLI's words and exit codes. */
function cliError(e: unknown): unknown {
  if (e instanceof StationRefusedError || (e instanceof TerminalRefusedError && e.linkError)) return new CliError((e as Error).message, Exit.REFUSED);
  if (e instanceof TerminalRefusedError) return new CliError(e.message, Exit.STATE);
  if (e instanceof StationReplyError || e instanceof TerminalReplyError) return new CliError(e.message, Exit.FAILURE);
  if (e instanceof WrongCertificateError) return new CliError(`--cert: ${e.message}`, Exit.USAGE);
  return e;
}

/** A row for --json: the last uplink's time as ISO 8601 (UTC). */
type StatusRow = Omit<StationTerminalRow, 'lastUplink'> & { lastUplink: (Omit<NonNullable<StationTerminalRow['lastUplink']>, 'at'> & { at: string }) | null };

export interface StationStatusResult {
  station: string;
  terminals: StatusRow[];
}

/** `--home H`: the accounts read from the KMD home's station store itself, no service needed. */
function storeStatus(v: Values): StationStatusResult {
  const home = openKmd(v);
  const dir = home.path('station');
  const generation = (id: string): number | null => {
    try {
      return home.terminal(id).generation ?? 1;
    } catch {
      return null; // not enrolled, or its record damaged (qkt kmd status names it)
    }
  };
  if (!existsSync(dir)) return { station: dir, terminals: [] };
  const store = openStationStore(dir);
  try {
    return { station: dir, terminals: store.terminals().map((id) => jsonRow(accountRow(store, id, generation(id)))) };
  } finally {
    store.close();
  }
}

function jsonRow(r: StationTerminalRow): StatusRow {
  return { ...r, lastUplink: r.lastUplink ? { ...r.lastUplink, at: new Date(r.lastUplink.at).toISOString() } : null };
}

export const stationStatus = defineCommand<StationStatusResult>({
  async run(v) {
    if (str(v, 'station') === undefined) {
      if (str(v, 'cert') !== undefined) throw new CliError('--cert goes with --station: give --station [tls:]HOST:PORT too, or --home H alone', Exit.USAGE);
      if (str(v, 'home') === undefined && !process.env['QKT_HOME']) throw new CliError('give --station [tls:]HOST:PORT --cert DIR (a running station) or --home H (its store)', Exit.USAGE);
      return storeStatus(v);
    }
    if (str(v, 'cert') === undefined) throw new CliError('--station needs --cert DIR (a certificate from qkt station cert)', Exit.USAGE);
    if (str(v, 'home') !== undefined) throw new CliError('give --station with --cert, or --home, not both', Exit.USAGE);
    const { client, address } = await openStation(str(v, 'station')!, str(v, 'cert')!);
    try {
      const rows = await readStationStatus(client);
      return { station: address, terminals: rows.map(jsonRow) };
    } catch (e) {
      throw cliError(e);
    } finally {
      await client.close().catch(() => undefined);
    }
  },
  render(r) {
    if (r.terminals.length === 0) return `station ${r.station}: holds keys for no terminal${r.station.startsWith('tls:') ? ' (that this certificate may see)' : ''}`;
    const head = ['terminal', 'gen', 'remaining', 'usable', 'awaiting', 'used', 'batches', 'lasts', 'last uplink'];
    const lines = r.terminals.map((t) => [
      t.terminalId,
      t.generation === null ? '-' : String(t.generation),
      formatBits(t.storedKeyBits),
      formatBits(t.activeKeyBits),
      formatBits(t.inactiveKeyBits),
      formatBits(t.consumedKeyBits),
      `${t.activeBatches}+${t.inactiveBatches}`,
      t.forecast ? `${t.forecast.daysLeft} d` : '-',
      t.lastUplink ? `${t.lastUplink.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} ${t.lastUplink.mode} #${t.lastUplink.counter}, ${t.lastUplink.bytes} B` : 'none',
    ]);
    const width = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
    const fmt = (l: string[]) => l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(width[i]!))).join('  ');
    return [
      `station ${r.station}: ${r.terminals.length} terminal(s); remaining = usable (delivery proven) + awaiting (receipt not back); batches active+inactive; lasts = days the remaining keys last at the last 30 days' use (- : no use)`,
      fmt(head),
      ...lines.map(fmt),
    ].join('\n');
  },
});

export interface StationUplinkResult extends TestUplinkResult {
  port: string;
  station: string;
}

const MAX_DATA = 4096;

export const stationUplink = defineCommand<StationUplinkResult>({
  async run(v) {
    const mode = str(v, 'mode') ?? 'otp';
    if (mode !== 'otp' && mode !== 'aead') throw new CliError(`--mode must be otp or aead, got ${JSON.stringify(mode)}`, Exit.USAGE);
    const data = new TextEncoder().encode(str(v, 'data') ?? 'qkt station uplink test');
    if (data.length > MAX_DATA) throw new CliError(`--data is ${data.length} bytes; at most ${MAX_DATA}`, Exit.USAGE);
    const port = await resolvePort(str(v, 'port')!, str(v, 'vidpid'));
    const baud = int(v, 'baud', 300, 12_000_000);
    // The station first: a wrong address or certificate costs the terminal no key.
    return withStationAndTerminal(v, port, baud, async (terminal, station) => ({
      port,
      station: station.address,
      ...(await sendTestUplink(terminal, station.client, { mode, data, caller: station.caller })),
    }));
  },
  outcome(r) {
    if (!r.decrypted) return { exitCode: Exit.FAILURE, reason: `the station accepted the uplink but opened ${r.bytes} bytes, not the bytes sent` };
    if (r.downlink && !r.downlink.opened) return { exitCode: Exit.FAILURE, reason: "the terminal could not open the station's downlink: the two hold different session keys" };
    return undefined;
  },
  render: (r) =>
    [
      `uplink from ${r.terminalId} (${r.port}) to the station ${r.station}: accepted, ${r.decrypted ? 'decrypted ok' : 'DECRYPTED WRONG'}`,
      `  ${r.mode} message #${r.counter}, ${r.bytes} bytes, ${formatBits(r.stationKeyBits)} of key at the station`,
      ...(r.downlink ? [`  downlink under the same session key: ${r.downlink.opened ? 'opened ok by the terminal' : 'NOT OPENED'}`] : []),
    ].join('\n'),
});
