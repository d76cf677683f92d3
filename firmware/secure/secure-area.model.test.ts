// Model-based tests of the secure area (firmware/secure/secure-area.ts, issue 8 items 1 and 5).
//
// (A) fast-check `fc.commands` against a small reference model: admin counter (up or not),
// failed-auth count and lockout, audit events of every type with random details (cut to 28
// chars, 16 for `refused`, non-printables stored as '?'), refusals counted in RAM under an
// injected clock and written coalesced at most once per REFUSAL_INTERVAL_MS (and flushed before
// any other event), rememberBatch under a live set the model controls (new batches, the same id
// again, retirements), reboots (pending refusals lost, all else kept) and power cuts
// (faults.cutAfter(k, torn|clean|after, seed) armed for one command; after the cut a reboot
// finds the state before the command, after it, or between its two records when an event
// flushed pending refusals first: never a mix, never a torn event). After every command: the
// identity is intact, counters and failed-auth are the model's, auditLog() is the model's two
// rings (depths from secureBounds) merged by n, auditCount() the last n, paging works, every live
// batch id resolves to its id, a retired one to its id or nothing, health() is clean with the
// model's pending count, the area never throws for lack of room, and a second area opened on the
// same flash (a reboot, read only) sees what RAM holds. Batches retire oldest first or in any
// order; a live id is never evicted either way (this test found that it was, and it is fixed).
//
// (B) a soak: thousands of operations fill both audit rings and the 32 live batch ids many
// times over; every operation is first run on a copy of the flash to see whether it compacts
// the log, and the power is cut inside two compactions out of three (at the erase, a checkpoint
// program or the header, in turn; torn, clean, after) and now and then in a plain append; the
// area boots after every cut, with its identity, live ids and rings intact.
//
// Runs: QKT_FUZZ_RUNS (default 200 sequences for A, 10x that many operations for B); replay A
// with QKT_FUZZ_SEED / QKT_FUZZ_PATH / QKT_FUZZ_REPLAY, printed with a failure. Long run:
//   QKT_FUZZ_RUNS=5000 npx tap --disable-coverage firmware/secure/secure-area.model.test.ts

import t from 'tap';
import type { Test } from 'tap';
import fc from 'fast-check';
import { envInt, fuzzParams, replayLine } from '../test-support/fuzz.js';
import { NorFlash } from '../flash/nor-flash.js';
import { PowerCutError } from '../flash/errors.js';
import { prng, type CutMode } from '../flash/faults.js';
import { decodeHeader, UNIT } from '../flash/record-log.js';
import { KEEP_BATCH_IDS, openSecureArea, REFUSAL_INTERVAL_MS, SECURE_SECTORS, secureBounds, type WritableSecureArea } from './secure-area.js';
import { AUDIT_TYPES, SECURITY_EVENTS, type AuditEvent, type AuditType } from './types.js';

t.setTimeout(900_000);

// ---------------------------------------------------------------- run control

const RUNS = Math.max(1, envInt('QKT_FUZZ_RUNS') ?? 200);
const SOAK_OPS = 10 * RUNS;
const FILE = 'firmware/secure/secure-area.model.test.ts';

/** Run a property; with `todo`, a failure is a known finding (reported, not failing the run). */
function runProperty<Ts>(t: Test, prop: fc.IProperty<Ts>, numRuns: number, o: { todo?: string; seed?: number } = {}): boolean {
  const t0 = Date.now();
  const out = fc.check(prop, fuzzParams(numRuns, o.seed) as fc.Parameters<Ts>);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (out.failed) {
    const msg =
      `${fc.defaultReportMessage(out)}\n` +
      `error: ${out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance)}\n` +
      `replay: ${replayLine(out, FILE)}`;
    t.comment(msg);
    t.fail(`failed after ${out.numRuns} sequences in ${secs} s (seed ${out.seed}; counterexample above)`, o.todo ? { todo: o.todo } : {});
    return false;
  }
  t.pass(`${out.numRuns} sequences in ${secs} s (seed ${out.seed})${o.todo ? ': the finding is fixed, drop its todo' : ''}`);
  return true;
}

class Failure extends Error {
  override readonly name = 'ModelFailure';
}
function check(cond: unknown, msg: () => string): asserts cond {
  if (!cond) throw new Failure(msg());
}

// ---------------------------------------------------------------- the device and its format

const S = 2048;
// The secure area's four sectors and two more for the key pool (untouched here). Sectors this
// small hold a checkpoint of 5 security + 12 routine events and 32 batch ids: compactions come
// every dozen or so records.
const GEOMETRY = { size: (SECURE_SECTORS + 2) * S, sectorSize: S, pageSize: 256 };
const BOUNDS = secureBounds(S);
const T0 = 1_700_000_000_000;
const MODES: CutMode[] = ['torn', 'clean', 'after'];

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** A 16-byte batch id whose first 4 bytes are its pool id, big-endian (as the KMD makes them). */
function idFor(pool: number, seed: number): Uint8Array {
  const r = prng(seed);
  const id = Uint8Array.from({ length: 16 }, () => Math.floor(r() * 256));
  new DataView(id.buffer).setUint32(0, pool >>> 0, false);
  return id;
}
/** What the area stores of a detail: printable ASCII ('?' for anything else), cut to the record's room. */
const stored = (d: string, max: number) => d.replace(/[^\x20-\x7e]/g, '?').slice(0, max);

/** One flash mutation, in the order the device saw them. */
interface Mut {
  kind: 'p' | 'e';
  sector: number;
  unit: number;
  len: number;
}
/** Record every program and erase that reaches the device (the one a cut lands on included). */
function instrument(flash: NorFlash): Mut[] {
  const trace: Mut[] = [];
  const program = flash.program.bind(flash);
  const erase = flash.erase.bind(flash);
  flash.program = (addr: number, bytes: Uint8Array) => {
    if (!flash.powerLost) trace.push({ kind: 'p', sector: Math.floor(addr / S), unit: (addr % S) / UNIT, len: bytes.length });
    program(addr, bytes);
  };
  flash.erase = (sector: number) => {
    if (!flash.powerLost) trace.push({ kind: 'e', sector, unit: 0, len: S });
    erase(sector);
  };
  return trace;
}

