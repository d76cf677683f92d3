// The fuzzer itself: inputs are a pure function of (seed, index), every layer is drawn, and the
// driver sees what it is there to see: an INTERNAL reply, a hang and a flash write, planted in a
// group of the module's that only these tests register (group 7), each reported with its seed and
// window and reproduced by rerunning that window alone.
import t from 'tap';
import { FuzzGenerator, LAYERS, toHex } from './generator.js';
import { fuzzTarget } from './driver.js';
import { inProcessTarget } from './targets.js';
import type { CommandGroup, Handler } from '../../firmware/link/dispatch.js';
import type { NorFlash } from '../../firmware/flash/nor-flash.js';

const gen = (seed: number) => new FuzzGenerator(seed, { terminalId: 'FUZZ-1', maxBody: 8256 });
const bytesOf = (g: FuzzGenerator, i: number) => g.input(i).writes.map(toHex).join(' ');

t.test('an input is a function of the seed and its index', async (t) => {
  const a = gen(42);
  const b = gen(42);
  const c = gen(43);
  // Out of order and alone, the same bytes as in order.
  const inOrder = Array.from({ length: 300 }, (_, i) => bytesOf(a, i));
  t.equal(bytesOf(b, 299), inOrder[299]);
  t.equal(bytesOf(b, 17), inOrder[17]);
  t.ok(inOrder.filter((x, i) => x !== bytesOf(c, i)).length > 250, 'another seed, other inputs');
});

t.test('every layer is drawn, with sizes from nothing to oversize', async (t) => {
  const g = gen(7);
  const seen = new Set<string>();
  let oversize = 0;
  let empty = 0;
  let deep = 0;
  for (let i = 0; i < 5000; i++) {
    const x = g.input(i);
    seen.add(x.layer);
    const n = x.writes.reduce((s, w) => s + w.length, 0);
    if (n > 8256 * 1.01) oversize++;
    if (n < 4) empty++;
    if (x.writes.some((w) => toHex(w).includes('81'.repeat(250)))) deep++;
  }
  t.same([...seen].sort(), [...LAYERS].sort());
  t.ok(oversize > 10 && empty > 10 && deep > 0, `oversize ${oversize}, tiny ${empty}, deep ${deep}`);
});

t.test('ADMIN requests with a well-formed token are left out unless asked for', async (t) => {
  const g = gen(9);
  const withAdmin = new FuzzGenerator(9, { terminalId: 'FUZZ-1', maxBody: 8256, admin: true });
  let plain = 0;
  let admin = 0;
  for (let i = 0; i < 3000; i++) {
    if (g.reachesAdminToken(g.input(i).writes)) plain++;
    if (g.reachesAdminToken(withAdmin.input(i).writes)) admin++;
  }
  t.equal(plain, 0);
  t.ok(admin > 20, `${admin} with admin: true`);
});

/** Group 7, every command id: `h`. */
const planted = (h: (flash: NorFlash) => Handler) => (flash: NorFlash): CommandGroup => ({
  id: 7,
  name: 'planted',
  commands: Object.fromEntries(Array.from({ length: 256 }, (_, i) => [i, h(flash)])),
});

t.test('a handler that throws is reported as INTERNAL, with seed, window and bytes; the window alone reproduces it', async (t) => {
  const run = async (first: number, count: number) => {
    const target = inProcessTarget({
      extraGroup: planted(() => () => {
        throw new TypeError('planted');
      }),
    });
    try {
      return await fuzzTarget(target, { seed: 11, first, count, maxFailures: 1 });
    } finally {
      await target.close();
    }
  };
  const r = await run(0, 5000);
  const f = r.failures[0]!;
  t.equal(f.kind, 'internal');
  t.match(f.message, /INTERNAL: .*group 7 .*TypeError: planted/);
  t.ok(f.inputs.length >= 1 && f.inputs.length <= 4 && f.inputs.every((x) => x.hex.length > 0), 'at most the 4 inputs since the last answer');
  t.equal(f.seed, 11);
  const again = await run(f.from, f.to - f.from + 1);
  t.equal(again.failures[0]?.kind, 'internal', 'rerun of the window alone');
  t.same(again.failures[0]?.inputs, f.inputs, 'the same bytes');
});

t.test('a handler that never answers is a hang', async (t) => {
  const target = inProcessTarget({ watchdogMs: 0, extraGroup: planted(() => () => new Promise(() => undefined)) });
  try {
    const r = await fuzzTarget(target, { seed: 12, count: 5000, timeoutMs: 300 });
    t.equal(r.failures[0]?.kind, 'hang');
    t.match(r.failures[0]?.message, /no answer/);
    t.ok(r.inputs < 5000, 'the run stops at the hang');
  } finally {
    await target.close();
  }
});

t.test('a handler that writes flash is a state change', async (t) => {
  let wrote = false;
  const target = inProcessTarget({
    extraGroup: planted((flash) => () => {
      if (!wrote) flash.program(flash.geometry.size - flash.geometry.pageSize, new Uint8Array(4)); // an erased page at the end
      wrote = true;
      return {};
    }),
  });
  try {
    const r = await fuzzTarget(target, { seed: 13, count: 3000 });
    t.ok(wrote, 'the planted group was reached');
    t.same(r.failures.map((f) => f.kind), ['state']);
    t.match(r.failures[0]?.message, /flash changed: sha256 [0-9a-f]{64} -> [0-9a-f]{64}/);
  } finally {
    await target.close();
  }
});
