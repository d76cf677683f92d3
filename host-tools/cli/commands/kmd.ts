// `qkt kmd ...`: the access-layer key management device: init, enroll, export, collect, status, void.
import { defineCommand, bitsOption, rateOption, strs, str, CliError, Exit } from '../command.js';
import { changeKmd, homeDir, kmdCli, openKmd } from '../home.js';
import { KmdHome } from '../../kmd/home.js';
import { enrollTerminal, reenrollTerminal } from '../../kmd/enroll.js';
import { kmdStatus } from '../../kmd/status.js';
import type { KmdStatus } from '../../kmd/status.js';
import { voidBatches } from '../../kmd/void.js';
import type { VoidResult } from '../../kmd/void.js';
import { BATCH_STATES } from '../../kmd/batch-state.js';
import { exportBatches, outbox } from '../../kmd/export.js';
import { collectReceipts } from '../../kmd/collect.js';
import type { CollectResult } from '../../kmd/collect.js';
import { openCarrier, withCarrierSync } from '../carrier-open.js';
import { formatBits, formatFrequency, parseFrequency } from '../../units.js';
import { SUPPLY_MODELS } from '../../kmd/supply.js';
import type { SupplyLink, SupplyModelName } from '../../kmd/supply.js';
import { QKD_MODEL_KINDS, cutoffKm, perPulseRate } from '../../kmd/qkd-model.js';
import { printable } from '../../peer-text.js';
import { checkDbUrl } from '../../station/open-store.js';

export interface InitCliResult {
  kmdId: string;
  home: string;
  /** The supply's rate: as given (fixed), or the QKD model's rate rounded down to a whole bit/s. */
  rateBitsPerSecond: number;
  stockBits: number;
  /** Where the rate comes from: `fixed`, or a QKD model with the figures it was computed from. */
  link: SupplyLink;
  /** The station store's kind: `files` (a pool image per terminal) or `sqlite` (one database). */
  stationStore: 'files' | 'sqlite' | 'postgres';
}

export const kmdInit = defineCommand<InitCliResult>({
  async run(v) {
    const link = supplyLinkOptions(v);
    const rate = link.model === 'fixed' ? (rateOption(v, 'rate') ?? 11_000) : Math.floor(link.perPulse! * link.pulseRateHz!);
    const stock = bitsOption(v, 'stock') ?? 0;
    const db = str(v, 'db');
    const stationStore = str(v, 'station-store') ?? (db !== undefined ? 'postgres' : 'files');
    if (stationStore !== 'files' && stationStore !== 'sqlite' && stationStore !== 'postgres') throw new CliError(`--station-store must be files, sqlite or postgres, got ${JSON.stringify(stationStore)}`, Exit.USAGE);
    if (stationStore === 'postgres' && db === undefined) throw new CliError('--station-store postgres needs --db postgres://user@host:port/database', Exit.USAGE);
    if (db !== undefined && stationStore !== 'postgres') throw new CliError(`--db is the database of a postgres station store, not of ${stationStore}`, Exit.USAGE);
    if (db !== undefined) {
      try {
        checkDbUrl(db);
      } catch (e) {
        throw new CliError((e as Error).message, Exit.USAGE);
      }
    }
    const home = kmdCli(() => KmdHome.init(homeDir(v), { rateBitsPerSecond: rate, stockBits: stock, link, stationStore, ...(db !== undefined ? { stationDb: db } : {}) }));
    return { kmdId: home.config.kmdId, home: home.dir, rateBitsPerSecond: rate, stockBits: stock, link, stationStore };
  },
  render: (r) => `KMD ${r.kmdId} created in ${r.home}, key supply ${r.rateBitsPerSecond} bit/s${describeLink(r.link)}${r.stockBits ? `, ${formatBits(r.stockBits)} in stock` : ''}${r.stationStore === 'sqlite' ? ', station store in one SQLite database' : r.stationStore === 'postgres' ? ', station store in PostgreSQL' : ''}`,
});

