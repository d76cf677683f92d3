// Exhaustive power-loss test of the key pool, littlefs style: a scenario is cut at every flash
// operation (clean, after, torn twice), also during the recovery that follows, then checked against a model.

import t from 'tap';
import { NorFlash } from '../flash/nor-flash.js';
import { PowerCutError } from '../flash/errors.js';
import { prng, type CutMode } from '../flash/faults.js';
import { KeyPool, type KeyPoolOptions, type Purpose } from './key-pool.js';
import { PoolError } from './errors.js';

t.setTimeout(180_000);

interface Plan {
  batchId: number;
  seq: number;
  purpose: Purpose;
  data: Uint8Array;
  chunk: number;
}
type Step =
  | { op: 'format' }
  | { op: 'stage'; plan: Plan }
  | { op: 'write'; plan: Plan }
  | { op: 'commit'; plan: Plan }
  | { op: 'abort'; plan: Plan }
  | { op: 'consume'; purpose: Purpose; n: number }
  | { op: 'byId'; batchId: number; skip: number; n: number }
  | { op: 'maintain' }
  | { op: 'discard'; batchId: number }
  | { op: 'zeroize' };

interface MBatch {
  batchId: number;
  seq: number;
  purpose: Purpose;
  data: Uint8Array;
  committed: boolean;
  durable: number;
  frontier: number;
}
interface Model {
  formatted: boolean;
  lastSeq: number;
  batches: MBatch[];
  /** per batch id: bytes ever handed out (never twice) */
  served: Map<number, Uint8Array>;
}

const clone = (m: Model): Model => ({
  formatted: m.formatted,
  lastSeq: m.lastSeq,
  batches: m.batches.map((b) => ({ ...b })),
  served: new Map([...m.served].map(([k, v]) => [k, Uint8Array.from(v)])),
});

function bytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

/** The scenario: format, inject, consume across sectors, recycle, partial and full zeroize, inject again, reformat. */
function scenario(chunkScale: number, keyScale: number): Step[] {
  const steps: Step[] = [{ op: 'format' }];
  const inject = (plan: Plan, commit = true) => {
    steps.push({ op: 'stage', plan });
    const writes = Math.ceil(plan.data.length / plan.chunk);
    for (let i = 0; i < writes - 1; i++) steps.push({ op: 'write', plan });
    steps.push(commit ? { op: 'commit', plan } : { op: 'write', plan });
  };
  const A: Plan = { batchId: 0xa, seq: 1, purpose: 'any', data: bytes(2400, 1), chunk: 170 * chunkScale };
  const B: Plan = { batchId: 0xb, seq: 2, purpose: 'enc', data: bytes(1000, 2), chunk: 250 * chunkScale };
  const C: Plan = { batchId: 0xc, seq: 3, purpose: 'auth', data: bytes(800, 3), chunk: 300 * chunkScale };
  const F: Plan = { batchId: 0xf, seq: 4, purpose: 'auth', data: bytes(448, 7), chunk: 224 * chunkScale };
  const D: Plan = { batchId: 0xd, seq: 5, purpose: 'any', data: bytes(600, 4), chunk: 200 * chunkScale };
  const E: Plan = { batchId: 0xe, seq: 6, purpose: 'enc', data: bytes(2000, 5), chunk: 300 * chunkScale };
  const G: Plan = { batchId: 0x9, seq: 1, purpose: 'any', data: bytes(700, 6), chunk: 350 * chunkScale };
  inject(A);
  for (let i = 0; i < 20; i++) steps.push({ op: 'consume', purpose: 'enc', n: 24 * keyScale });
  steps.push({ op: 'byId', batchId: 0xa, skip: 10, n: 16 });
  for (let i = 0; i < 5; i++) steps.push({ op: 'consume', purpose: 'auth', n: 40 * keyScale });
  steps.push({ op: 'maintain' });
  inject(B);
  for (let i = 0; i < 10; i++) steps.push({ op: 'consume', purpose: 'enc', n: 32 });
  steps.push({ op: 'discard', batchId: 0xb });
  inject(C);
  for (let i = 0; i < 6; i++) steps.push({ op: 'consume', purpose: 'auth', n: 50 * keyScale });
  // a batch consumed to the end by id, then recycled: the retire path
  inject(F);
  for (let i = 0; i < 7; i++) steps.push({ op: 'byId', batchId: 0xf, skip: 0, n: 64 });
  steps.push({ op: 'maintain' });
  inject(D, false);
  steps.push({ op: 'abort', plan: D });
  steps.push({ op: 'zeroize' });
  inject(E);
  for (let i = 0; i < 25; i++) steps.push({ op: 'consume', purpose: 'enc', n: 20 * keyScale + (i % 3) });
  steps.push({ op: 'maintain' });
  for (let i = 0; i < 10; i++) steps.push({ op: 'consume', purpose: 'any', n: 48 });
  steps.push({ op: 'format' });
  inject(G);
  for (let i = 0; i < 4; i++) steps.push({ op: 'consume', purpose: 'auth', n: 64 });
  return steps;
}

