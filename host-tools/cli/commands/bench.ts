// `qkt bench [NAME]`: benchmarks, printed as a markdown table or one JSON document, and with
// --out DIR written as DIR/NAME.json and DIR/NAME.md (the committed tables live in docs/bench/).
import { checkDbUrl } from '../../station/open-store.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { benchmarks } from '../../bench/registry.js';
import { parseNoise } from './link.js';

export interface BenchResult {
  results: Array<{ name: string; result: unknown }>;
  markdown: string;
}

export default defineCommand<BenchResult>({
  async run(v, positionals, io) {
    const names = positionals.length ? positionals : Object.keys(benchmarks).filter((n) => !benchmarks[n]!.onlyWhenNamed);
    for (const n of names) {
      if (!benchmarks[n]) throw new CliError(`no benchmark "${n}"; there are: ${Object.keys(benchmarks).join(', ')}`, Exit.USAGE);
    }
    // At most 1 GiB a case (a buffer that size is already half this machine's memory); crypto
    // needs at least a whole 4 KiB message per case to measure anything.
    const bytes = int(v, 'bytes', names.includes('crypto') ? 4096 : 1, 2 ** 30);
    const out = str(v, 'out');
    const ratesText = str(v, 'rates');
    const rates = ratesText === undefined ? undefined : ratesText.split(',').map((r) => parseNoise(r, '--rates'));
    const seed = int(v, 'seed', 0, 0xffffffff);
    const timeoutSeconds = int(v, 'timeout', 1);
    const zmodemTimeoutSeconds = int(v, 'zmodem-timeout', 1);
    const db = str(v, 'db');
    if (db !== undefined) {
      if (!names.includes('fleet')) throw new CliError('--db is the PostgreSQL database of the fleet bench: name fleet', Exit.USAGE);
      try {
        checkDbUrl(db);
      } catch (e) {
        throw new CliError((e as Error).message, Exit.USAGE);
      }
    }
    const results: BenchResult['results'] = [];
    const tables: string[] = [];
    for (const n of names) {
      const b = benchmarks[n]!;
      const result = await b.run({ quick: v['quick'] === true, ...(bytes ? { bytes } : {}), ...(rates ? { rates } : {}), ...(seed !== undefined ? { seed } : {}), ...(timeoutSeconds ? { timeoutSeconds } : {}), ...(zmodemTimeoutSeconds ? { zmodemTimeoutSeconds } : {}), ...(db !== undefined ? { db } : {}), log: io.note });
      const md = b.format(result);
      results.push({ name: n, result });
      tables.push(md);
      if (out) {
        mkdirSync(out, { recursive: true });
        writeFileSync(join(out, `${n}.json`), JSON.stringify(result, null, 2) + '\n');
        writeFileSync(join(out, `${n}.md`), md + '\n');
        io.note(`wrote ${join(out, `${n}.json`)} and ${n}.md`);
      }
    }
    return { results, markdown: tables.join('\n\n') };
  },
  render: (r) => r.markdown,
});
