// Model-based test of the generic record log (firmware/flash/record-log.ts, issue 8 item 5) with a
// tiny owner: a map of key -> value records (SET, DEL), opaque BLOB records of any size the log
// takes, and a checkpoint of the live map (a counter record, then one record per key) that stays
// within the log's checkpoint budget by construction (few keys, short values). fast-check
// `fc.commands`: set, delete, blob (also one too large: TOO_LARGE, nothing written), bursts of
// appends (many rollovers), compact, reboot (a new log object scans the flash), a power cut
// (faults.cutAfter(k, torn|clean|after, seed)) armed for an append or compact, and a bit flip in
// an old ring sector (not the live one). After every command a fresh scan of the flash replays to
// the model's state (after a cut: the state before or after the interrupted append), the owner's
// RAM state is the model's, the log never throws for lack of room, and nothing outside its ring
// sectors changes. A finding of this test (a ring of 2 sectors lost to two cuts in a row) is fixed
// and kept as a regression test at the end. Runs: QKT_FUZZ_RUNS (default
// 200); replay with QKT_FUZZ_SEED / QKT_FUZZ_PATH / QKT_FUZZ_REPLAY, printed with a failure.

import t from 'tap';
import type { Test } from 'tap';
import fc from 'fast-check';
import { envInt, fuzzParams, replayLine } from '../test-support/fuzz.js';
import { NorFlash } from './nor-flash.js';
import { PowerCutError } from './errors.js';
import { prng, type CutMode } from './faults.js';
import { decodeHeader, encodeHeader, readHeader, RecordLog, RecordLogError, UNIT, unitsFor, type LogRecord, type NewRecord } from './record-log.js';

t.setTimeout(600_000);

// ---------------------------------------------------------------- run control

const RUNS = Math.max(1, envInt('QKT_FUZZ_RUNS') ?? 200);
const FILE = 'firmware/flash/record-log.model.test.ts';

function runProperty<Ts>(t: Test, prop: fc.IProperty<Ts>, numRuns: number): boolean {
  const t0 = Date.now();
  const out = fc.check(prop, fuzzParams(numRuns) as fc.Parameters<Ts>);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (out.failed) {
    t.fail(
      `${fc.defaultReportMessage(out)}\n` +
        `error: ${out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance)}\n` +
        `replay: ${replayLine(out, FILE)}`,
    );
    return false;
  }
  t.pass(`${out.numRuns} sequences in ${secs} s (seed ${out.seed})`);
  return true;
}

class Failure extends Error {
  override readonly name = 'ModelFailure';
}
function check(cond: unknown, msg: () => string): asserts cond {
  if (!cond) throw new Failure(msg());
}

// ---------------------------------------------------------------- the owner

const MAGIC = 0x4d4c_5451; // 'QTLM'
const VERSION = 3;
const REC = { CK_COUNT: 0x01, CK_KV: 0x02, SET: 0x10, DEL: 0x11, BLOB: 0x12 } as const;

/** The owner's state: the live map, how many records were applied, and a digest of the last blob. */
interface MapState {
  map: Map<number, Uint8Array>;
  n: number;
  blob: number;
}