/** The pool retires a batch when its last key is taken: the model drops it at once too. */
function retireUsedUp(m: Model): void {
  m.batches = m.batches.filter((b) => !(b.committed && b.frontier === b.data.length));
}

class Failure extends Error {}
const check = (cond: boolean, msg: () => string) => {
  if (!cond) throw new Failure(msg());
};

interface Ctx {
  flash: NorFlash;
  pool: KeyPool | null;
  model: Model;
}

function pick(m: Model, purpose: Purpose, n: number): MBatch | undefined {
  return m.batches
    .filter((b) => b.committed)
    .sort((a, b) => a.seq - b.seq)
    .find((b) => (purpose === 'any' || b.purpose === purpose || b.purpose === 'any') && b.data.length - b.frontier >= n);
}

function serve(m: Model, b: MBatch, off: number, key: Uint8Array): void {
  let mask = m.served.get(b.batchId);
  if (!mask) m.served.set(b.batchId, (mask = new Uint8Array(b.data.length)));
  for (let i = 0; i < key.length; i++) {
    check(mask[off + i] === 0, () => `key byte ${off + i} of batch ${b.batchId} served twice`);
    mask[off + i] = 1;
    check(key[i] === b.data[off + i], () => `served key byte ${off + i} of batch ${b.batchId} differs from injected`);
  }
}

