// docs/field.md against the code: every message in its table is one the CLI can print (its fixed
// words are in host-tools/ or firmware/ sources), with the exit code the code gives it (the
// nearest `Exit.X` after those words) and one docs/cli.md's exit code table defines; README links it.
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Exit } from '../host-tools/cli/command.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const field = readFileSync(join(ROOT, 'docs/field.md'), 'utf8');
const cli = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) out.push(readFileSync(p, 'utf8'));
  }
  return out;
}
const code = [...sources(join(ROOT, 'host-tools')), ...sources(join(ROOT, 'firmware'))];
const exitName = new Map(Object.entries(Exit).map(([k, v]) => [k, v]));

/** The fixed words of a message: split at "…" and at protocol rc names (the code prints rcName). */
function pieces(message: string): string[] {
  return message
    .split(/…|\b[A-Z][A-Z_]{4,}\b/)
    .map((p) => p.trim().replace(/^[\s,;:.()'"]+|[\s,;:.()'"]+$/g, ''))
    .filter((p) => p.length >= 6);
}

t.test('README links docs/field.md', async (t) => {
  t.match(readFileSync(join(ROOT, 'README.md'), 'utf8'), /\(docs\/field\.md\)/);
});

t.test('every message in docs/field.md is the code\'s, with the code\'s exit code', async (t) => {
  const rows = [...field.matchAll(/^\| `(.+?)` \| (\d+) \| (.+) \|$/gm)].map((m) => ({ message: m[1]!, exit: Number(m[2]), todo: m[3]! }));
  t.ok(rows.length >= 20, `${rows.length} messages`);
  const table = new Set([...cli.slice(cli.indexOf('## Exit codes')).matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1])));
  for (const row of rows) {
    t.ok(table.has(row.exit), `exit ${row.exit} is in docs/cli.md's table: ${row.message}`);
    t.ok(row.todo.length > 10, `says what to do: ${row.message}`);
    const words = pieces(row.message);
    t.ok(words.length > 0, `has fixed words: ${row.message}`);
    for (const w of words) t.ok(code.some((c) => c.includes(w)), `"${w}" is printed by the code`);
    // The exit code: the nearest Exit.X after the longest fixed words, in any file that has them.
    const longest = words.reduce((a, b) => (b.length > a.length ? b : a), '');
    const found: number[] = [];
    for (const c of code) {
      for (let i = c.indexOf(longest); i >= 0; i = c.indexOf(longest, i + 1)) {
        const line = c.slice(c.lastIndexOf('\n', i) + 1, i).trimStart();
        if (line.startsWith('//') || line.startsWith('*')) continue; // a comment quoting it
        const m = /Exit\.([A-Z_]+)/.exec(c.slice(i, i + 700));
        if (m && exitName.has(m[1]!)) found.push(exitName.get(m[1]!)!);
      }
    }
    if (found.length > 0) t.ok(found.includes(row.exit), `exit ${row.exit} for "${longest}" (the code: ${[...new Set(found)].join(', ')})`);
    else t.comment(`no Exit.X near "${longest}": mapped by its error class in cli/errors.ts`);
  }
});
