// `qkt status --port PATH`: identity, firmware and key pool of the terminal on a port. Something
// else on the port (a KMD download port, a station, an HTTP server, silence) is named as such,
// exit 3, never read as a terminal.
import { CliError, defineCommand, Exit, int, str } from '../command.js';
import { connectDevice } from '../../link/session.js';
import { Group, SystemCmd } from '../../../firmware/link/groups.js';
import { formatBits } from '../../units.js';
import { resolvePort } from '../port-select.js';
import { printable } from '../../peer-text.js';
import { isTcpAddress } from '../../transports/tcp.js';
import { CLASSES, forecastFor, isClassId } from '../../station/traffic.js';
import type { ClassForecast } from '../../station/traffic.js';
import { parseRate } from '../../units.js';

export interface StatusResult {
  port: string;
  terminalId: string | null;
  enrolled: boolean;
  firmware: string;
  state?: string;
  pool: { storedKeyBits: number; maxKeyBits: number; consumedKeyBits: number; batches: unknown[] };
  link: { maxFrame: number; window: number; protocolVersions: number[] };
  audit?: { events: number; pendingRefusals?: number; log?: AuditLine[] };
  secureArea?: { damaged: boolean; reason?: string };
  /** With --class: when the pool runs dry under that class's traffic (docs/traffic.md). */
  forecast?: ClassForecast;
  [k: string]: unknown;
}

interface AuditLine {
  n: number;
  at: number;
  type: string;
  detail: string;
  /** `refused` events: how many refusals, since when. */
  count?: number;
  first?: number;
}

/** A device that answered "too many connections": it is a terminal, and busy (exit 7 stays). */
function isBusy(e: unknown): boolean {
  return /refused the connection/.test((e as Error)?.message ?? '') || (e as { exitCode?: unknown })?.exitCode === Exit.BUSY;
}

function isPoolStatus(p: unknown): p is StatusResult['pool'] {
  const x = p as Record<string, unknown> | null;
  const n = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  return x !== null && typeof x === 'object' && n(x['storedKeyBits']) && n(x['maxKeyBits']) && n(x['consumedKeyBits']) && Array.isArray(x['batches']);
}

export default defineCommand<StatusResult>({
  async run(v) {
    const cls = str(v, 'class');
    if (cls !== undefined && !isClassId(cls)) throw new CliError(`--class must be one of A, B, C, D, E, got ${JSON.stringify(cls)}`, Exit.USAGE);
    if (cls === undefined && str(v, 'online') !== undefined) throw new CliError('--online goes with --class: the forecast needs the class of traffic', Exit.USAGE);
    let online = 0;
    const onlineText = str(v, 'online');
    try {
      // Zero in any unit (0, 0kbit/s) is no online supply; anything else is a rate.
      if (onlineText !== undefined && !/^\s*0+(\.0+)?\s*[a-zA-Z/]*\s*$/.test(onlineText)) online = parseRate(onlineText);
    } catch (e) {
      throw new CliError(`--online: ${(e as Error).message}`, Exit.USAGE);
    }
    const port = await resolvePort(str(v, 'port')!, str(v, 'vidpid'));
    const baud = int(v, 'baud', 300, 12_000_000);
    let s;
    try {
      s = await connectDevice(port, baud ? { baud } : {});
    } catch (e) {
      // On TCP, one short look at what is there instead (peer-probe.ts, loaded only now).
      if (isTcpAddress(port) && !isBusy(e)) {
        const { notATerminal, probeTcpPeer } = await import('../peer-probe.js');
        const found = notATerminal(port, await probeTcpPeer(port));
        if (found) throw new CliError(found, Exit.NO_DEVICE);
      }
      throw e;
    }
    try {
      // The KMD's download port and the station speak the same link but are not terminals.
      const fw = String(s.params.firmware ?? '');
      if (fw.startsWith('qkt-kmd')) throw new CliError(`${port} is a qkt KMD download port (${fw}), not a terminal: use qkt carrier load --kmd ${port}`, Exit.NO_DEVICE);
      if (fw.startsWith('qkt-station')) throw new CliError(`${port} is a qkt station (${fw}), not a terminal: use qkt station status`, Exit.NO_DEVICE);
      const st = await s.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
      if (!isPoolStatus(st['pool'])) {
        throw new CliError(`${port} answered, but not as a terminal: its STATUS has no key pool (firmware ${JSON.stringify(fw.slice(0, 40))})`, Exit.NO_DEVICE);
      }
      const { link: _deviceLinkStats, ...rest } = st;
      const link = { maxFrame: s.params.maxFrame, window: s.params.window, protocolVersions: s.params.versions };
      const result = { ...rest, port, link } as StatusResult;
      if (v['audit'] === true) {
        // The module's security log (enrolment, batches accepted or refused, zeroize, lockouts).
        const log = await s.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 64 });
        const audit = (rest['audit'] ?? {}) as { events?: number; pendingRefusals?: number };
        result.audit = { ...audit, events: audit.events ?? 0, log: log['events'] as AuditLine[] };
      }
      if (cls !== undefined) result.forecast = forecastFor(result.pool.storedKeyBits, CLASSES[cls as keyof typeof CLASSES], online);
      return result;
    } finally {
      await s.close();
    }
  },
  render(r) {
    const p = r.pool;
    return [
      // Everything here is the device's word: shown with its control characters escaped.
      `terminal   ${r.terminalId === null || r.terminalId === undefined ? '(not enrolled)' : printable(r.terminalId, 64)}`,
      `firmware   ${printable(r.firmware, 64)}${r.state && r.state !== 'ready' ? `  [${printable(r.state, 32)}]` : ''}`,
      `key pool   ${formatBits(p.storedKeyBits)} stored of ${formatBits(p.maxKeyBits)} max, ${formatBits(p.consumedKeyBits)} consumed, ${p.batches.length} batch(es)`,
      `link       ${r.port}, frames up to ${r.link.maxFrame} B, window ${r.link.window}`,
      ...(r.forecast ? [`forecast   ${forecastText(r.forecast)}`] : []),
      ...(r.secureArea?.damaged ? [`secure     DAMAGED: ${printable(r.secureArea.reason ?? 'see the audit log', 120)}`] : []),
      ...(r.audit?.pendingRefusals ? [`refusals   ${r.audit.pendingRefusals} since the last one logged (counted in RAM)`] : []),
      ...(r.audit?.log
        ? ['audit log:', ...r.audit.log.map((e) => `  #${e.n} ${new Date(e.at).toISOString()} ${printable(e.type, 32)}${e.count !== undefined ? ` x${e.count} since ${new Date(e.first ?? e.at).toISOString()}` : ''} ${printable(e.detail, 200)}`)]
        : []),
    ].join('\n');
  },
});

function forecastText(f: ClassForecast): string {
  const kbps = (b: number) => `${Number((b / 1000).toFixed(2))} kbit/s`;
  const at = `class ${f.class}'s traffic uses ${kbps(f.keyBitsPerSecond)} of key${f.onlineBitsPerSecond > 0 ? `, ${kbps(f.onlineBitsPerSecond)} arrives online` : ''}`;
  if (f.secondsLeft === null) return `${at}: the online supply covers it, the pool does not run dry`;
  const d = f.secondsLeft;
  const span = d >= 86_400 ? `${Math.floor(d / 86_400)} d` : d >= 3600 ? `${Math.floor(d / 3600)} h` : d >= 60 ? `${Math.floor(d / 60)} min` : `${d} s`;
  return `${at}: the pool lasts ${span}, until ${f.runsOutAt!.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}; the next visit is due before then`;
}