/** Run one step on a healthy pool, checking results against the model and updating it. */
function exec(ctx: Ctx, step: Step, opts: KeyPoolOptions): void {
  const m = ctx.model;
  if (step.op === 'format') {
    ctx.pool = KeyPool.format(ctx.flash, opts);
    Object.assign(m, { formatted: true, lastSeq: -1, batches: [] });
    return;
  }
  if (!m.formatted) {
    // an earlier cut interrupted a format: the operator formats again
    ctx.pool = KeyPool.format(ctx.flash, opts);
    Object.assign(m, { formatted: true, lastSeq: -1, batches: [] });
  }
  const pool = ctx.pool!;
  const ensureStaged = (plan: Plan): MBatch | undefined => {
    const have = m.batches.find((b) => b.batchId === plan.batchId);
    if (have) return have;
    if (plan.seq <= m.lastSeq) return undefined; // already committed and consumed away earlier
    pool.stage({ batchId: plan.batchId, seq: plan.seq, purpose: plan.purpose, bits: plan.data.length * 8 });
    const b: MBatch = { batchId: plan.batchId, seq: plan.seq, purpose: plan.purpose, data: plan.data, committed: false, durable: 0, frontier: 0 };
    m.batches.push(b);
    return b;
  };
  const writeChunk = (b: MBatch, plan: Plan) => {
    const st = pool.staging();
    check(st !== null && st.batchId === b.batchId && st.durableOffset === b.durable, () => 'staging handle disagrees with model');
    const end = Math.min(b.data.length, b.durable + plan.chunk);
    st!.write(b.durable, b.data.subarray(b.durable, end));
    b.durable = end;
  };
  switch (step.op) {
    case 'stage':
      ensureStaged(step.plan);
      return;
    case 'write': {
      const b = ensureStaged(step.plan);
      if (b && !b.committed && b.durable < b.data.length) writeChunk(b, step.plan);
      return;
    }
    case 'commit': {
      const b = ensureStaged(step.plan);
      if (!b || b.committed) return;
      while (b.durable < b.data.length) writeChunk(b, step.plan);
      pool.staging()!.commit();
      b.committed = true;
      m.lastSeq = b.seq;
      return;
    }
    case 'abort': {
      const i = m.batches.findIndex((b) => b.batchId === step.plan.batchId && !b.committed);
      if (i < 0) return;
      pool.staging()!.abort();
      m.batches.splice(i, 1);
      return;
    }
    case 'consume': {
      const b = pick(m, step.purpose, step.n);
      if (!b) {
        let code = '';
        try {
          pool.consume(step.purpose, step.n);
        } catch (e) {
          if (!(e instanceof PoolError)) throw e;
          code = e.code;
        }
        check(code === 'EXHAUSTED', () => `expected EXHAUSTED, got ${code || 'a key'}`);
        return;
      }
      const k = pool.consume(step.purpose, step.n);
      check(k.keyId.batchId === b.batchId && k.keyId.bitOffset === b.frontier * 8, () => `out of order: got ${k.keyId.batchId}:${k.keyId.bitOffset / 8}, expected ${b.batchId}:${b.frontier}`);
      serve(m, b, b.frontier, k.key);
      b.frontier += step.n;
      retireUsedUp(m);
      return;
    }
    case 'byId': {
      const b = m.batches.find((x) => x.batchId === step.batchId && x.committed);
      const n = b ? Math.min(step.n, b.data.length - b.frontier - step.skip) : 0;
      if (!b || n <= 0) return;
      const o = b.frontier + step.skip;
      const k = pool.consumeById({ batchId: b.batchId, bitOffset: o * 8 }, n);
      serve(m, b, o, k.key);
      b.frontier = o + n;
      retireUsedUp(m);
      return;
    }
    case 'maintain':
      pool.maintain();
      m.batches = m.batches.filter((b) => !(b.committed && b.frontier === b.data.length));
      return;
    case 'discard': {
      const i = m.batches.findIndex((b) => b.batchId === step.batchId);
      if (i < 0) return;
      pool.discardBatch(step.batchId);
      m.batches.splice(i, 1);
      return;
    }
    case 'zeroize':
      pool.zeroizeAll();
      m.batches = [];
      return;
  }
}

/**
 * After a cut and remount: the pool's state must be the state before the interrupted step or
 * after it, with consumption only moving forward and by at most the key in flight. Then the
 * model takes the pool's state.
 */