const emptyState = (): MapState => ({ map: new Map(), n: 0, blob: 0 });
const cloneMapState = (s: MapState): MapState => ({ map: new Map([...s.map].map(([k, v]) => [k, Uint8Array.from(v)])), n: s.n, blob: s.blob });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
function stateText(s: MapState): string {
  const kv = [...s.map].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k}=${hex(v)}`);
  return `n=${s.n} blob=${s.blob.toString(16)} {${kv.join(' ')}}`;
}
/** FNV-1a over the blob bytes: enough to tell one blob from another. */
function digest(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h;
}

function kvPayload(k: number, v: Uint8Array): Uint8Array {
  return Uint8Array.from([k, v.length, ...v]);
}

/** The checkpoint: fresh buffers every time (the log wipes them once written). */
function checkpointOf(s: MapState): NewRecord[] {
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, s.n, true);
  new DataView(head.buffer).setUint32(4, s.blob, true);
  const out: NewRecord[] = [{ type: REC.CK_COUNT, payload: head }];
  for (const [k, v] of [...s.map].sort((a, b) => a[0] - b[0])) out.push({ type: REC.CK_KV, payload: kvPayload(k, v) });
  return out;
}

/** Apply one record (as replayed: payloads are 0xFF padded, so lengths are explicit). */
function applyRecord(s: MapState, type: number, p: Uint8Array): void {
  switch (type) {
    case REC.CK_COUNT: {
      const dv = new DataView(p.buffer, p.byteOffset, 8);
      s.n = dv.getUint32(0, true);
      s.blob = dv.getUint32(4, true);
      return;
    }
    case REC.CK_KV:
      s.map.set(p[0]!, p.slice(2, 2 + p[1]!));
      return;
    case REC.SET:
      s.map.set(p[0]!, p.slice(2, 2 + p[1]!));
      s.n++;
      return;
    case REC.DEL:
      s.map.delete(p[0]!);
      s.n++;
      return;
    case REC.BLOB: {
      const len = p[0]! | (p[1]! << 8);
      s.blob = digest(p.subarray(2, 2 + len));
      s.n++;
      return;
    }
    default:
      throw new Failure(`replay: unknown record type ${type}`);
  }
}

const bytesOf = (rec: LogRecord) => new Uint8Array(rec.payload.buffer, rec.payload.byteOffset, rec.payload.byteLength);

// ---------------------------------------------------------------- configurations

interface Cfg {
  name: string;
  geometry: { size: number; sectorSize: number; pageSize: number };
  firstSector: number;
  sectorCount: number;
  keys: number;
  maxValue: number;
}
// Checkpoint at most 1 + keys * unitsFor(2 + maxValue) units: exactly the budget (15) in the first.
const RING2: Cfg = { name: 'ring 2 x 512, page 64', geometry: { size: 4 * 512, sectorSize: 512, pageSize: 64 }, firstSector: 1, sectorCount: 2, keys: 7, maxValue: 24 };
const CFGS: Cfg[] = [
  { name: 'ring 3 x 512, page 64', geometry: { size: 5 * 512, sectorSize: 512, pageSize: 64 }, firstSector: 1, sectorCount: 3, keys: 7, maxValue: 24 },
  { name: 'ring 3 x 1024, page 32', geometry: { size: 6 * 1024, sectorSize: 1024, pageSize: 32 }, firstSector: 2, sectorCount: 3, keys: 7, maxValue: 56 },
  { name: 'ring 4 x 512, page 16', geometry: { size: 6 * 512, sectorSize: 512, pageSize: 16 }, firstSector: 1, sectorCount: 4, keys: 5, maxValue: 24 },
  RING2,
];

// ---------------------------------------------------------------- model and real system

interface Stats {
  appends: number;
  rollovers: number;
  cutsArmed: number;
  cutsFired: number;
  cutsOld: number;
  cutsNew: number;
  flips: number;
  tooLarge: number;
}
const stats: Stats = { appends: 0, rollovers: 0, cutsArmed: 0, cutsFired: 0, cutsOld: 0, cutsNew: 0, flips: 0, tooLarge: 0 };

interface LM {
  cfg: Cfg;
  st: MapState;
  /** largest record the log takes, in payload bytes */
  maxPayload: number;
}

interface Real {
  cfg: Cfg;
  flash: NorFlash;
  log: RecordLog;
  owner: MapState;
  /** the bytes outside the ring, which the log must never touch */
  outside: Array<[number, Uint8Array]>;
}

function newLog(flash: NorFlash, cfg: Cfg, owner: () => MapState): RecordLog {
  return new RecordLog(flash, { firstSector: cfg.firstSector, sectorCount: cfg.sectorCount, magic: MAGIC, version: VERSION, checkpoint: () => checkpointOf(owner()) });
}

/** A new log object and owner from what the flash holds (reboot). Reads only. */
function boot(r: Real): void {
  const owner = emptyState();
  const log = newLog(r.flash, r.cfg, () => r.owner);
  const { records, damagedUnits } = log.scan();
  check(damagedUnits === 0, () => `scan reports ${damagedUnits} damaged units`);
  for (const rec of records) applyRecord(owner, rec.type, bytesOf(rec));
  r.log = log;
  r.owner = owner;
}

/** What a fresh scan of the flash replays to (a second, read-only log object). */
function replay(r: Real): MapState {
  const s = emptyState();
  const log = newLog(r.flash, r.cfg, () => s);
  const muts = r.flash.faults.mutations;
  for (const rec of log.scan().records) applyRecord(s, rec.type, bytesOf(rec));
  check(r.flash.faults.mutations === muts, () => 'a scan wrote to the flash');
  return s;
}

function verify(m: LM, r: Real, what: string): void {
  const want = stateText(m.st);
  const ram = stateText(r.owner);
  check(ram === want, () => `after ${what}: owner RAM state differs from the model\n  owner: ${ram}\n  model: ${want}`);
  const got = stateText(replay(r));
  check(got === want, () => `after ${what}: replayed state differs from the model\n  replay: ${got}\n  model:  ${want}`);
  for (const [addr, bytes] of r.outside) {
    const now = r.flash.peek(addr, bytes.length);
    check(Buffer.compare(now, bytes) === 0, () => `after ${what}: the log wrote outside its ring sectors (at 0x${addr.toString(16)})`);
  }
}

// ---------------------------------------------------------------- operations

type Op =
  | { op: 'set'; k: number; len: number; seed: number }
  | { op: 'del'; k: number }
  | { op: 'blob'; len: number; over: number; seed: number }
  | { op: 'compact' };

function opText(o: Op): string {
  const { op, ...rest } = o;
  const args = Object.entries(rest).map(([k, v]) => `${k}: ${v}`);
  return `${op}(${args.length ? `{ ${args.join(', ')} }` : ''})`;
}

function bytesFrom(seed: number, n: number): Uint8Array {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

/** The record an op appends (compact: none), in terms of the model's limits. */
function recordOf(m: LM, o: Op): NewRecord | undefined {
  switch (o.op) {
    case 'set':
      return { type: REC.SET, payload: kvPayload(o.k % m.cfg.keys, bytesFrom(o.seed, o.len % (m.cfg.maxValue + 1))) };
    case 'del':
      return { type: REC.DEL, payload: Uint8Array.of(o.k % m.cfg.keys) };
    case 'blob': {
      const max = m.maxPayload - 2;
      const len = o.over > 0 ? max + o.over : o.len % (max + 1);
      const p = new Uint8Array(2 + len);
      p[0] = len & 0xff;
      p[1] = len >> 8;
      p.set(bytesFrom(o.seed, len), 2);
      return { type: REC.BLOB, payload: p };
    }
    case 'compact':
      return undefined;
  }
}

/** The model's state after an op, or 'TOO_LARGE'. */
function expectOp(m: LM, o: Op): MapState | 'TOO_LARGE' {
  const rec = recordOf(m, o);
  if (!rec) return cloneMapState(m.st);
  if (rec.payload.length > m.maxPayload) return 'TOO_LARGE';
  const s = cloneMapState(m.st);
  applyRecord(s, rec.type, rec.payload);
  return s;
}

/** Run an op on the log and its owner (append, sync, apply), as an owner does. */
function execOp(m: LM, r: Real, o: Op): void {
  const rec = recordOf(m, o);
  const gen = r.log.position.ringSeq;
  if (!rec) {
    r.log.compact();
    r.flash.sync();
  } else {
    r.log.append(rec);
    r.flash.sync();
    applyRecord(r.owner, rec.type, rec.payload);
    stats.appends++;
  }
  if (r.log.position.ringSeq !== gen) stats.rollovers++;
}

/** One op without a cut: the model's outcome; a refusal (TOO_LARGE) writes nothing; anything else thrown is a failure. */
function step(m: LM, r: Real, o: Op): void {
  const exp = expectOp(m, o);
  const what = opText(o);
  const muts = r.flash.faults.mutations;
  try {
    execOp(m, r, o);
  } catch (e) {
    if (e instanceof RecordLogError) {
      check(exp === 'TOO_LARGE' && e.code === 'TOO_LARGE', () => `${what}: the log threw ${e.code} (${e.message}); the model expects ${exp === 'TOO_LARGE' ? exp : 'success'}`);
      check(r.flash.faults.mutations === muts, () => `${what}: refused TOO_LARGE but wrote to the flash`);
      stats.tooLarge++;
      verify(m, r, what);
      return;
    }
    throw e;
  }
  check(exp !== 'TOO_LARGE', () => `${what}: a record of ${recordOf(m, o)!.payload.length} bytes was taken, over the limit`);
  m.st = exp;
  verify(m, r, what);
}

class OpCommand implements fc.Command<LM, Real> {
  constructor(readonly o: Op) {}
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    step(m, r, this.o);
  }
  toString(): string {
    return opText(this.o);
  }
}

/** Many appends in a row: rollovers galore. */
class BurstCommand implements fc.Command<LM, Real> {
  constructor(
    readonly count: number,
    readonly seed: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    const rnd = prng(this.seed);
    for (let i = 0; i < this.count; i++) {
      const x = Math.floor(rnd() * 1e9);
      const o: Op = x % 5 === 0 ? { op: 'del', k: x % 11 } : x % 7 === 0 ? { op: 'blob', len: x % 997, over: 0, seed: x } : { op: 'set', k: x % 13, len: x % 61, seed: x };
      step(m, r, o);
    }
  }
  toString(): string {
    return `burst(${this.count}, seed ${this.seed})`;
  }
}

/** The worst case: every key at its longest value (the checkpoint at its largest), then the largest record, twice. */
class WorstCaseCommand implements fc.Command<LM, Real> {
  constructor(readonly seed: number) {}
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    for (let k = 0; k < m.cfg.keys; k++) step(m, r, { op: 'set', k, len: m.cfg.maxValue, seed: this.seed + k });
    for (let i = 0; i < 2; i++) step(m, r, { op: 'blob', len: m.maxPayload - 2, over: 0, seed: this.seed + i });
  }
  toString(): string {
    return `worstCase(seed ${this.seed})`;
  }
}

class RebootCommand implements fc.Command<LM, Real> {
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    boot(r);
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

/** A power cut armed for one op: if it lands, reboot; the replay is the state before or after the op. */
class CutCommand implements fc.Command<LM, Real> {
  constructor(
    readonly o: Op,
    readonly cut: CutSpec,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    const exp = expectOp(m, this.o);
    stats.cutsArmed++;
    r.flash.faults.cutAfter(this.cut.k, this.cut.mode, this.cut.seed);
    let fired = false;
    try {
      step(m, r, this.o);
    } catch (e) {
      if (!(e instanceof PowerCutError)) throw e;
      fired = true;
    } finally {
      r.flash.faults.cancelCut();
    }
    if (!fired) return;
    stats.cutsFired++;
    const what = `cut (${this.cut.k} ${this.cut.mode} ${this.cut.seed}) in ${opText(this.o)}`;
    check(exp !== 'TOO_LARGE', () => `${what}: a refused append wrote to the flash`);
    r.flash.reboot();
    boot(r);
    const got = stateText(r.owner);
    if (got === stateText(m.st)) stats.cutsOld++;
    else {
      check(got === stateText(exp), () => `${what}: replayed state is neither before nor after the op\n  replay: ${got}\n  before: ${stateText(m.st)}\n  after:  ${stateText(exp)}`);
      stats.cutsNew++;
      m.st = exp;
    }
    verify(m, r, what);
  }
  toString(): string {
    return `powerCut(cutAfter(${this.cut.k}, '${this.cut.mode}', ${this.cut.seed})) during ${opText(this.o)}`;
  }
}

/** Flip one stored bit in a ring sector that is not the live one (in the header only of a sector whose header is valid). */
class FlipCommand implements fc.Command<LM, Real> {
  constructor(
    readonly pick: number,
    readonly offset: number,
    readonly bit: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: LM, r: Real): void {
    // The live sector is the one a scan reads (the newest valid header, or a newer one whose
    // header is broken over a whole checkpoint); every other ring sector is old.
    const probe = newLog(r.flash, r.cfg, () => m.st);
    probe.scan();
    const live = probe.position.sector - r.cfg.firstSector;
    const valid = new Set(probe.generations().map(([i]) => i));
    const others = [...Array(r.cfg.sectorCount).keys()].filter((i) => i !== live);
    const idx = others[this.pick % others.length]!;
    const S = r.cfg.geometry.sectorSize;
    // A sector without a valid header (torn rollover, blank) is not flipped in its header: one
    // flip completing a header torn one bit short is two faults, outside the log's argument.
    const lo = valid.has(idx) ? 0 : UNIT;
    const off = lo + (this.offset % (S - lo));
    r.flash.flipStoredBit((r.cfg.firstSector + idx) * S + off, this.bit);
    stats.flips++;
    verify(m, r, `${this}`);
  }
  toString(): string {
    return `flipOldSector({ pick: ${this.pick}, offset: ${this.offset}, bit: ${this.bit} })`;
  }
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('set' as const), k: fc.nat(15), len: fc.nat(64), seed: fc.integer({ min: 1, max: 0xffff }) }), weight: 6 },
  { arbitrary: fc.record({ op: fc.constant('del' as const), k: fc.nat(15) }), weight: 2 },
  {
    arbitrary: fc.record({
      op: fc.constant('blob' as const),
      len: fc.nat(600),
      over: fc.oneof({ arbitrary: fc.constant(0), weight: 9 }, { arbitrary: fc.integer({ min: 1, max: 40 }), weight: 1 }),
      seed: fc.integer({ min: 1, max: 0xffff }),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ op: fc.constant('compact' as const) }), weight: 1 },
);
const cutArb: fc.Arbitrary<CutSpec> = fc.record({
  k: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 3 }, { arbitrary: fc.integer({ min: 4, max: 24 }), weight: 1 }),
  mode: fc.constantFrom<CutMode>('torn', 'clean', 'after'),
  seed: fc.integer({ min: 1, max: 0xffff }),
});
const commandArb: fc.Arbitrary<fc.Command<LM, Real>> = fc.oneof(
  { arbitrary: opArb.map((o) => new OpCommand(o)), weight: 8 },
  { arbitrary: fc.tuple(fc.integer({ min: 5, max: 60 }), fc.integer({ min: 1, max: 0xffff })).map(([n, s]) => new BurstCommand(n, s)), weight: 2 },
  { arbitrary: fc.tuple(opArb, cutArb).map(([o, c]) => new CutCommand(o, c)), weight: 5 },
  { arbitrary: fc.tuple(fc.nat(7), fc.nat(4095), fc.nat(7)).map(([p, o, b]) => new FlipCommand(p, o, b)), weight: 2 },
  { arbitrary: fc.integer({ min: 1, max: 0xffff }).map((s) => new WorstCaseCommand(s)), weight: 1 },
  { arbitrary: fc.constant(new RebootCommand()), weight: 1 },
);

function setup(cfg: Cfg): { model: LM; real: Real } {
  const flash = NorFlash.memory(cfg.geometry);
  const S = cfg.geometry.sectorSize;
  // Sectors around the ring hold a pattern the log must leave alone.
  const outside: Array<[number, Uint8Array]> = [];
  for (let s = 0; s < cfg.geometry.size / S; s++) {
    if (s >= cfg.firstSector && s < cfg.firstSector + cfg.sectorCount) continue;
    const b = bytesFrom(s + 77, S);
    for (let a = 0; a < S; a += cfg.geometry.pageSize) flash.program(s * S + a, b.subarray(a, a + cfg.geometry.pageSize));
    outside.push([s * S, b]);
  }
  const real: Real = { cfg, flash, log: undefined as unknown as RecordLog, owner: emptyState(), outside };
  real.log = newLog(flash, cfg, () => real.owner);
  const budget = real.log.checkpointBudget;
  const worst = unitsFor(8) + cfg.keys * unitsFor(2 + cfg.maxValue);
  check(worst <= budget, () => `configuration ${cfg.name}: worst checkpoint ${worst} units over the budget ${budget}`);
  // A fresh ring: kill (header-first), then the first checkpoint.
  real.log.kill();
  real.log.create(checkpointOf(real.owner));
  flash.sync();
  const maxUnits = S / UNIT - 1 - budget;
  const model: LM = { cfg, st: emptyState(), maxPayload: maxUnits * UNIT - 6 };
  return { model, real };
}

const replayPath = process.env.QKT_FUZZ_REPLAY;
const commandsArb = fc.commands([commandArb], { maxCommands: 80, size: 'max', ...(replayPath ? { replayPath } : {}) });

t.test(`record log model: fc.commands, numRuns=${RUNS}`, async (t) => {
  const t0 = Date.now();
  const prop = fc.property(fc.constantFrom(...CFGS), commandsArb, (cfg, cmds) => {
    fc.modelRun(() => setup(cfg), cmds);
  });
  const ok = runProperty(t, prop, RUNS);
  t.comment(
    `${stats.appends} appends, ${stats.rollovers} rollovers, ${stats.cutsFired}/${stats.cutsArmed} armed cuts fired ` +
      `(${stats.cutsOld} replayed the old state, ${stats.cutsNew} the new), ${stats.flips} old-sector bit flips, ` +
      `${stats.tooLarge} TOO_LARGE refusals, ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
  if (ok && RUNS >= 100 && !process.env.QKT_FUZZ_PATH) {
    t.ok(stats.cutsOld > 0 && stats.cutsNew > 0, 'cuts left both the old and the new state');
    t.ok(stats.rollovers > RUNS, 'rollovers happened');
    t.ok(stats.tooLarge > 0, 'oversized records were refused');
  }
});

