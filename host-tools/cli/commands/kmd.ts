// `qkt kmd ...`: the access-layer key management device: init, enroll, export, collect.
import { defineCommand, strs, str, CliError, Exit } from '../command.js';
import { changeKmd, homeDir, kmdCli } from '../home.js';
import { KmdHome } from '../../kmd/home.js';
import { enrollTerminal } from '../../kmd/enroll.js';
import { exportBatches, outbox } from '../../kmd/export.js';
import { collectReceipts } from '../../kmd/collect.js';
import type { CollectResult } from '../../kmd/collect.js';
import { openCarrier } from '../carrier-open.js';
import { formatBits, parseBits, parseRate } from '../../units.js';

export const kmdInit = defineCommand({
  path: ['kmd', 'init'],
  summary: 'create a new KMD in a home folder',
  usage: 'qkt kmd init --home H [--rate 11kbit/s] [--stock 9Mbit]',
  examples: ['qkt kmd init --home ./kmd', 'qkt kmd init --home ./kmd --rate 11kbit/s --stock 9Mbit', 'qkt kmd init --home ./kmd --rate 1Mbit/s'],
  options: { home: { type: 'string' }, rate: { type: 'string' }, stock: { type: 'string' } },
  async run(v) {
    const rate = parseRate(str(v, 'rate') ?? '11kbit/s');
    const stock = str(v, 'stock') ? parseBits(str(v, 'stock')!) : 0;
    const home = kmdCli(() => KmdHome.init(homeDir(v), { rateBitsPerSecond: rate, stockBits: stock }));
    return { kmdId: home.config.kmdId, home: home.dir, rateBitsPerSecond: rate, stockBits: stock };
  },
  render: (r) => `KMD ${r.kmdId} created in ${r.home}, key supply ${r.rateBitsPerSecond} bit/s${r.stockBits ? `, ${formatBits(r.stockBits)} in stock` : ''}`,
});

export const kmdEnroll = defineCommand({
  path: ['kmd', 'enroll'],
  summary: 'factory step: new flash image for a terminal, registered in the KMD',
  usage: 'qkt kmd enroll --home H --terminal ID --flash FILE',
  examples: ['qkt kmd enroll --home ./kmd --terminal T1 --flash t1.img'],
  options: { home: { type: 'string' }, terminal: { type: 'string' }, flash: { type: 'string' } },
  required: ['terminal', 'flash'],
  async run(v) {
    return changeKmd(v, (home) => {
      const t = kmdCli(() => enrollTerminal(home, str(v, 'terminal')!, str(v, 'flash')!));
      return { terminalId: t.terminalId, flash: t.flash!, enrolledAt: t.enrolledAt };
    });
  },
  render: (r) => `terminal ${r.terminalId} enrolled; its module flash image is ${r.flash}`,
});

export const kmdExport = defineCommand({
  path: ['kmd', 'export'],
  summary: 'queue sealed batches for the next carrier that connects',
  usage: 'qkt kmd export --home H --terminal ID... --bits N',
  examples: ['qkt kmd export --home ./kmd --terminal T1 --terminal T2 --bits 3Mbit'],
  options: { home: { type: 'string' }, terminal: { type: 'string', multiple: true }, bits: { type: 'string' }, purpose: { type: 'string' } },
  required: ['terminal', 'bits'],
  async run(v) {
    const bits = parseBits(str(v, 'bits')!);
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
  path: ['kmd', 'collect'],
  summary: "take the receipts back from a carrier; activate the station's keys",
  usage: 'qkt kmd collect --home H --carrier DIR',
  examples: ['qkt kmd collect --home ./kmd --carrier /media/usb0'],
  options: { home: { type: 'string' }, carrier: { type: 'string' } },
  required: ['carrier'],
  async run(v): Promise<CollectResult> {
    return changeKmd(v, (home) => {
      const carrier = openCarrier(str(v, 'carrier')!);
      if (carrier.kmdId !== home.config.kmdId) {
        throw new CliError(`carrier ${carrier.carrierId} belongs to KMD ${carrier.kmdId}, not ${home.config.kmdId}`, Exit.CARRIER);
      }
      return collectReceipts(home, carrier);
    });
  },
  render: (r) =>
    [
      ...r.collected.map((c) => `collected receipt of ${c.terminalId} batch ${c.batchId.slice(0, 8)} (seq ${c.seq}, ${formatBits(c.bits)})`),
      ...r.rejected.map((x) => `REJECTED ${x.id}: ${x.reason}${x.quarantined ? ' (receipt quarantined on the carrier; the batch is offered for inject again)' : ''}`),
      ...r.retired.map((x) => `retired station batch ${x.batchId.slice(0, 8)} of ${x.terminalId}: no longer held by the terminal (${formatBits(x.bits)} unused)`),
      `${r.collected.length} receipt(s) collected, ${formatBits(r.activatedBits)} of station keys activated`,
    ].join('\n'),
});