function reconcile(ctx: Ctx, step: Step, before: Model): void {
  const m = ctx.model;
  const pool = ctx.pool!;
  const st = pool.status();
  const insp = pool.inspect();
  const live = new Map(insp.batches.map((b) => [b.batchId, b]));
  // what the step could have changed
  let inflight: { batchId: number; hi: number } | undefined;
  if (step.op === 'consume') {
    const b = pick(before, step.purpose, step.n);
    if (b) inflight = { batchId: b.batchId, hi: b.frontier + step.n };
  } else if (step.op === 'byId') {
    const b = before.batches.find((x) => x.batchId === step.batchId && x.committed);
    const n = b ? Math.min(step.n, b.data.length - b.frontier - step.skip) : 0;
    if (b && n > 0) inflight = { batchId: b.batchId, hi: b.frontier + step.skip + n };
  }
  const mayDrop = (b: MBatch): boolean =>
    step.op === 'zeroize' ||
    (step.op === 'discard' && step.batchId === b.batchId) ||
    (step.op === 'abort' && step.plan.batchId === b.batchId && !b.committed);
  const next: MBatch[] = [];
  let dropped = 0;
  for (const b of before.batches) {
    const p = live.get(b.batchId);
    if (!p) {
      const retired = b.committed && (b.frontier === b.data.length || (inflight?.batchId === b.batchId && inflight.hi === b.data.length));
      check(retired || mayDrop(b), () => `batch ${b.batchId} vanished after a cut in ${step.op}`);
      if (!retired) dropped++;
      continue;
    }
    const nb = { ...b };
    if (b.committed) {
      check(p.committed, () => `committed batch ${b.batchId} became uncommitted`);
      const hi = inflight?.batchId === b.batchId ? inflight.hi : b.frontier;
      check(p.frontierBytes >= b.frontier, () => `batch ${b.batchId} frontier went back ${b.frontier} -> ${p.frontierBytes}: reuse`);
      check(p.frontierBytes <= hi, () => `batch ${b.batchId} lost more than the key in flight: ${b.frontier} -> ${p.frontierBytes} (max ${hi})`);
      nb.frontier = p.frontierBytes;
    } else {
      const stepPlan = 'plan' in step ? step.plan : undefined;
      const mine = stepPlan?.batchId === b.batchId;
      if (p.committed) {
        check(mine && step.op === 'commit', () => `batch ${b.batchId} committed by a ${step.op}`);
        check(p.frontierBytes === 0, () => 'fresh batch has consumption');
        nb.committed = true;
        nb.durable = b.data.length;
        nb.frontier = 0;
      } else {
        check(p.durableBytes === b.durable || (mine && p.durableBytes > b.durable), () => `staging durable ${b.durable} -> ${p.durableBytes} in ${step.op}`);
        nb.durable = p.durableBytes;
      }
    }
    next.push(nb);
  }
  if (step.op === 'zeroize') check(dropped === 0 || next.length === 0, () => 'zeroize was not all or nothing');
  for (const p of insp.batches) {
    if (before.batches.some((b) => b.batchId === p.batchId)) continue;
    const plan = 'plan' in step ? step.plan : undefined;
    check(plan?.batchId === p.batchId && ['stage', 'write', 'commit'].includes(step.op), () => `batch ${p.batchId} appeared in ${step.op}`);
    const nb: MBatch = { batchId: p.batchId, seq: plan!.seq, purpose: plan!.purpose, data: plan!.data, committed: p.committed, durable: p.durableBytes, frontier: p.frontierBytes };
    check(!p.committed || p.frontierBytes === 0, () => 'fresh batch has consumption');
    next.push(nb);
  }
  const newest = next.filter((b) => b.committed).reduce((s, b) => Math.max(s, b.seq), -1);
  const lastSeq = st.lastSeq ?? -1;
  check(lastSeq === before.lastSeq || (step.op === 'commit' && lastSeq === step.plan.seq && newest === lastSeq), () => `lastSeq ${before.lastSeq} -> ${lastSeq} in ${step.op}`);
  m.batches = next;
  m.lastSeq = lastSeq;
}

