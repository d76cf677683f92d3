// docs/cli.md has the one exit code table; command.ts `Exit` is the code's. They must agree: every
// code in the table is an `Exit` value under the same name, every `Exit` value has its row, and
// every row says what it means. Generic over the codes: adding one (130, 143 for signals) needs a
// row and a constant, nothing here.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Exit } from './command.js';

const doc = readFileSync(fileURLToPath(new URL('../../docs/cli.md', import.meta.url)), 'utf8');

/** The rows of the table under "## Exit codes": `| code | `NAME` | meaning |`. */
export function exitTable(markdown: string): Array<{ code: number; name: string; meaning: string }> {
  const at = markdown.indexOf('\n## Exit codes');
  if (at < 0) return [];
  const section = markdown.slice(at + 1).split(/\n## /)[0]!;
  const rows: Array<{ code: number; name: string; meaning: string }> = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('|') || /^\|\s*(code|-)/.test(line)) continue;
    const cells = line.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());
    rows.push({ code: Number(cells[0]), name: (cells[1] ?? '').replace(/`/g, ''), meaning: cells.slice(2).join('|') });
  }
  return rows;
}

t.test('the table parser reads what it should, and sees a missing or extra row', async (t) => {
  const md = '# x\n\n## Exit codes\n\n| code | name | meaning |\n|---:|---|---|\n| 0 | `OK` | done |\n| 9 | `NINE` | a \\| pipe |\n\n## Next\n| 5 | `NO` | not this table |\n';
  t.same(exitTable(md), [
    { code: 0, name: 'OK', meaning: 'done' },
    { code: 9, name: 'NINE', meaning: 'a \\| pipe' },
  ]);
  t.same(exitTable('no table'), []);
});

t.test('docs/cli.md "Exit codes" and command.ts Exit agree: codes, names, meanings', async (t) => {
  const rows = exitTable(doc);
  t.ok(rows.length >= 8, `${rows.length} rows`);
  const exits = Object.entries(Exit) as Array<[string, number]>;
  for (const r of rows) {
    t.ok(Number.isInteger(r.code) && r.code >= 0 && r.code <= 255, `row code ${r.code} is an exit code`);
    t.equal(Exit[r.name as keyof typeof Exit], r.code, `row ${r.code} \`${r.name}\` is Exit.${r.name} = ${r.code} in command.ts`);
    t.ok(r.meaning.length >= 4, `row ${r.code} says what it means`);
  }
  for (const [name, code] of exits) {
    t.ok(rows.some((r) => r.code === code && r.name === name), `Exit.${name} = ${code} has its row in docs/cli.md`);
  }
  t.equal(new Set(rows.map((r) => r.code)).size, rows.length, 'each code once');
  t.equal(new Set(exits.map(([, c]) => c)).size, exits.length, 'each Exit value once');
});
