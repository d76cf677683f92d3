// Imports only go down (STYLE.md rule 16): firmware <- host-tools <- hil. Every .ts file's imports
// (static `from '...'` and dynamic `import('...')`) are read and resolved to a part of the tree:
// firmware/ imports nothing of host-tools/ or hil/; host-tools/ nothing of hil/; and outside
// host-tools/cli/ nothing of host-tools/cli/ (only the CLI maps errors to exit codes).
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Host-tools tests that spawn the built CLI through hil's helpers (hil/cli.ts, build-check.ts,
 * e2e-rig.ts). Known and not to grow: a new test that spawns the CLI belongs in hil/. Each entry
 * is "file -> imported file"; an entry that no longer occurs fails too, so the list only shrinks.
 */
const KNOWN_UPWARD = new Set([
  'host-tools/kmd/collect.test.ts -> hil/cli.ts',
  'host-tools/station/store.test.ts -> hil/build-check.ts',
  'host-tools/cli/key-hygiene.test.ts -> hil/cli.ts',
  'host-tools/cli/key-hygiene.test.ts -> hil/e2e-rig.ts',
  'host-tools/cli/usage.test.ts -> hil/cli.ts',
  'host-tools/cli/cli.test.ts -> hil/cli.ts',
  'host-tools/lock.test.ts -> hil/build-check.ts',
]);

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative specifiers a file imports (static, re-exports, dynamic), as repo paths of .ts files. */
export function importsOf(file: string, text: string): string[] {
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?\bfrom\s*'([^']+)'|\bimport\s*\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s*'([^']+)'/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
  return specs.filter((s) => s.startsWith('.')).map((s) => relative(ROOT, resolve(dirname(file), s)).replace(/\.js$/, '.ts'));
}

/** Why `from` may not import `to`, or undefined when it may. */
export function upward(from: string, to: string): string | undefined {
  const part = (p: string) => p.split('/')[0];
  if (part(from) === 'firmware' && (part(to) === 'host-tools' || part(to) === 'hil')) return 'firmware imports nothing above it';
  if (part(from) === 'host-tools' && part(to) === 'hil') return 'host-tools imports nothing of hil';
  if (part(from) === 'host-tools' && !from.startsWith('host-tools/cli/') && to.startsWith('host-tools/cli/')) return 'only host-tools/cli/ imports host-tools/cli/';
  return undefined;
}

t.test('the rule itself: each kind of upward import is caught, a downward one is not', async (t) => {
  t.ok(upward('firmware/link/codec.ts', 'host-tools/link/client.ts'));
  t.ok(upward('firmware/x.test.ts', 'hil/cli.ts'));
  t.ok(upward('host-tools/bench/link-rig.ts', 'hil/pty.ts'));
  t.ok(upward('host-tools/link/open.ts', 'host-tools/cli/command.ts'));
  t.notOk(upward('host-tools/cli/errors.ts', 'host-tools/cli/command.ts'));
  t.notOk(upward('host-tools/link/client.ts', 'firmware/link/codec.ts'));
  t.notOk(upward('hil/pty.ts', 'host-tools/transports/pty-pair.ts'));
  t.same(importsOf(join(ROOT, 'host-tools/a/b.ts'), "import { x } from '../cli/c.js';\nexport * from './d.js';\nconst m = await import('../../hil/e.js');\nimport type { Y } from 'node:fs';"), [
    'host-tools/cli/c.ts',
    'host-tools/a/d.ts',
    'hil/e.ts',
  ]);
});

t.test('no file imports upward (firmware <- host-tools <- hil; only cli/ imports cli/)', async (t) => {
  const files = ['firmware', 'host-tools', 'hil', 'fixtures'].flatMap((d) => tsFiles(join(ROOT, d)));
  t.ok(files.length > 100, `${files.length} files read`);
  const bad: string[] = [];
  const seen = new Set<string>();
  for (const f of files) {
    const from = relative(ROOT, f);
    for (const to of importsOf(f, readFileSync(f, 'utf8'))) {
      const why = upward(from, to);
      if (!why) continue;
      const pair = `${from} -> ${to}`;
      seen.add(pair);
      if (!KNOWN_UPWARD.has(pair)) bad.push(`${pair}: ${why}`);
    }
  }
  t.same(bad, [], 'no upward import');
  t.same([...KNOWN_UPWARD].filter((p) => !seen.has(p)), [], 'every known exception still occurs (remove the ones fixed)');
});