/** Raw flash: unconsumed bytes identical to what was injected, consumed ones zero, dead sectors blank. */
function verifyFlash(ctx: Ctx): void {
  const pool = ctx.pool!;
  const insp = pool.inspect();
  const P = insp.payloadPerSector;
  const owned = new Set<number>();
  check(insp.batches.length === ctx.model.batches.length, () => `pool has ${insp.batches.length} batches, model ${ctx.model.batches.length}`);
  for (const pb of insp.batches) {
    const b = ctx.model.batches.find((x) => x.batchId === pb.batchId);
    check(!!b && b.committed === pb.committed, () => `batch ${pb.batchId} state differs from model`);
    check(pb.frontierBytes === b!.frontier && (pb.committed || pb.durableBytes === b!.durable), () => `batch ${pb.batchId} position differs from model`);
    pb.sectors.forEach((s, i) => {
      if (s < 0) {
        check(!pb.committed || i < pb.firstLive, () => `committed batch ${pb.batchId} lacks sector ${i}`);
        return;
      }
      owned.add(s);
      const len = Math.min(P, b!.data.length - i * P);
      const raw = ctx.flash.peek(s * insp.sectorSize + insp.payloadOffset, len);
      for (let k = 0; k < len; k++) {
        const pos = i * P + k;
        if (pb.committed && pos < b!.frontier) check(raw[k] === 0, () => `consumed byte ${pos} of batch ${pb.batchId} not zeroized`);
        else if (pb.committed || pos < b!.durable) check(raw[k] === b!.data[pos], () => `byte ${pos} of batch ${pb.batchId} differs from injected`);
      }
    });
  }
  for (let d = 0; d < insp.dataCount; d++) {
    const s = insp.dataStart + d;
    if (owned.has(s)) continue;
    check(ctx.flash.peek(s * insp.sectorSize, insp.sectorSize).every((x) => x === 0xff), () => `dead sector ${s} not wiped`);
  }
}

interface Reference {
  images: Uint8Array[];
  models: Model[];
  counts: number[];
}

/** Clean run, one mount per step, recording the image and model before each step and its op count. */
function reference(steps: Step[], geometry: { size: number; sectorSize: number; pageSize: number }, opts: KeyPoolOptions): Reference {
  const ref: Reference = { images: [], models: [], counts: [] };
  let image: Uint8Array = new Uint8Array(geometry.size).fill(0xff);
  let model: Model = { formatted: false, lastSeq: -1, batches: [], served: new Map() };
  for (const step of steps) {
    ref.images.push(image);
    ref.models.push(clone(model));
    const flash = NorFlash.fromImage(image, geometry);
    const ctx: Ctx = { flash, pool: model.formatted ? KeyPool.mount(flash, opts) : null, model };
    if (flash.faults.mutations !== 0) throw new Error('mount of a cleanly written image wrote');
    const m0 = flash.faults.mutations;
    exec(ctx, step, opts);
    ref.counts.push(flash.faults.mutations - m0);
    verifyFlash(ctx);
    image = flash.snapshot();
    model = ctx.model;
  }
  return ref;
}

interface CutResult {
  cuts: number;
  failures: string[];
}