/** The log's header format, read off sector 0 after enrolment (which writes generation 1 there). */
interface Fmt {
  magic: number;
  version: number;
}
function formatOf(flash: NorFlash): Fmt {
  const dv = new DataView(flash.peek(0, UNIT).buffer);
  return { magic: dv.getUint32(0, true), version: dv.getUint32(8, true) };
}
/** The ring sector the log appends to (newest valid header) and its generation. */
function activeSector(flash: NorFlash, f: Fmt): { sector: number; gen: number } {
  let sector = -1;
  let gen = -1;
  for (let s = 0; s < SECURE_SECTORS; s++) {
    const g = decodeHeader(flash.peek(s * S, UNIT), f.magic, f.version);
    if (g !== undefined && g > gen) [sector, gen] = [s, g];
  }
  return { sector, gen };
}
/**
 * Which mutations of one operation belong to a compaction: an erase, or a program into another
 * ring sector than the one the operation started in, up to and including that sector's header.
 */
function inCompaction(trace: Mut[], active: number): boolean[] {
  const headed = new Set<number>();
  return trace.map((m) => {
    if (m.kind === 'e') return true;
    if (m.sector === active || headed.has(m.sector)) return false;
    if (m.unit === 0 && m.len === UNIT) headed.add(m.sector);
    return true;
  });
}

// ---------------------------------------------------------------- (A) the model

interface Ev {
  n: number;
  at: number;
  type: AuditType;
  detail: string;
  count?: number;
  first?: number;
}
const evText = (e: Ev | AuditEvent) =>
  `#${e.n} ${e.type}@${e.at} ${JSON.stringify(e.detail)}${e.count !== undefined || e.first !== undefined ? ` x${e.count} since ${e.first}` : ''}`;

/** What the area keeps (on flash and in RAM). `ids` never forgets: a retired id may or may not still be there. */
interface AreaState {
  admin: number;
  failed: { count: number; locked: boolean };
  security: Ev[];
  routine: Ev[];
  lastN: number;
  /** pool id -> the id last remembered for it, in the order the area holds them. */
  ids: Map<number, Uint8Array>;
}
const cloneState = (s: AreaState): AreaState => ({
  admin: s.admin,
  failed: { ...s.failed },
  security: [...s.security],
  routine: [...s.routine],
  lastN: s.lastN,
  ids: new Map(s.ids),
});
const merged = (s: AreaState) => [...s.security, ...s.routine].sort((a, b) => a.n - b.n);

function pushEv(s: AreaState, e: Ev): void {
  const sec = SECURITY_EVENTS.has(e.type);
  const ring = sec ? s.security : s.routine;
  ring.push(e);
  while (ring.length > (sec ? BOUNDS.securityEvents : BOUNDS.routineEvents)) ring.shift();
  s.lastN = e.n;
}

interface Pending {
  count: number;
  first: number;
  last: number;
  detail: string;
}
const noPending = (): Pending => ({ count: 0, first: 0, last: 0, detail: '' });

/**
 * How the model retires batches. `fifo`: the batch remembered first goes first (then the area's
 * bound of 32 ids can only ever drop retired ones). `any`: any live batch may go (batches are
 * spent at their own pace: an `auth` batch can run out before an older `enc` one) and a live
 * pool id may be remembered again with another id. `strict`: a live id must always resolve.
 */
interface Policy {
  retire: 'fifo' | 'any';
  strict: boolean;
}

interface M {
  policy: Policy;
  terminalId: string;
  deviceKey: Uint8Array;
  /** A pool id never used (must resolve to nothing). */
  unused: number;
  st: AreaState;
  live: Set<number>;
  /** Live ids the area lost (the finding below; `any` order, not strict, only): remembering one again writes it. */
  gone: Set<number>;
  /** Every pool id ever remembered (or tried). */
  pools: number[];
  nextPool: number;
  pending: Pending;
  lastRefusalWrite: number;
  now: number;
}

interface Real {
  flash: NorFlash;
  sa: WritableSecureArea;
  now: number;
  live: Set<number>;
  trace: Mut[];
  fmt: Fmt;
}

type Op =
  | { op: 'admin'; inc: number; abs: number }
  | { op: 'failed'; count: number; locked: boolean }
  | { op: 'audit'; type: AuditType; detail: string; adv: number }
  | { op: 'refused'; detail: string; adv: number }
  | { op: 'remember'; kind: 'new' | 'same' | 'changed'; pick: number; seed: number }
  | { op: 'retire'; pick: number; count: number };

function opText(o: Op): string {
  const { op, ...rest } = o;
  return `${op}(${JSON.stringify(rest)})`;
}

/** An op resolved against the model: what to call, how the live set changes, what the area must hold after each record. */
interface Plan {
  what: string;
  adv: number;
  retire: number[];
  add: number | undefined;
  call: (sa: WritableSecureArea) => void;
  /** The area's state after each record the op writes, in order (empty: it writes none). */
  steps: AreaState[];
  pending: Pending;
  lastRefusalWrite: number;
  /** It writes pending refusals as one coalesced event. */
  flushes: boolean;
}

/** Live pool ids in the order the area holds them (oldest remembered first). */
function liveOrder(m: M): number[] {
  const inMap = [...m.st.ids.keys()].filter((p) => m.live.has(p));
  return [...inMap, ...[...m.live].filter((p) => !m.st.ids.has(p))];
}

