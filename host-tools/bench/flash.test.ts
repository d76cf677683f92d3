// Shape check of the flash benchmark in quick mode (numbers are measured, not asserted, except
// the power-cut sample, which must be clean).

import t from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchFlash, formatFlashBenchMarkdown } from './flash.js';

t.setTimeout(120_000);

t.test('benchFlash quick returns a JSON-able result and a markdown table', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-flash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await benchFlash({ quick: true, dir });
  t.same(JSON.parse(JSON.stringify(r)), r, 'plain JSON');
  t.equal(r.bench, 'flash');
  t.equal(r.poolKeyBits, 8_388_608);
  t.ok(r.mount.medianMs > 0);
  t.ok(r.consume.medianMs > 0 && r.consume.fsyncMedianMs > 0 && r.consume.ratioToFsync > 0);
  t.ok(r.append.bitsPerSecond > 0);
  t.ok(r.writeAmplification.programRatio >= 1, 'key bytes are programmed at least once');
  t.ok(r.wear.dataSectors.max >= 1);
  t.ok(r.powerCut.cutPoints >= 30);
  t.same(r.powerCut.failures, []);
  const md = formatFlashBenchMarkdown(r);
  t.match(md, /\| consume \/ fsync \| [\d.]+x \|/);
  t.same(readdirSync(dir), [], 'bench removed its image files');
  t.comment(md);
});
