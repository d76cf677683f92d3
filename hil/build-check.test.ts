// staleBuild: a source newer than its dist/ output, or a missing output, is named with the fix;
// tests, suites and test support (not built) are ignored; a fresh build passes.
import t from 'tap';
import type { Test } from 'tap';
import { utimesSync } from 'node:fs';
import { join } from 'node:path';
import { staleBuild } from './build-check.js';

function tree(t: Test): string {
  return t.testdir({
    firmware: { 'a.ts': '', 'a.test.ts': '', 'test-support': { 'rig.ts': '' } },
    'host-tools': { cli: { 'main.ts': '' }, 'x.suite.ts': '' },
    hil: { 'cli.ts': '' },
    fixtures: { 'frames.ts': '', 'check-frames.py': '' },
    dist: { firmware: { 'a.js': '' }, 'host-tools': { cli: { 'main.js': '' } }, hil: { 'cli.js': '' }, fixtures: { 'frames.js': '' } },
  });
}

function age(path: string, secondsAgo: number): void {
  const when = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(path, when, when);
}

t.test('fresh: every built source has a newer output; tests and test support need none', async (t) => {
  const root = tree(t);
  for (const src of ['firmware/a.ts', 'host-tools/cli/main.ts', 'hil/cli.ts', 'fixtures/frames.ts']) age(join(root, src), 60);
  t.equal(staleBuild(root), false);
});

t.test('a source edited after the build names the file and the build command', async (t) => {
  const root = tree(t);
  for (const src of ['firmware/a.ts', 'hil/cli.ts', 'fixtures/frames.ts']) age(join(root, src), 60);
  age(join(root, 'dist/host-tools/cli/main.js'), 60); // built before the edit
  t.equal(staleBuild(root), 'dist/ is stale: host-tools/cli/main.ts is newer than dist/host-tools/cli/main.js; run npx tsc -p tsconfig.build.json (npm test does)');
});

t.test('a source with no output (never built) names the missing file', async (t) => {
  const root = t.testdir({ firmware: { 'new.ts': '' }, 'host-tools': {}, hil: {}, fixtures: {}, dist: {} });
  t.match(staleBuild(root), /^dist\/ is not built: dist\/firmware\/new\.js is missing; run npx tsc -p tsconfig\.build\.json/);
});