/** The default pulse rate of a QKD source (docs/cli.md "qkt kmd init"): a GHz-clocked one. */
const DEFAULT_PULSE_RATE_HZ = 1e9;

/** --qkd, --km, --pulse-rate, --rate: the supply's model, its rate per pulse worked out. Usage errors (exit 2) name the option. */
function supplyLinkOptions(v: Parameters<typeof str>[0]): SupplyLink {
  const name = str(v, 'qkd') ?? 'fixed';
  if (!(SUPPLY_MODELS as readonly string[]).includes(name)) throw new CliError(`--qkd must be one of ${SUPPLY_MODELS.join(', ')}, got ${JSON.stringify(name)}`, Exit.USAGE);
  const model = name as SupplyModelName;
  if (model === 'fixed') {
    for (const o of ['km', 'pulse-rate']) {
      if (str(v, o) !== undefined) throw new CliError(`--${o} sets up a QKD link model: give --qkd ${QKD_MODEL_KINDS.join('|')} with it (a fixed supply takes --rate only)`, Exit.USAGE);
    }
    return { model };
  }
  if (str(v, 'rate') !== undefined) throw new CliError(`--rate is for --qkd fixed: with --qkd ${model} the rate follows from --km and --pulse-rate`, Exit.USAGE);
  const kmText = str(v, 'km');
  if (kmText === undefined) throw new CliError(`--qkd ${model} needs --km N, the length of the link in km`, Exit.USAGE);
  const km = Number(kmText);
  if (!/^\s*\d+(\.\d+)?\s*$/.test(kmText) || !Number.isFinite(km) || km < 0 || km > 10_000) throw new CliError(`--km must be a distance in km (a decimal number from 0 to 10000), got ${JSON.stringify(kmText)}`, Exit.USAGE);
  let pulseRateHz = DEFAULT_PULSE_RATE_HZ;
  const prText = str(v, 'pulse-rate');
  if (prText !== undefined) {
    try {
      pulseRateHz = parseFrequency(prText);
    } catch (e) {
      throw new CliError(`--pulse-rate: ${(e as Error).message}`, Exit.USAGE);
    }
  }
  const { rate: perPulse, mu } = perPulseRate({ kind: model }, km);
  if (perPulse * pulseRateHz < 1) {
    const cutoff = cutoffKm({ kind: model });
    throw new CliError(`--km ${kmText}: --qkd ${model} makes ${perPulse > 0 ? `under 1 bit/s at ${formatFrequency(pulseRateHz)} pulses` : 'no key'} at ${km} km (its cutoff is ${cutoff.toFixed(2)} km)`, Exit.USAGE);
  }
  return { model, km, pulseRateHz, perPulse, mu };
}

/** ` (bb84-decoy link, 50 km, 1 GHz pulses, 2.226e-4 bit per pulse at mu 0.479)`; nothing for a fixed rate. */
function describeLink(l: SupplyLink): string {
  if (l.model === 'fixed' || l.km === undefined || l.pulseRateHz === undefined || l.perPulse === undefined) return '';
  return ` (${l.model} link, ${l.km} km, ${formatFrequency(l.pulseRateHz)} pulses, ${l.perPulse.toExponential(3)} bit per pulse${l.mu !== undefined ? ` at mu ${l.mu.toFixed(3)}` : ''})`;
}

export interface EnrollCliResult {
  terminalId: string;
  flash: string;
  enrolledAt: string;
  generation: number;
  /** With --again: the old device key's batches, voided (empty on a first enrolment). */
  voided: Array<{ batchId: string; seq: number; bits: number; was: string; stationBits: number }>;
}

