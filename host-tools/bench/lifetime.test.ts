// `qkt bench lifetime` on one simulated month: the wear figures are counted from the flash and
// add up (regions cover every sector, the projection follows from the worst sector).
import t from 'tap';
import { benchLifetime, formatLifetimeBench, ENDURANCE } from './lifetime.js';

t.test('one month of service: an 8 Mbit batch used up, 30 reboots; erase counts per region', async (t) => {
  const r = await benchLifetime({ months: 1 });
  t.match(r, { bench: 'lifetime', months: 1, batchBits: 8 * 2 ** 20, rebootsPerMonth: 30, endurance: ENDURANCE });
  t.ok(r.messagesPerMonth >= 250, `${r.messagesPerMonth} messages spent the batch`);
  t.equal(r.regions.secureArea.sectors + r.regions.journal.sectors + r.regions.data.sectors, 512, 'regions cover the 2 MiB flash');
  t.ok(r.regions.data.worst >= 1, 'every used key sector is erased once it is used up');
  const worst = Math.max(r.regions.secureArea.worst, r.regions.journal.worst, r.regions.data.worst);
  t.equal(r.worstSectorPerYear, worst * 12);
  t.equal(r.yearsToEndurance, Math.round(ENDURANCE / (worst * 12)));
  t.match(formatLifetimeBench(r), /\| secure area \| 4 \|/);
});