function plan(m: M, o: Op): Plan {
  const steps: AreaState[] = [];
  let st = m.st;
  const write = (f: (s: AreaState) => void) => {
    st = cloneState(st);
    f(st);
    steps.push(st);
  };
  let pending = { ...m.pending };
  let lrw = m.lastRefusalWrite;
  let flushes = false;
  const adv = o.op === 'audit' || o.op === 'refused' ? o.adv : 0;
  const now = m.now + adv;
  const flush = () => {
    if (pending.count === 0) return;
    const p = pending;
    pending = noPending();
    lrw = p.last;
    flushes = true;
    write((s) => pushEv(s, { n: s.lastN + 1, at: p.last, type: 'refused', detail: stored(p.detail, 16), count: p.count, first: p.first }));
  };
  const base = { what: opText(o), adv, retire: [] as number[], add: undefined as number | undefined };
  const done = (rest: Pick<Plan, 'call'> & Partial<Plan>): Plan => ({ ...base, ...rest, steps, pending, lastRefusalWrite: lrw, flushes });
  switch (o.op) {
    case 'admin': {
      const n = o.inc > 0 ? Math.min(m.st.admin + o.inc, 0xffff_ffff) : o.abs;
      write((s) => (s.admin = n));
      return done({ what: `setAdminCounter(${n})`, call: (sa) => sa.setAdminCounter(n) });
    }
    case 'failed':
      write((s) => (s.failed = { count: Math.min(o.count, 255), locked: o.locked }));
      return done({ what: `setFailedAuth(${o.count}, ${o.locked})`, call: (sa) => sa.setFailedAuth(o.count, o.locked) });
    case 'audit': {
      if (o.type !== 'refused') flush();
      const refused = o.type === 'refused';
      write((s) => pushEv(s, { n: s.lastN + 1, at: now, type: o.type, detail: stored(o.detail, refused ? 16 : 28), ...(refused ? { count: 0, first: now } : {}) }));
      return done({ what: `audit(${o.type}, ${JSON.stringify(o.detail)}) at +${adv}`, call: (sa) => sa.audit(o.type, o.detail) });
    }
    case 'refused': {
      if (pending.count === 0) pending.first = now;
      pending.count++;
      pending.last = now;
      pending.detail = o.detail;
      if (pending.last - lrw >= REFUSAL_INTERVAL_MS) flush();
      return done({ what: `refused(${JSON.stringify(o.detail)}) at +${adv}`, call: (sa) => sa.refused(o.detail) });
    }
    case 'retire': {
      const order = liveOrder(m);
      const retire: number[] = [];
      for (let i = 0; i < Math.min(o.count, order.length); i++) {
        if (m.policy.retire === 'fifo') retire.push(order[i]!);
        else {
          const rest = order.filter((p) => !retire.includes(p));
          retire.push(rest[(o.pick + i * 7) % rest.length]!);
        }
      }
      return done({ what: `retire(${retire.join(', ')})`, retire, call: () => {} });
    }
    case 'remember': {
      const order = liveOrder(m);
      let kind = o.kind;
      if (kind === 'changed' && m.policy.retire === 'fifo') kind = 'same'; // fifo keeps the area's order = retirement order
      if (order.length === 0) kind = 'new';
      let pool: number;
      let id: Uint8Array;
      let retire: number[] = [];
      let add: number | undefined;
      if (kind === 'new') {
        // A new batch is staged: the pool retires one first if it holds its maximum.
        if (order.length >= KEEP_BATCH_IDS) retire = [m.policy.retire === 'fifo' ? order[0]! : order[o.pick % order.length]!];
        pool = m.nextPool;
        id = idFor(pool, o.seed);
        add = pool;
      } else {
        pool = order[o.pick % order.length]!;
        const have = m.st.ids.get(pool);
        id = kind === 'same' && have ? have : idFor(pool, o.seed);
      }
      const have = m.gone.has(pool) ? undefined : m.st.ids.get(pool);
      if (!(have && hex(have) === hex(id))) {
        write((s) => {
          s.ids.delete(pool);
          s.ids.set(pool, id);
        });
      }
      return done({ what: `rememberBatch(${pool}, ${hex(id)}) ${kind}${retire.length ? `, retired ${retire[0]}` : ''}`, retire, add, call: (sa) => sa.rememberBatch(pool, id) });
    }
  }
}

/** Run a plan on the real area: the clock and the live set move first, then the call. */
function execPlan(r: Real, p: Plan): void {
  r.now += p.adv;
  for (const x of p.retire) r.live.delete(x);
  if (p.add !== undefined) r.live.add(p.add);
  p.call(r.sa);
}

/** The live set and pool ids as a plan leaves them (before its call). */
function applyLive(m: M, p: Plan): void {
  for (const x of p.retire) m.live.delete(x);
  if (p.add !== undefined) {
    m.live.add(p.add);
    m.pools.push(p.add);
    m.nextPool = (m.nextPool + 1) >>> 0;
  }
}

/** The model after a plan (or, after a cut, with the area in `state`); applyLive came first. */
function commit(m: M, p: Plan, state?: AreaState): void {
  m.now += p.adv;
  if (state) {
    m.st = state;
    m.pending = noPending();
    m.lastRefusalWrite = m.now; // the reboot after the cut
  } else {
    m.st = p.steps.at(-1) ?? m.st;
    m.pending = p.pending;
    m.lastRefusalWrite = p.lastRefusalWrite;
  }
}

/** How the area's state differs from `st` (empty: it is `st`). Retired ids may be gone; live ones too unless strict. */
function mismatches(sa: WritableSecureArea, m: M, st: AreaState, strict: boolean): string[] {
  const out: string[] = [];
  const id = sa.identity();
  if (!id || id.terminalId !== m.terminalId || hex(id.deviceKey) !== hex(m.deviceKey)) out.push(`identity ${id ? `${id.terminalId} ${hex(id.deviceKey)}` : 'lost'}`);
  if (sa.terminalId() !== m.terminalId) out.push(`terminalId() ${sa.terminalId()}`);
  if (sa.adminCounter() !== st.admin) out.push(`adminCounter ${sa.adminCounter()}, model ${st.admin}`);
  const f = sa.failedAuth();
  if (f.count !== st.failed.count || f.locked !== st.failed.locked) out.push(`failedAuth ${JSON.stringify(f)}, model ${JSON.stringify(st.failed)}`);
  const got = sa.auditLog(0, 1e9).map(evText);
  const want = merged(st).map(evText);
  if (got.join('\n') !== want.join('\n')) out.push(`auditLog\n    area:  ${got.join('\n           ')}\n    model: ${want.join('\n           ')}`);
  if (sa.auditCount() !== st.lastN) out.push(`auditCount ${sa.auditCount()}, model ${st.lastN}`);
  for (const p of m.pools) {
    const g = sa.batchIdFor(p);
    const w = st.ids.get(p);
    const gh = g && hex(g);
    const wh = w && hex(w);
    if (gh === wh) continue;
    if (gh === undefined && !(strict && m.live.has(p))) continue;
    out.push(`batchIdFor(${p}) = ${gh ?? 'undefined'}, model ${wh ?? 'undefined'} (${m.live.has(p) ? 'live' : 'retired'})`);
  }
  if (sa.batchIdFor(m.unused) !== undefined) out.push(`batchIdFor(${m.unused}) (never remembered) = ${hex(sa.batchIdFor(m.unused)!)}`);
  return out;
}