export const kmdEnroll = defineCommand<EnrollCliResult>({
  async run(v) {
    return changeKmd(v, (home) => {
      if (v['again'] === true) {
        const r = kmdCli(() => reenrollTerminal(home, str(v, 'terminal')!, str(v, 'flash')!));
        const voided = r.voided.voided.map((b) => ({ batchId: b.batchId, seq: b.seq, bits: b.bits, was: b.was, stationBits: b.stationBits }));
        return { terminalId: r.record.terminalId, flash: r.record.flash!, enrolledAt: r.record.enrolledAt, generation: r.record.generation ?? 1, voided };
      }
      const t = kmdCli(() => enrollTerminal(home, str(v, 'terminal')!, str(v, 'flash')!));
      return { terminalId: t.terminalId, flash: t.flash!, enrolledAt: t.enrolledAt, generation: t.generation ?? 1, voided: [] };
    });
  },
  render: (r) =>
    r.generation === 1
      ? `terminal ${r.terminalId} enrolled; its module flash image is ${r.flash}`
      : `terminal ${r.terminalId} enrolled again (device key generation ${r.generation}); its module flash image is ${r.flash}; ${r.voided.length} batch(es) of the old key voided`,
});

export const kmdExport = defineCommand({
  async run(v) {
    const bits = bitsOption(v, 'bits')!;
    const purpose = (str(v, 'purpose') ?? 'any') as 'enc' | 'auth' | 'any';
    if (!['enc', 'auth', 'any'].includes(purpose)) throw new CliError('--purpose must be enc, auth or any', Exit.USAGE);
    const ids = strs(v, 'terminal');
    return changeKmd(v, (home) => {
      // One transaction: every terminal enrolled, supply and station room for all, or nothing spent.
      const made = kmdCli(() => exportBatches(home, ids, bits, { purpose }));
      const queued = made.map((e) => ({ terminalId: e.terminalId, batchId: e.record.batchId, seq: e.record.seq, bits: e.record.bits }));
      return { queued, outbox: outbox(home).length };
    });
  },
  render: (r) => [...r.queued.map((q) => `queued ${formatBits(q.bits)} for ${q.terminalId} (batch ${q.batchId.slice(0, 8)}, seq ${q.seq})`), `${r.outbox} batch(es) waiting for a carrier`].join('\n'),
});

export const kmdCollect = defineCommand({
  async run(v): Promise<CollectResult> {
    return changeKmd(v, (home) =>
      withCarrierSync(str(v, 'carrier')!, () => {
        const carrier = openCarrier(str(v, 'carrier')!);
        if (carrier.kmdId !== home.config.kmdId) {
          throw new CliError(`carrier ${carrier.carrierId} belongs to KMD ${carrier.kmdId}, not ${home.config.kmdId}`, Exit.CARRIER);
        }
        return collectReceipts(home, carrier);
      }),
    );
  },
  render: (r) =>
    [
      ...r.collected.map((c) => `collected receipt of ${c.terminalId} batch ${c.batchId.slice(0, 8)} (seq ${c.seq}, ${formatBits(c.bits)})`),
      ...r.rejected.map((x) => `REJECTED ${printable(x.id)}: ${printable(x.reason)}${x.quarantined ? ' (receipt quarantined on the carrier; the batch is offered for inject again)' : ''}`),
      ...r.retired.map((x) => `retired station batch ${x.batchId.slice(0, 8)} of ${x.terminalId}: no longer held by the terminal (${formatBits(x.bits)} unused)`),
      `${r.collected.length} receipt(s) collected, ${formatBits(r.activatedBits)} of station keys activated`,
    ].join('\n'),
  // Receipts left unproven are the engineer's to look at: a script must not read this as success.
  outcome: (r) => (r.rejected.length > 0 ? { reason: `${r.rejected.length} receipt(s) rejected (see the list); the rest were collected`, exitCode: Exit.CARRIER } : undefined),
});

export const kmdStatusCommand = defineCommand<KmdStatus>({
  async run(v) {
    const home = openKmd(v);
    return kmdCli(() => kmdStatus(home));
  },
  render: (s) => renderStatus(s),
  // A damaged file is the operator's to repair: a script must not read a partial report as success.
  outcome: (s) => (s.damaged.length > 0 ? { exitCode: Exit.STATE, reason: `${s.damaged.length} file(s) of the home are damaged (listed); the rest was read` } : undefined),
});