function sweep(name: string, steps: Step[], geometry: { size: number; sectorSize: number; pageSize: number }, opts: KeyPoolOptions, follow: number): CutResult {
  const ref = reference(steps, geometry, opts);
  const res: CutResult = { cuts: 0, failures: [] };
  const modes: Array<[CutMode, number]> = [['clean', 0], ['after', 0], ['torn', 1], ['torn', 2]];

  const mountAfterCut = (ctx: Ctx, k: number): void => {
    try {
      ctx.pool = KeyPool.mount(ctx.flash, opts);
    } catch (e) {
      if (!(e instanceof PoolError) || e.code !== 'NOT_FORMATTED') throw e;
      // only an interrupted format may leave no pool behind
      check(steps[k]!.op === 'format' || !ref.models[k]!.formatted, () => `mount failed NOT_FORMATTED after a cut in ${steps[k]!.op}`);
      ctx.pool = null;
      ctx.model.formatted = false;
      ctx.model.batches = [];
      ctx.model.lastSeq = -1;
    }
  };

  const afterCut = (ctx: Ctx, k: number, before: Model): void => {
    if (ctx.pool) {
      if (steps[k]!.op === 'format' && ctx.pool.inspect().batches.length === 0 && before.batches.length > 0) {
        // the format completed before the cut
        Object.assign(ctx.model, { formatted: true, lastSeq: -1, batches: [] });
      } else if (steps[k]!.op === 'format' && !before.formatted) {
        Object.assign(ctx.model, { formatted: true, lastSeq: -1, batches: [] });
      } else {
        reconcile(ctx, steps[k]!, before);
      }
      verifyFlash(ctx);
    }
    // Continue: retry the interrupted step (as the terminal would), then the next ones.
    for (let j = k; j < Math.min(steps.length, k + 1 + follow); j++) exec(ctx, steps[j]!, opts);
    if (ctx.pool) verifyFlash(ctx);
  };

  const start = (k: number): Ctx => {
    const flash = NorFlash.fromImage(ref.images[k]!, geometry);
    const model = clone(ref.models[k]!);
    return { flash, pool: model.formatted ? KeyPool.mount(flash, opts) : null, model };
  };

  for (let k = 0; k < steps.length; k++) {
    for (let i = 1; i <= ref.counts[k]!; i++) {
      for (const [mode, seed] of modes) {
        const label = `${name} step ${k} (${steps[k]!.op}) op ${i}/${ref.counts[k]} ${mode}${seed || ''}`;
        try {
          // first cut
          const ctx = start(k);
          const m0 = ctx.flash.faults.mutations;
          ctx.flash.faults.cutAfter(i, mode, seed * 7919 + i);
          let cut = false;
          try {
            exec(ctx, steps[k]!, opts);
          } catch (e) {
            if (!(e instanceof PowerCutError)) throw e;
            cut = true;
          }
          check(cut, () => 'cut point not reached (non-deterministic run?)');
          res.cuts++;
          ctx.flash.reboot();
          const afterFirst = ctx.flash.snapshot();
          mountAfterCut(ctx, k);
          const recoveryOps = ctx.flash.faults.mutations - m0 - i;
          afterCut(ctx, k, ref.models[k]!);

          // second cut, during the recovery itself (torn), for every recovery op
          if (mode === 'torn' && seed === 1) {
            for (let r = 1; r <= recoveryOps; r++) {
              const c2: Ctx = { flash: NorFlash.fromImage(afterFirst, geometry), pool: null, model: clone(ref.models[k]!) };
              c2.flash.faults.cutAfter(r, 'torn', 104729 + r);
              let cut2 = false;
              try {
                mountAfterCut(c2, k);
              } catch (e) {
                if (!(e instanceof PowerCutError)) throw e;
                cut2 = true;
              }
              check(cut2, () => 'recovery cut not reached');
              res.cuts++;
              c2.flash.reboot();
              mountAfterCut(c2, k);
              afterCut(c2, k, ref.models[k]!);
            }
          }
        } catch (e) {
          if (!(e instanceof Failure) && !(e instanceof PoolError) && !(e instanceof PowerCutError)) throw e;
          if (res.failures.length < 20) res.failures.push(`${label}: ${(e as Error).name} ${(e as Error).message}`);
        }
      }
    }
  }
  return res;
}

const base: KeyPoolOptions = { secureSectors: 2, journalSectors: 3, maxKeyBits: 4000 * 8, maxBatches: 3 };
const matrix = [
  { name: 'sector512/page64', geometry: { size: 24 * 512, sectorSize: 512, pageSize: 64 }, chunk: 1, key: 1, follow: 2 },
  { name: 'sector512/page32', geometry: { size: 24 * 512, sectorSize: 512, pageSize: 32 }, chunk: 2, key: 2, follow: 2 },
  { name: 'sector1024/page64', geometry: { size: 24 * 1024, sectorSize: 1024, pageSize: 64 }, chunk: 3, key: 1, follow: 3 },
];

let total = 0;
const t0 = Date.now();
for (const cfg of matrix) {
  t.test(`power cut at every flash operation: ${cfg.name}`, async (t) => {
    const res = sweep(cfg.name, scenario(cfg.chunk, cfg.key), cfg.geometry, base, cfg.follow);
    total += res.cuts;
    t.comment(`${cfg.name}: ${res.cuts} cut points`);
    t.same(res.failures, [], 'no invariant broken at any cut point');
  });
}

t.test('cut point count', async (t) => {
  t.comment(`total cut points: ${total} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.ok(total >= 10000, `at least 10,000 cut points (${total})`);
});