/** Everything a caller can see of an area (for RAM vs flash). */
function obsText(sa: WritableSecureArea, m: M): string {
  const id = sa.identity();
  return JSON.stringify({
    id: id && [id.terminalId, hex(id.deviceKey)],
    admin: sa.adminCounter(),
    failed: sa.failedAuth(),
    log: sa.auditLog(0, 1e9).map(evText),
    count: sa.auditCount(),
    // Live ids must agree; a retired id may still resolve in RAM until the next trim or
    // compaction, and be gone on the flash (docs/secure-area.md: its id or nothing).
    ids: m.pools.map((p) => (m.live.has(p) ? sa.batchIdFor(p) : undefined)).map((b) => (b ? hex(b) : '-')),
  });
}

interface AStats {
  ops: number;
  rollovers: number;
  reboots: number;
  cutsArmed: number;
  cutsFired: number;
  cutsInCompaction: number;
  outcomes: [number, number, number];
  refusedWritten: number;
  maxLive: number;
  ringsFull: number;
  liveEvicted: number;
}
const newStats = (): AStats => ({ ops: 0, rollovers: 0, reboots: 0, cutsArmed: 0, cutsFired: 0, cutsInCompaction: 0, outcomes: [0, 0, 0], refusedWritten: 0, maxLive: 0, ringsFull: 0, liveEvicted: 0 });
let stats = newStats();

function verify(m: M, r: Real, what: string): void {
  const bad = mismatches(r.sa, m, m.st, m.policy.strict);
  check(bad.length === 0, () => `after ${what}: the area differs from the model:\n  ${bad.join('\n  ')}`);
  const h = r.sa.health();
  check(!h.damaged, () => `after ${what}: health() says damaged (${h.reason})`);
  check(h.pendingRefusals === m.pending.count, () => `after ${what}: ${h.pendingRefusals} pending refusals, model ${m.pending.count}`);
  const log = r.sa.auditLog(0, 1e9);
  const sec = log.filter((e) => SECURITY_EVENTS.has(e.type)).length;
  check(sec <= BOUNDS.securityEvents && log.length - sec <= BOUNDS.routineEvents, () => `after ${what}: rings over their bounds (${sec} security, ${log.length - sec} routine)`);
  // Paging: from and max.
  const from = Math.max(0, m.st.lastN - 4);
  const page = r.sa.auditLog(from, 3).map(evText);
  const wantPage = merged(m.st).filter((e) => e.n >= from).slice(0, 3).map(evText);
  check(page.join('|') === wantPage.join('|'), () => `after ${what}: auditLog(${from}, 3) = ${page.join(' | ')}, model ${wantPage.join(' | ')}`);
  // What is on the flash is what RAM holds: a second area opened on it (reads only) agrees.
  const muts = r.flash.faults.mutations;
  const shadow = openSecureArea(r.flash, () => r.now);
  shadow.setLiveBatches(() => r.live);
  check(r.flash.faults.mutations === muts, () => `after ${what}: opening the area wrote to the flash`);
  check(!shadow.health().damaged, () => `after ${what}: the flash reads as damaged (${shadow.health().reason})`);
  const ram = obsText(r.sa, m);
  const disk = obsText(shadow, m);
  check(ram === disk, () => `after ${what}: the flash holds another state than RAM\n  RAM:   ${ram}\n  flash: ${disk}`);
  // Stats.
  stats.maxLive = Math.max(stats.maxLive, m.live.size);
  if (m.st.security.length === BOUNDS.securityEvents && m.st.routine.length === BOUNDS.routineEvents) stats.ringsFull++;
  m.gone = new Set([...m.live].filter((p) => m.st.ids.has(p) && !r.sa.batchIdFor(p)));
  if (m.gone.size > 0) stats.liveEvicted++;
}

function step(m: M, r: Real, o: Op): void {
  const p = plan(m, o);
  const g0 = activeSector(r.flash, r.fmt).gen;
  execPlan(r, p);
  applyLive(m, p);
  commit(m, p);
  stats.ops++;
  if (activeSector(r.flash, r.fmt).gen !== g0) stats.rollovers++;
  if (p.flushes) stats.refusedWritten++;
  verify(m, r, p.what);
}

function reboot(m: M, r: Real): void {
  r.flash.reboot();
  r.sa = openSecureArea(r.flash, () => r.now);
  r.sa.setLiveBatches(() => r.live);
  m.pending = noPending();
  m.lastRefusalWrite = m.now;
  stats.reboots++;
}

class OpCommand implements fc.Command<M, Real> {
  constructor(readonly o: Op) {}
  check(): boolean {
    return true;
  }
  run(m: M, r: Real): void {
    step(m, r, this.o);
  }
  toString(): string {
    return opText(this.o);
  }
}

/** Many ops in a row from a seed: rings and the live set fill, compactions galore. */
function burstOps(count: number, seed: number): Op[] {
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const x = rnd();
    const detail = 'b'.repeat(int(40)) + i;
    if (x < 0.4) ops.push({ op: 'remember', kind: rnd() < 0.8 ? 'new' : rnd() < 0.5 ? 'same' : 'changed', pick: int(64), seed: int(0xffff) + 1 });
    else if (x < 0.75) ops.push({ op: 'audit', type: AUDIT_TYPES[int(AUDIT_TYPES.length)]!, detail, adv: int(100_000) });
    else if (x < 0.85) ops.push({ op: 'refused', detail, adv: int(3 * REFUSAL_INTERVAL_MS) });
    else if (x < 0.9) ops.push({ op: 'admin', inc: int(3), abs: int(0xffff_ffff) });
    else if (x < 0.95) ops.push({ op: 'failed', count: int(300), locked: rnd() < 0.3 });
    else ops.push({ op: 'retire', pick: int(64), count: 1 + int(3) });
  }
  return ops;
}