// ---------------------------------------------------------------- a finding (from the property above), fixed

// A ring of two sectors lost the whole log to two power cuts in a row (since record-log.ts reads a
// newest sector whose header is broken over a whole checkpoint): a rollover is cut while
// programming the new sector's header (torn); the reboot reads that sector (its checkpoint
// verifies under the next generation) and marks it dirty; the next append rolls over from it into
// the other sector, the only one with a valid header, and erases it; a cut there leaves no valid
// header at all: scan fails NOT_FORMATTED (a key pool with journalSectors: 2 no longer mounts).
// Found with QKT_FUZZ_RUNS=20000 (seed -668914551, failed after 146 sequences), shrunk by
// fast-check to these five commands (replayPath ///////j:/D); the last cut is made 'after' here
// (the erase completes) so the sequence does not depend on the torn-erase pattern. Fixed: the torn
// header is completed in place (programming it only clears bits), with no rollover.
t.test('a ring of two sectors survives two power cuts in a row', async (t) => {
  const { model, real } = setup(RING2);
  const cmds: Array<fc.Command<LM, Real>> = [
    new BurstCommand(47, 19392),
    new CutCommand({ op: 'set', k: 0, len: 0, seed: 1 }, { k: 1, mode: 'torn', seed: 1 }),
    new OpCommand({ op: 'set', k: 1, len: 9, seed: 1 }),
    new CutCommand({ op: 'set', k: 0, len: 9, seed: 1 }, { k: 10, mode: 'torn', seed: 2 }), // torn header of the rollover
    new CutCommand({ op: 'set', k: 0, len: 0, seed: 1 }, { k: 1, mode: 'after', seed: 1 }), // the old sector erased
  ];
  try {
    fc.modelRun(() => ({ model, real }), cmds);
    t.pass('the log survived');
  } catch (e) {
    if (!(e instanceof Failure) && !(e instanceof RecordLogError)) throw e;
    t.fail(`${e instanceof RecordLogError ? `${e.code}: ` : ''}${e.message}\n  sequence: ${cmds.map(String).join(', ')}`);
  }
});

