// `qkt bench lifetime`: the flash wear of a terminal's service life. A module on the default 2 MiB
// NOR receives an 8 Mbit batch every month (one field visit), spends all of it through the KEYS
// group, and reboots every day; the bench counts erase cycles per sector region and projects the
// years until the worst sector reaches the NOR endurance (100,000 cycles). Erases do not depend on
// the message size (a consumption programs marks, it never erases), so the keys are spent in
// 4 KiB messages to keep the run short.
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { SECURE_SECTORS } from '../../firmware/secure/secure-area.js';
import { createTerminal } from '../../firmware/terminal.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import { Group, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import { injectBatch } from '../link/inject.js';

/** NOR endurance of common SPI parts (erase cycles per sector). */
export const ENDURANCE = 100_000;

interface Region {
  sectors: number;
  /** Erases per sector over the run: worst and mean. */
  worst: number;
  mean: number;
}

export interface LifetimeBenchResult {
  bench: 'lifetime';
  date: string;
  node: string;
  months: number;
  batchBits: number;
  rebootsPerMonth: number;
  messagesPerMonth: number;
  /** Every erase of the run, per field visit (a month) and per year. */
  erasesPerVisit: number;
  erasesPerYear: number;
  regions: { secureArea: Region; journal: Region; data: Region };
  /** The worst sector's erases per year, and the years until it reaches ENDURANCE. */
  worstSectorPerYear: number;
  yearsToEndurance: number;
  endurance: number;
}

const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

export async function benchLifetime(o: { months: number; log?: (s: string) => void }): Promise<LifetimeBenchResult> {
  const bits = 8 * 2 ** 20;
  const rebootsPerMonth = 30;
  const flash = NorFlash.memory();
  const deviceKey = new Uint8Array(randomBytes(32));
  enrollFlash(flash, { terminalId: 'L1', deviceKey });
  const base = flash.eraseCounts().slice();
  let now = Date.parse('2027-01-01T00:00:00Z');
  const boot = async () => {
    const [host, device] = createInProcessPair({ names: ['host', 'module'] });
    createTerminal({ flash, clock: () => now, watchdogMs: 0 }).attach(device);
    const client = new LinkClient(host, { baseTimeoutMs: 5000 });
    return { client, params: await client.negotiate() };
  };
  let messages = 0;
  let m = await boot();
  for (let month = 1; month <= o.months; month++) {
    const sealed = sealBatch({
      deviceKey,
      header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'L1', seq: month, purpose: 'any', bits, chunkSize: 4096, createdAt: now },
      keys: new Uint8Array(randomBytes(bits / 8)),
    });
    await injectBatch(m.client, m.params, sealed);
    const perDay = Math.ceil(bits / 8 / (4096 + 32) / rebootsPerMonth);
    for (;;) {
      const s = await session(m.client); // sessions live in RAM: one per boot
      let left = ((await m.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { storedKeyBits: number }).storedKeyBits / 8;
      if (left < 32) break;
      for (let k = 0; k < perDay && left >= 32; k++) {
        const d = new Uint8Array(Math.min(4096, left - 32));
        await m.client.request(Group.KEYS, KeysCmd.SEAL, { s, d });
        left -= d.length + 32;
        messages++;
      }
      // A day passes: the terminal reboots (power dips, maintenance), which is logged.
      now += 86_400_000;
      await m.client.close();
      m = await boot();
    }
    o.log?.(`lifetime: month ${month} of ${o.months} done`);
  }
  await m.client.close();

  const counts = flash.eraseCounts();
  const sectors = counts.length;
  const journalSectors = 8; // the KeyPool default, right after the secure area
  const region = (from: number, to: number): Region => {
    const xs = Array.from({ length: to - from }, (_, i) => counts[from + i]! - base[from + i]!);
    return { sectors: to - from, worst: Math.max(...xs), mean: round(xs.reduce((a, b) => a + b, 0) / xs.length) };
  };
  const total = Array.from({ length: sectors }, (_, i) => counts[i]! - base[i]!).reduce((a, b) => a + b, 0);
  const regions = {
    secureArea: region(0, SECURE_SECTORS),
    journal: region(SECURE_SECTORS, SECURE_SECTORS + journalSectors),
    data: region(SECURE_SECTORS + journalSectors, sectors),
  };
  const worst = Math.max(regions.secureArea.worst, regions.journal.worst, regions.data.worst);
  const worstPerYear = (worst / o.months) * 12;
  return {
    bench: 'lifetime',
    date: new Date().toISOString(),
    node: process.version,
    months: o.months,
    batchBits: bits,
    rebootsPerMonth,
    messagesPerMonth: round(messages / o.months, 1),
    erasesPerVisit: round(total / o.months, 1),
    erasesPerYear: round((total / o.months) * 12, 1),
    regions,
    worstSectorPerYear: round(worstPerYear, 1),
    yearsToEndurance: worstPerYear > 0 ? Math.round(ENDURANCE / worstPerYear) : Infinity,
    endurance: ENDURANCE,
  };
}

async function session(client: LinkClient): Promise<unknown> {
  return (await client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
}

export function formatLifetimeBench(r: LifetimeBenchResult): string {
  const row = (name: string, x: Region) => `| ${name} | ${x.sectors} | ${x.worst} | ${x.mean} | ${round((x.worst / r.months) * 12, 1)} |`;
  return [
    `### Lifetime: an ${r.batchBits / 2 ** 20} Mbit batch a month, used up, ${r.rebootsPerMonth} reboots a month (${r.months} months simulated)`,
    '',
    '| region | sectors | worst sector, erases | mean | worst per year |',
    '|---|---:|---:|---:|---:|',
    row('secure area', r.regions.secureArea),
    row('pool journal', r.regions.journal),
    row('key data', r.regions.data),
    '',
    `Erase cycles per field visit: ${r.erasesPerVisit}; per year: ${r.erasesPerYear}. ` +
      `Worst sector: ${r.worstSectorPerYear} erases a year, so ${r.yearsToEndurance} years to its ${r.endurance.toLocaleString('en')}-cycle endurance. ` +
      `${r.messagesPerMonth} messages a month (4 KiB OTP uplinks).`,
  ].join('\n');
}
