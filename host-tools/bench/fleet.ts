// `qkt bench fleet` (issue 13): how many emulated terminals one machine holds in front of one
// master station. Each step is a whole `qkt fleet run` (enrolment, export, carrier, injection,
// one mutual-TLS connection per terminal, traffic; the station the real `qkt station run` in its
// own process), each in a process of its own: at one message per second per terminal, and at
// the paper's one per T. A step holds when the access delay's p99 is under the bound and no
// message was late or failed; the sweep goes on to the first size that loses messages. Memory is
// the fleet process' RSS over N (the station's process is not in it). The two station stores side
// by side at one size.
import { cpus, loadavg } from 'node:os';
import { spawn } from 'node:child_process';
import { qktBin } from './start.js';
import type { FleetResult } from '../fleet/fleet.js';
import type { StationStoreKind } from '../station/open-store.js';

export interface FleetStep {
  terminals: number;
  store: StationStoreKind;
  ratePerSecond: number;
  seconds: number;
  messages: number;
  late: number;
  failed: number;
  medianMs: number | null;
  p99Ms: number | null;
  /** Messages opened a second over the traffic phase. */
  openedPerSecond: number;
  rssPerTerminalBytes: number;
  setupSeconds: number;
  keysAgree: boolean;
  holds: boolean;
}

export interface FleetBenchResult {
  bench: 'fleet';
  date: string;
  node: string;
  machine: string;
  p99BoundMs: number;
  tMs: number;
  /** One message per second each. */
  perSecond: { steps: FleetStep[]; largestHolding: number | null };
  /** One message per T each (the paper's pace). */
  perT: { steps: FleetStep[]; largestHolding: number | null };
  /** The two station stores at one size and one message a second. */
  stores: FleetStep[];
}

export const P99_BOUND_MS = 20;

function step(r: FleetResult, boundMs: number): FleetStep {
  const o = r.overall;
  const p99 = o.accessDelayMs?.p99 ?? null;
  return {
    terminals: r.terminals,
    store: r.store,
    ratePerSecond: r.ratePerSecond ?? 0,
    seconds: r.seconds,
    messages: o.messages,
    late: o.late,
    failed: o.failed,
    medianMs: o.accessDelayMs?.median ?? null,
    p99Ms: p99,
    openedPerSecond: Math.round((o.delivered + o.late) / r.trafficSeconds),
    rssPerTerminalBytes: r.rss.perTerminalBytes,
    setupSeconds: r.setupSeconds,
    keysAgree: r.keysAgree,
    holds: r.keysAgree && o.late === 0 && o.failed === 0 && p99 !== null && p99 < boundMs,
  };
}

/** One step: `qkt fleet run --json` in a process of its own (its RSS is the step's alone). */
async function fleetRun(args: string[]): Promise<FleetResult> {
  const child = spawn(process.execPath, [qktBin(), 'fleet', 'run', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  try {
    return JSON.parse(out) as FleetResult;
  } catch {
    throw new Error(`qkt fleet run ${args.join(' ')} exited ${code}: ${err.trim().split('\n').slice(-3).join(' / ')}`);
  }
}

export async function benchFleet(o: { quick: boolean; seed?: number; log: (line: string) => void }): Promise<FleetBenchResult> {
  const tMs = 60_000;
  const sizes = o.quick ? [20, 50] : [250, 500, 1000, 2000, 4000, 10_000];
  const seconds = o.quick ? 3 : 20;
  const run = async (terminals: number, rate: string, store: StationStoreKind, secs: number) => {
    o.log(`fleet: ${terminals} terminals, ${rate} messages each, ${store} store, ${secs} s...`);
    const r = await fleetRun(['--terminals', String(terminals), '--seconds', String(secs), '--t', `${tMs / 1000}s`, '--seed', String(o.seed ?? 1), '--rate', rate, '--store', store]);
    const s = step(r, P99_BOUND_MS);
    o.log(`  median ${s.medianMs ?? '-'} ms, p99 ${s.p99Ms ?? '-'} ms, ${s.late} late, ${s.failed} failed, ${s.openedPerSecond} opened/s, ${Math.round(s.rssPerTerminalBytes / 1024)} KiB/terminal: ${s.holds ? 'holds' : 'does not hold'}`);
    return s;
  };
  // Every size up to the first that loses messages (late or refused): the p99 bound may fail
  // before that, and the sizes between show where the station's capacity ends.
  const sweep = async (rate: string, secs: number) => {
    const steps: FleetStep[] = [];
    for (const n of sizes) {
      const s = await run(n, rate, 'sqlite', secs);
      steps.push(s);
      if (s.late > 0 || s.failed > 0 || !s.keysAgree) break;
    }
    const held = steps.filter((s) => s.holds).map((s) => s.terminals);
    return { steps, largestHolding: held.length > 0 ? Math.max(...held) : null };
  };
  const perSecond = await sweep('1', seconds);
  // One per T (a minute): a run of two T, so each terminal sends about two.
  const perT = await sweep('1/T', o.quick ? 6 : 120);
  const storeSize = o.quick ? 20 : 200;
  const stores = [await run(storeSize, '1', 'files', seconds), await run(storeSize, '1', 'sqlite', seconds)];
  return { bench: 'fleet', date: new Date().toISOString(), node: process.version, machine: `${cpus()[0]?.model ?? 'unknown'} x ${cpus().length}, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} at the end`, p99BoundMs: P99_BOUND_MS, tMs, perSecond, perT, stores };
}

export function formatFleetBench(r: FleetBenchResult): string {
  const ms = (x: number | null) => (x === null ? '-' : x.toFixed(1));
  const row = (s: FleetStep) =>
    `| ${s.terminals} | ${s.store} | ${+s.ratePerSecond.toPrecision(3)} | ${s.messages} | ${s.late} | ${s.failed} | ${ms(s.medianMs)} | ${ms(s.p99Ms)} | ${s.openedPerSecond} | ${Math.round(s.rssPerTerminalBytes / 1024)} | ${s.setupSeconds.toFixed(0)} | ${s.keysAgree ? 'yes' : 'NO'} | ${s.holds ? 'yes' : 'no'} |`;
  const head = [
    '| terminals | store | messages/s each | messages | late | failed | delay median ms | delay p99 ms | opened/s | RSS KiB per terminal | setup s | keys agree | holds |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  return [
    `### A fleet on one machine (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    `Each row is one \`qkt fleet run\`: N emulated modules in one process, each enrolled, loaded through a carrier and injected, with one mutual-TLS connection to the master station (\`qkt station run\`, SQLite store, in its own process), sending OTP messages of its class's shapes (the five classes evenly). A size holds when no message is late (3 s) or refused and the access delay's p99 is under ${r.p99BoundMs} ms. RSS per terminal is the fleet process' growth over N (each module's 88 KiB flash image, its key store, included). Machine: ${r.machine}.`,
    '',
    `One message per second per terminal: largest holding ${r.perSecond.largestHolding ?? 'none'}.`,
    '',
    ...head,
    ...r.perSecond.steps.map(row),
    '',
    `One message per T (${r.tMs / 1000} s) per terminal: largest holding ${r.perT.largestHolding ?? 'none'}.`,
    '',
    ...head,
    ...r.perT.steps.map(row),
    '',
    'The two station stores, same fleet, one message per second each:',
    '',
    ...head,
    ...r.stores.map(row),
    '',
  ].join('\n');
}
