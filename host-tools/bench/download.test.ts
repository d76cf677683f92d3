// `qkt bench download` on a small batch: both cases run, every byte arrives in ceil(bytes /
// maxChunk) sealed READs, and the table names them. Times are reported, never asserted.
import t from 'tap';
import { benchDownload, formatDownloadBench } from './download.js';

t.test('bench download: a 64 Kibit batch, unpaced and at 921600 baud', async (t) => {
  const r = await benchDownload({ bits: 2 ** 16, log: () => undefined });
  t.equal(r.bench, 'download');
  t.same(r.cases.map((c) => [c.name, c.baud]), [['in-process unpaced', null], ['in-process @921600', 921_600]]);
  for (const c of r.cases) {
    t.ok(c.sealedBytes > 2 ** 13, `${c.name}: the sealed batch is larger than its key bytes`);
    t.equal(c.reads, Math.ceil(c.sealedBytes / 8142), `${c.name}: one sealed READ per maxChunk (8142) bytes`);
    t.ok(c.macSeconds >= 0 && c.seconds > 0);
  }
  t.equal(r.cases[0]!.lineRateFraction, null);
  t.type(r.cases[1]!.lineRateFraction, 'number');
  t.match(formatDownloadBench(r), /\| in-process @921600 \| \d+ \| \d+ \|/);
});