class BurstCommand implements fc.Command<M, Real> {
  constructor(
    readonly count: number,
    readonly seed: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: M, r: Real): void {
    for (const o of burstOps(this.count, this.seed)) step(m, r, o);
  }
  toString(): string {
    return `burst(${this.count}, seed ${this.seed})`;
  }
}

class RebootCommand implements fc.Command<M, Real> {
  check(): boolean {
    return true;
  }
  run(m: M, r: Real): void {
    reboot(m, r);
    verify(m, r, 'reboot');
  }
  toString(): string {
    return 'reboot()';
  }
}

interface CutSpec {
  k: number;
  mode: CutMode;
  seed: number;
}

/** Run a plan with a power cut armed at its k-th mutation: if it lands, reboot and find the state before the op, after it, or between its records. */
function cutRun(m: M, r: Real, p: Plan, cut: CutSpec, label: string): void {
  const active = activeSector(r.flash, r.fmt).sector;
  stats.cutsArmed++;
  r.trace.length = 0;
  r.flash.faults.cutAfter(cut.k, cut.mode, cut.seed);
  let fired = false;
  try {
    execPlan(r, p);
  } catch (e) {
    if (!(e instanceof PowerCutError)) throw e;
    fired = true;
  } finally {
    r.flash.faults.cancelCut();
  }
  applyLive(m, p);
  if (!fired) {
    commit(m, p);
    stats.ops++;
    verify(m, r, p.what);
    return;
  }
  stats.cutsFired++;
  if (inCompaction(r.trace, active).at(-1)) stats.cutsInCompaction++;
  const what = `${label}: ${p.what} (landed on mutation ${r.trace.length}: ${JSON.stringify(r.trace.at(-1))})`;
  check(p.steps.length > 0, () => `${what}: the op writes nothing in the model, but it programmed the flash`);
  reboot(m, r);
  // The area's states before the op, between its records, after it.
  const cands = [m.st, ...p.steps];
  const diffs = cands.map((c) => mismatches(r.sa, m, c, m.policy.strict));
  const i = diffs.findIndex((d) => d.length === 0);
  check(i >= 0, () => `${what}: after the reboot the area is neither before nor after the op:\n  vs before: ${diffs[0]!.join('\n    ')}\n  vs after:  ${diffs.at(-1)!.join('\n    ')}`);
  stats.outcomes[i === 0 ? 0 : i === cands.length - 1 ? 2 : 1]++;
  commit(m, p, cands[i]!);
  // The batch whose id did not make it was never committed: the pool drops its staging.
  if (p.add !== undefined && !cands[i]!.ids.has(p.add)) {
    m.live.delete(p.add);
    r.live.delete(p.add);
  }
  verify(m, r, what);
}

class CutCommand implements fc.Command<M, Real> {
  constructor(
    readonly o: Op,
    readonly cut: CutSpec,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: M, r: Real): void {
    cutRun(m, r, plan(m, this.o), this.cut, `${this}`);
  }
  toString(): string {
    return `powerCut(cutAfter(${this.cut.k}, '${this.cut.mode}', ${this.cut.seed})) during ${opText(this.o)}`;
  }
}

/**
 * A power cut inside a compaction: admin-counter steps until a dry run of the op on a copy of
 * the flash compacts, then a cut at the j-th mutation of that compaction (erase, checkpoint
 * programs, header) in turn. Ops that never flush refusals only: the copy has no RAM state.
 */
class CompactionCutCommand implements fc.Command<M, Real> {
  constructor(
    readonly o: Op,
    readonly j: number,
    readonly mode: CutMode,
    readonly seed: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: M, r: Real): void {
    for (let fill = 0; fill < 200; fill++) {
      const p = plan(m, this.o);
      if (p.steps.length === 0) return step(m, r, this.o); // writes nothing (the same id again): nothing to cut
      const copy = NorFlash.fromImage(r.flash.snapshot(), GEOMETRY);
      const trace = instrument(copy);
      const live = new Set(r.live);
      for (const x of p.retire) live.delete(x);
      if (p.add !== undefined) live.add(p.add);
      const area = openSecureArea(copy, () => r.now + p.adv);
      area.setLiveBatches(() => live);
      p.call(area);
      const inC = inCompaction(trace, activeSector(r.flash, r.fmt).sector);
      const lo = inC.indexOf(true);
      if (lo >= 0) {
        const k = lo + 1 + (this.j % (inC.lastIndexOf(true) - lo + 1));
        cutRun(m, r, p, { k, mode: this.mode, seed: this.seed }, `${this} after ${fill} admin steps, at mutation ${k}`);
        return;
      }
      step(m, r, { op: 'admin', inc: 1, abs: 0 });
    }
    throw new Failure(`${this}: 200 records and no compaction`);
  }
  toString(): string {
    return `powerCutInCompaction(${this.j}, '${this.mode}', ${this.seed}) during ${opText(this.o)}`;
  }
}

function setup(policy: Policy, terminalId: string, keySeed: number, base: number): { model: M; real: Real } {
  const deviceKey = idFor(keySeed, keySeed).subarray(0, 16);
  const key = Uint8Array.from([...deviceKey, ...deviceKey.map((b) => b ^ 0x5a)]);
  const flash = NorFlash.memory(GEOMETRY);
  const trace = instrument(flash);
  const real: Real = { flash, sa: undefined as unknown as WritableSecureArea, now: T0, live: new Set(), trace, fmt: { magic: 0, version: 0 } };
  real.sa = openSecureArea(flash, () => real.now);
  real.sa.enroll({ terminalId, deviceKey: key });
  real.sa.setLiveBatches(() => real.live);
  real.fmt = formatOf(flash);
  const st: AreaState = { admin: 0, failed: { count: 0, locked: false }, security: [], routine: [], lastN: 0, ids: new Map() };
  pushEv(st, { n: 1, at: T0, type: 'enrolled', detail: stored(terminalId, 28) });
  const model: M = {
    policy,
    terminalId,
    deviceKey: key,
    unused: (base - 1) >>> 0,
    st,
    live: new Set(),
    gone: new Set(),
    pools: [],
    nextPool: base,
    pending: noPending(),
    lastRefusalWrite: T0,
    now: T0,
  };
  verify(model, real, 'enrol');
  return { model, real };
}

