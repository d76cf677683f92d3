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
import { formatBits } from '../../units.js';
import { printable } from '../../peer-text.js';

export const kmdInit = defineCommand({
  async run(v) {
    const rate = rateOption(v, 'rate') ?? 11_000;
    const stock = bitsOption(v, 'stock') ?? 0;
    const home = kmdCli(() => KmdHome.init(homeDir(v), { rateBitsPerSecond: rate, stockBits: stock }));
    return { kmdId: home.config.kmdId, home: home.dir, rateBitsPerSecond: rate, stockBits: stock };
  },
  render: (r) => `KMD ${r.kmdId} created in ${r.home}, key supply ${r.rateBitsPerSecond} bit/s${r.stockBits ? `, ${formatBits(r.stockBits)} in stock` : ''}`,
});

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
    `supply: ${roughBits(s.supply.availableBits)} available at ${s.supply.rateBitsPerSecond} bit/s; ${roughBits(s.supply.takenBits)} handed out so far`,
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