// A second finding of the property above (seed 1890622378, replayPath sZ/t:N; it failed CI once):
// a burst, then two torn cuts leave the newest sector of a ring of two with a torn header over a
// whole checkpoint; scan reads it as generation n + 1 because the other sector's header says n.
// That old header is then the only thing naming the generation, and one flipped bit in it lost
// the whole log (NOT_FORMATTED). Fixed: a header with one wrong bit is read as the header it was
// (readHeader), and the active sector's gets rewritten on the first write.
t.test('a ring of two sectors survives a torn header and a flip in the other header', async (t) => {
  const { model, real } = setup(RING2);
  const cmds: Array<fc.Command<LM, Real>> = [
    new BurstCommand(32, 3113),
    new CutCommand({ op: 'del', k: 0 }, { k: 1, mode: 'torn', seed: 1 }),
    new CutCommand({ op: 'blob', len: 25, over: 0, seed: 1 }, { k: 10, mode: 'torn', seed: 1 }), // torn header of the rollover
    new FlipCommand(0, 0, 0), // bit 0 of the other (older) sector's magic
  ];
  try {
    fc.modelRun(() => ({ model, real }), cmds);
    t.pass('the log survived');
  } catch (e) {
    if (!(e instanceof Failure) && !(e instanceof RecordLogError)) throw e;
    t.fail(`${e instanceof RecordLogError ? `${e.code}: ` : ''}${e.message}\n  sequence: ${cmds.map(String).join(', ')}`);
  }
  // Neither header verifies as stored (the case of the finding); the next append completes the
  // torn one, and the log goes on from there.
  const S = RING2.geometry.sectorSize;
  const verified = () => [0, 1].filter((i) => decodeHeader(real.flash.peek((RING2.firstSector + i) * S, UNIT), MAGIC, VERSION) !== undefined).length;
  t.equal(verified(), 0, 'before: no header verifies as stored');
  new OpCommand({ op: 'set', k: 2, len: 3, seed: 5 }).run(model, real);
  t.equal(verified(), 1, 'after one append: the newest header verifies');
  new RebootCommand().run(model, real);
  t.pass('a reboot replays the state');
});