// ---------------------------------------------------------------- (A) arbitraries

const detailArb = fc.oneof(
  { arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 60 }), weight: 9 },
  { arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 60 }), weight: 1 },
);
const advArb = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 1, max: 60_000 }),
  fc.integer({ min: REFUSAL_INTERVAL_MS - 2, max: REFUSAL_INTERVAL_MS + 2 }),
  fc.integer({ min: REFUSAL_INTERVAL_MS, max: 3 * REFUSAL_INTERVAL_MS }),
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('admin' as const), inc: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.constant(0)), abs: fc.nat(0xffff_ffff) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('failed' as const), count: fc.nat(300), locked: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('audit' as const), type: fc.constantFrom(...AUDIT_TYPES), detail: detailArb, adv: advArb }), weight: 5 },
  { arbitrary: fc.record({ op: fc.constant('refused' as const), detail: detailArb, adv: advArb }), weight: 4 },
  {
    arbitrary: fc.record({
      op: fc.constant('remember' as const),
      kind: fc.constantFrom<'new' | 'same' | 'changed'>('new', 'new', 'new', 'same', 'changed'),
      pick: fc.nat(63),
      seed: fc.integer({ min: 1, max: 0xffff }),
    }),
    weight: 5,
  },
  { arbitrary: fc.record({ op: fc.constant('retire' as const), pick: fc.nat(63), count: fc.integer({ min: 1, max: 4 }) }), weight: 2 },
);
const cutArb: fc.Arbitrary<CutSpec> = fc.record({
  k: fc.oneof({ arbitrary: fc.constant(1), weight: 4 }, { arbitrary: fc.integer({ min: 2, max: 3 }), weight: 2 }, { arbitrary: fc.integer({ min: 4, max: 14 }), weight: 2 }),
  mode: fc.constantFrom<CutMode>(...MODES),
  seed: fc.integer({ min: 1, max: 0xffff }),
});
const quietOpArb = opArb.filter((o) => o.op === 'admin' || o.op === 'failed' || o.op === 'remember');
const commandArb: fc.Arbitrary<fc.Command<M, Real>> = fc.oneof(
  { arbitrary: opArb.map((o) => new OpCommand(o)), weight: 8 },
  { arbitrary: fc.tuple(opArb, cutArb).map(([o, c]) => new CutCommand(o, c)), weight: 4 },
  {
    arbitrary: fc.tuple(quietOpArb, fc.nat(20), fc.constantFrom<CutMode>(...MODES), fc.integer({ min: 1, max: 0xffff })).map(([o, j, mode, seed]) => new CompactionCutCommand(o, j, mode, seed)),
    weight: 1,
  },
  { arbitrary: fc.tuple(fc.integer({ min: 10, max: 80 }), fc.integer({ min: 1, max: 0xffff })).map(([n, s]) => new BurstCommand(n, s)), weight: 2 },
  { arbitrary: fc.constant(new RebootCommand()), weight: 1 },
);
const replayPath = process.env.QKT_FUZZ_REPLAY;
const commandsArb = fc.commands([commandArb], { maxCommands: 60, size: 'max', ...(replayPath ? { replayPath } : {}) });
const terminalIdArb = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.'), minLength: 1, maxLength: 32 });
// Pool ids from anywhere in the u32 range, 2^31 and 2^32 - 1 crossings included.
const baseArb = fc.oneof(fc.nat(0xffff_ffff), fc.constantFrom(0x7fff_ffc0, 0xffff_ffc0, 1));

function modelProperty(policies: fc.Arbitrary<Policy>) {
  return fc.property(policies, terminalIdArb, fc.integer({ min: 1, max: 0xffff }), baseArb, commandsArb, (policy, tid, keySeed, base, cmds) => {
    fc.modelRun(() => setup(policy, tid, keySeed, base), cmds);
  });
}

function statsText(s: AStats): string {
  return (
    `${s.ops} ops, ${s.rollovers} compactions, ${s.reboots} reboots, ${s.cutsFired}/${s.cutsArmed} armed cuts fired ` +
    `(${s.cutsInCompaction} inside a compaction; the area came back before/between/after the op ${s.outcomes.join('/')}), ` +
    `${s.refusedWritten} ops wrote coalesced refusals, live set up to ${s.maxLive}, both rings full after ${s.ringsFull} ops`
  );
}