/** formatBits, and for a large count it cannot write exactly, Mbit to two places with the exact count after. */
function roughBits(bits: number): string {
  const f = formatBits(bits);
  return f.endsWith(' bit') && bits >= 2 ** 20 ? `${(bits / 2 ** 20).toFixed(2)} Mbit (${bits} bit)` : f;
}

function renderStatus(s: KmdStatus): string {
  const pad = (cells: string[], widths: number[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const table = (head: string[], rows: string[][]): string[] => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    return [pad(head, widths), ...rows.map((r) => pad(r, widths))];
  };
  const lines = [
    `KMD ${s.kmdId} in ${s.home}`,
    `supply: ${roughBits(s.supply.availableBits)} available at ${s.supply.rateBitsPerSecond} bit/s${describeLink(s.supply)}; ${roughBits(s.supply.takenBits)} handed out so far`,
  ];
  if (!s.consistent) lines.push(`note: the home is in use${s.writer ? ` by pid ${s.writer.pid} (${s.writer.command}, since ${s.writer.since})` : ''}; read without its lock, a batch it is changing may show one step behind`);
  lines.push('');
  if (s.terminals.length === 0) lines.push('no terminals enrolled (qkt kmd enroll --home H --terminal ID --flash FILE)');
  else {
    lines.push(
      ...table(
        ['terminal', 'generation', 'next seq', 'station used', 'station free', 'enrolled'],
        s.terminals.map((t) => [t.terminalId, String(t.generation), String(t.nextSeq), formatBits(t.station.storedKeyBits), formatBits(t.station.freeKeyBits), t.enrolledAt]),
      ),
    );
  }
  for (const d of s.damaged) lines.push(`DAMAGED ${d.file}${d.terminalId ? ` (terminal ${d.terminalId}, left out below)` : ''}: ${d.reason}`);
  if (s.damaged.length > 0) lines.push('');
  const counts = BATCH_STATES.filter((st) => s.totals[st].batches > 0).map((st) => `${s.totals[st].batches} ${st} (${formatBits(s.totals[st].bits)})`);
  lines.push('', `batches: ${counts.length > 0 ? counts.join(', ') : 'none'}`);
  // Collected and void batches are history: counted above, listed by --json.
  const open = s.batches.filter((b) => b.state !== 'collected' && b.state !== 'void');
  if (open.length > 0) {
    lines.push(...table(['batch', 'terminal', 'seq', 'bits', 'state', 'carrier'], open.map((b) => [b.batchId.slice(0, 8), b.terminalId, String(b.seq), formatBits(b.bits), b.state, b.carrierId ?? '-'])));
    for (const id of new Set(open.filter((b) => b.state === 'stale' || b.state === 'burned').map((b) => b.terminalId))) {
      lines.push(`${id} has stale or burned batches, never to be used: qkt kmd void --home H --terminal ${id} retires them`);
    }
  }
  return lines.join('\n');
}

export const kmdVoid = defineCommand<VoidResult>({
  async run(v) {
    return changeKmd(v, (home) => {
      const batch = str(v, 'batch');
      const reason = str(v, 'reason');
      return kmdCli(() => voidBatches(home, str(v, 'terminal')!, { ...(batch !== undefined ? { batch: batch.toLowerCase() } : {}), ...(reason !== undefined ? { reason } : {}), inUse: v['in-use'] === true }));
    });
  },
  render: (r) =>
    [
      ...r.voided.map((b) => `voided ${r.terminalId} batch ${b.batchId.slice(0, 8)} (seq ${b.seq}, ${formatBits(b.bits)}, was ${b.was}): ${formatBits(b.stationBits)} of station keys wiped${b.outboxRemoved ? ', removed from the outbox' : ''}`),
      ...r.kept.map((b) => `kept ${r.terminalId} batch ${b.batchId.slice(0, 8)} (seq ${b.seq}, ${b.state}): the terminal uses it; add --in-use if it lost its keys`),
      r.voided.length === 0 ? `nothing to void for ${r.terminalId}` : `${r.voided.length} batch(es) of ${r.terminalId} void (${r.reason})`,
    ].join('\n'),
});