t.test('readHeader: one wrong bit anywhere is put right; blank, killed and two wrong bits are not', async (t) => {
  const good = encodeHeader(MAGIC, 0x0102_0304, VERSION);
  let fixed = 0;
  for (let b = 0; b < UNIT * 8; b++) {
    const h = good.slice();
    h[b >> 3]! ^= 1 << (b & 7);
    const r = readHeader(h, MAGIC, VERSION);
    if (r?.fixed && r.gen === 0x0102_0304) fixed++;
  }
  t.equal(fixed, 128, 'all 128 one-bit errors are put right');
  t.same(readHeader(good, MAGIC, VERSION), { gen: 0x0102_0304, fixed: false });
  t.equal(readHeader(new Uint8Array(UNIT).fill(0xff), MAGIC, VERSION), undefined, 'blank');
  t.equal(readHeader(new Uint8Array(UNIT), MAGIC, VERSION), undefined, 'killed');
  t.equal(readHeader(encodeHeader(MAGIC, 7, VERSION + 1), MAGIC, VERSION), undefined, 'another version');
  let two = 0;
  for (let a = 0; a < UNIT * 8; a++) {
    for (let b = a + 1; b < UNIT * 8; b++) {
      const h = good.slice();
      h[a >> 3]! ^= 1 << (a & 7);
      h[b >> 3]! ^= 1 << (b & 7);
      if (readHeader(h, MAGIC, VERSION) !== undefined) two++;
    }
  }
  t.equal(two, 0, 'none of the 8,128 two-bit errors reads as a header');
});