t.test(`(A) secure area model: fc.commands, numRuns=${RUNS}`, async (t) => {
  t.comment(`bounds at ${S}-byte sectors: ${JSON.stringify(BOUNDS)}`);
  stats = newStats();
  const t0 = Date.now();
  // Batches retire oldest first, or in any order: both checked strictly.
  const ok = runProperty(t, modelProperty(fc.constantFrom<Policy>({ retire: 'fifo', strict: true }, { retire: 'any', strict: true })), RUNS);
  t.comment(`${statsText(stats)}; any-order runs saw a live id unresolvable after ${stats.liveEvicted} ops; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (ok && RUNS >= 100 && !process.env.QKT_FUZZ_PATH) {
    t.ok(stats.rollovers > RUNS, 'compactions happened');
    t.ok(stats.cutsInCompaction > 0, 'cuts landed inside compactions');
    t.ok(stats.outcomes[0] > 0 && stats.outcomes[2] > 0, 'cuts left both the old and the new state');
    t.ok(stats.outcomes[1] > 0, 'cuts landed between flushed refusals and the event that flushed them');
    t.ok(stats.maxLive === KEEP_BATCH_IDS, `the live set reached ${KEEP_BATCH_IDS}`);
    t.ok(stats.ringsFull > 0, 'both audit rings were full');
  }
});

// A finding of this test, fixed: trimBatchIds used to drop the oldest remembered id once 33 were
// held, live or not, so a batch retiring out of order let a new one evict a live id.

t.test(`(A) a live batch id always resolves, whatever order batches retire in: fc.commands, numRuns=${RUNS}`, async (t) => {
  stats = newStats();
  // A fixed seed (QKT_FUZZ_SEED overrides it): the same counterexample every run.
  runProperty(t, modelProperty(fc.constant<Policy>({ retire: 'any', strict: true })), RUNS, { seed: 856829433 });
});

t.test('the finding, by hand: 32 live ids, the second one retired, a 33rd remembered', async (t) => {
  const flash = NorFlash.memory(GEOMETRY);
  const sa = openSecureArea(flash, () => T0);
  sa.enroll({ terminalId: 'FTU-1', deviceKey: new Uint8Array(32).fill(7) });
  const live = new Set<number>();
  sa.setLiveBatches(() => live);
  for (let p = 1; p <= KEEP_BATCH_IDS; p++) {
    live.add(p);
    sa.rememberBatch(p, idFor(p, p));
  }
  live.delete(2);
  live.add(33);
  sa.rememberBatch(33, idFor(33, 33));
  const lost = [...live].filter((p) => !sa.batchIdFor(p));
  t.same(lost, [], 'every live id resolves');
  // Only the live ids survive the next compaction: what the area already does when retirement order is the remembering order.
  t.ok(sa.batchIdFor(2) === undefined || sa.batchIdFor(2)!.length === 16, 'the retired id: its id or nothing');
});

// ---------------------------------------------------------------- (B) the soak

t.test(`(B) soak: ${SOAK_OPS} ops fill both audit rings and the ${KEEP_BATCH_IDS} live batch ids many times over, power cut inside compactions, a boot after every cut`, async (t) => {
  const t0 = Date.now();
  const rnd = prng(0x5eed_b);
  const int = (n: number) => Math.floor(rnd() * n);
  let now = T0;
  const clock = () => now;
  const flash = NorFlash.memory(GEOMETRY);
  const trace = instrument(flash);
  const deviceKey = idFor(7, 7);
  const key = Uint8Array.from([...deviceKey, ...deviceKey]);
  let sa = openSecureArea(flash, clock);
  sa.enroll({ terminalId: 'FTU-SOAK', deviceKey: key });
  const fmt = formatOf(flash);
  const live: number[] = []; // oldest first
  const ids = new Map<number, Uint8Array>();
  const setLive = () => sa.setLiveBatches(() => live);
  setLive();
  const routine: AuditType[] = ['boot', 'batch-accepted', 'batch-refused', 'watchdog-reset'];
  const security: AuditType[] = ['auth-failed', 'lockout', 'selftest-failed', 'zeroize'];
  let nextPool = 0x7fff_ff00; // crosses 2^31
  let admin = 0;
  let failed = { count: 0, locked: false };
  const n = { events: 1, remembered: 0, compactionOps: 0, cuts: 0, cutsInCompaction: 0, plainCuts: 0, old: 0, neu: 0, boots: 0, aborted: 0 };
  let lastErase = Array.from({ length: SECURE_SECTORS }, (_, s) => flash.eraseCount(s));
  let eraseRounds = 0;

  const fail = (msg: string) => {
    throw new Failure(msg);
  };
  /** What must hold after every boot and every op. */
  const sound = (what: string, full: boolean) => {
    const id = sa.identity();
    if (!id || id.terminalId !== 'FTU-SOAK' || hex(id.deviceKey) !== hex(key)) fail(`${what}: identity lost`);
    const h = sa.health();
    if (h.damaged) fail(`${what}: health() damaged: ${h.reason}`);
    for (const p of live) {
      const got = sa.batchIdFor(p);
      if (!got || hex(got) !== hex(ids.get(p)!)) fail(`${what}: live batch ${p} resolves to ${got ? hex(got) : 'nothing'}`);
    }
    if (!full) return;
    const log = sa.auditLog(0, 1e9);
    const sec = log.filter((e) => SECURITY_EVENTS.has(e.type)).length;
    if (sec > BOUNDS.securityEvents || log.length - sec > BOUNDS.routineEvents) fail(`${what}: rings over their bounds: ${sec} security, ${log.length - sec} routine events`);
    for (let i = 1; i < log.length; i++) if (log[i]!.n <= log[i - 1]!.n) fail(`${what}: audit log out of order at ${log[i]!.n}`);
    if (log.at(-1)?.n !== sa.auditCount()) fail(`${what}: auditCount ${sa.auditCount()}, last event ${log.at(-1)?.n}`);
  };

  try {
    for (let i = 0; i < SOAK_OPS; i++) {
      now += 1000 + int(60_000);
      // The op, and how the live set changes first (a new batch is staged: the oldest go when the pool is full).
      const x = rnd();
      let what: string;
      let run: (a: WritableSecureArea) => void;
      let add: { pool: number; id: Uint8Array } | undefined;
      let newAdmin: number | undefined;
      let newFailed: typeof failed | undefined;
      if (x < 0.45) {
        if (live.length >= KEEP_BATCH_IDS) live.splice(0, 1 + int(3));
        const pool = nextPool;
        nextPool = (nextPool + 1) >>> 0;
        const id = idFor(pool, i + 1);
        add = { pool, id };
        live.push(pool);
        what = `rememberBatch(${pool})`;
        run = (a) => a.rememberBatch(pool, id);
      } else if (x < 0.9) {
        const type = rnd() < 0.25 ? security[int(security.length)]! : routine[int(routine.length)]!;
        const detail = `soak ${i} ${'x'.repeat(int(30))}`;
        what = `audit(${type})`;
        run = (a) => a.audit(type, detail);
      } else if (x < 0.95) {
        const v = admin + 1 + int(3);
        newAdmin = v;
        what = `setAdminCounter(${v})`;
        run = (a) => a.setAdminCounter(v);
      } else {
        const f = { count: int(10), locked: rnd() < 0.2 };
        newFailed = f;
        what = `setFailedAuth(${f.count}, ${f.locked})`;
        run = (a) => a.setFailedAuth(f.count, f.locked);
      }
      what = `op ${i} ${what}`;

      // Dry run on a copy of the flash: which of the op's mutations are a compaction?
      const copy = NorFlash.fromImage(flash.snapshot(), GEOMETRY);
      const probeTrace = instrument(copy);
      const probe = openSecureArea(copy, clock);
      probe.setLiveBatches(() => live);
      run(probe);
      const active = activeSector(flash, fmt).sector;
      const inC = inCompaction(probeTrace, active);
      const lo = inC.indexOf(true);
      let k = 0;
      if (lo >= 0) {
        n.compactionOps++;
        // Two compactions out of three are cut (all of them would starve the log: nothing new would ever land).
        if (n.compactionOps % 3 !== 0) k = lo + 1 + (n.cuts % (inC.lastIndexOf(true) - lo + 1));
      } else if (i % 23 === 0 && probeTrace.length > 0) {
        k = 1 + (i % probeTrace.length);
      }
      const countBefore = sa.auditCount();
      const adminBefore = sa.adminCounter();
      const failedBefore = sa.failedAuth();
      trace.length = 0;
      if (k > 0) flash.faults.cutAfter(k, MODES[n.cuts % 3]!, i + 1);
      let cut = false;
      try {
        run(sa);
      } catch (e) {
        if (!(e instanceof PowerCutError)) throw e;
        cut = true;
      } finally {
        flash.faults.cancelCut();
      }
      if (!cut) {
        if (k > 0) fail(`${what}: the cut at mutation ${k} did not fire (${trace.length} mutations; the dry run took ${probeTrace.length})`);
        if (trace.length !== probeTrace.length) fail(`${what}: ${trace.length} mutations, the dry run on a copy took ${probeTrace.length}`);
        if (add) {
          ids.set(add.pool, add.id);
          n.remembered++;
        }
        if (newAdmin !== undefined) admin = newAdmin;
        if (newFailed) failed = { ...newFailed };
        if (sa.auditCount() > countBefore) n.events += sa.auditCount() - countBefore;
        sound(what, i % 10 === 0);
      } else {
        n.cuts++;
        if (trace.length !== k) fail(`${what}: cut on mutation ${trace.length}, armed for ${k}`);
        const inside = inCompaction(trace, active).at(-1)!;
        if (inside !== inC[k - 1]) fail(`${what}: the dry run and the real run disagree on mutation ${k}`);
        if (inside) n.cutsInCompaction++;
        else n.plainCuts++;
        flash.reboot();
        sa = openSecureArea(flash, clock); // must boot
        setLive();
        n.boots++;
        what = `${what}, cut ${MODES[(n.cuts - 1) % 3]} at mutation ${k}${inside ? ' inside a compaction' : ''}`;
        // Old or new, field by field; counters never backwards.
        let neu = false;
        if (add) {
          const got = sa.batchIdFor(add.pool);
          if (got && hex(got) !== hex(add.id)) fail(`${what}: batch ${add.pool} resolves to another id`);
          if (got) {
            ids.set(add.pool, add.id);
            n.remembered++;
            neu = true;
          } else {
            live.splice(live.indexOf(add.pool), 1); // never committed: the pool drops the staging
            n.aborted++;
          }
        }
        const c = sa.auditCount();
        if (c !== countBefore && c !== countBefore + 1) fail(`${what}: auditCount ${c}, was ${countBefore}`);
        if (c > countBefore) {
          n.events++;
          neu = true;
        }
        const a = sa.adminCounter();
        if (a !== adminBefore && a !== newAdmin) fail(`${what}: admin counter ${a}, was ${adminBefore}, set to ${newAdmin}`);
        if (newAdmin !== undefined && a === newAdmin) neu = true;
        admin = a;
        const f = sa.failedAuth();
        const same = (p: { count: number; locked: boolean }, q: { count: number; locked: boolean } | undefined) => !!q && p.count === q.count && p.locked === q.locked;
        if (!same(f, failedBefore) && !same(f, newFailed)) fail(`${what}: failedAuth ${JSON.stringify(f)}, was ${JSON.stringify(failedBefore)}`);
        if (newFailed && same(f, newFailed) && !same(f, failedBefore)) neu = true;
        failed = f;
        if (neu) n.neu++;
        else n.old++;
        sound(what, true);
      }
      if (i % 97 === 96) {
        sa = openSecureArea(flash, clock); // a clean reboot now and then
        setLive();
        n.boots++;
        sound(`reboot after op ${i}`, true);
      }
      const e = Array.from({ length: SECURE_SECTORS }, (_, s) => flash.eraseCount(s));
      if (e.every((v, s) => v > lastErase[s]!)) {
        eraseRounds++; // every ring sector erased again: the log went round the ring
        lastErase = e;
      }
    }
  } catch (e) {
    if (e instanceof Failure) {
      t.fail(e.message);
      return;
    }
    throw e;
  }

  sound('the end', true);
  const log = sa.auditLog(0, 1e9);
  const sec = log.filter((e) => SECURITY_EVENTS.has(e.type)).length;
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  t.comment(
    `${SOAK_OPS} ops in ${secs} s: ${n.events} audit events written (rings of ${BOUNDS.securityEvents} + ${BOUNDS.routineEvents}), ` +
      `${n.remembered} batch ids remembered (${n.aborted} lost to a cut, their staging dropped), ${n.compactionOps} ops compacted; ` +
      `${n.cuts} power cuts, ${n.cutsInCompaction} inside a compaction, ${n.plainCuts} in a plain append; ` +
      `after a cut the op was lost ${n.old} times and kept ${n.neu} times; ${n.boots} boots; ` +
      `erase counts ${Array.from({ length: SECURE_SECTORS }, (_, s) => flash.eraseCount(s)).join(' ')} (${eraseRounds} rounds of the ring)`,
  );
  t.pass(`${n.boots} boots, every one with the identity, every live id and bounded rings, health clean`);
  t.ok(n.cutsInCompaction >= SOAK_OPS / 40, `${n.cutsInCompaction} cuts landed inside a compaction`);
  t.ok(n.events >= 0.3 * SOAK_OPS, `${n.events} audit events: the rings filled ${Math.floor(n.events / (BOUNDS.securityEvents + BOUNDS.routineEvents))} times over`);
  t.ok(n.remembered >= 0.3 * SOAK_OPS, `${n.remembered} batch ids: the live set turned over ${Math.floor(n.remembered / KEEP_BATCH_IDS)} times`);
  t.equal(sec, BOUNDS.securityEvents, 'the security ring is full');
  t.equal(log.length - sec, BOUNDS.routineEvents, 'the routine ring is full');
  t.ok(live.length >= KEEP_BATCH_IDS - 3, `${live.length} live batch ids at the end, all resolvable`);
  t.equal(sa.adminCounter(), admin, 'admin counter as last set');
  t.same(sa.failedAuth(), failed, 'failed-auth as last set');
});
