// `qkt bench start`: how long the CLI takes to start and exit on help and usage paths and on a
// real `qkt status` against an emulated terminal on TCP (spawn to exit, median of N runs), beside
// bare `node -e 0` in the same run: the ratio is the figure.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface StartCase {
  name: string;
  args: string[];
  /** The exit code the case must end with (a bench of a failing start measures nothing). */
  exitCode: number;
  medianMs: number;
  minMs: number;
  /** medianMs over bare node's median in the same run. */
  ratioToNode: number;
}

export interface StartBenchResult {
  runs: number;
  node: string;
  bareNodeMedianMs: number;
  cases: StartCase[];
}

/** bin/qkt.js, from the source tree (host-tools/bench) or the build (dist/host-tools/bench). */
export function qktBin(): string {
  for (const rel of ['../../bin/qkt.js', '../../../bin/qkt.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('bin/qkt.js not found beside the benchmarks');
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** A blank emulated terminal (`terminal run --create-image`) on 127.0.0.1, for a real `qkt status`; stop() ends it by pid. */
async function startTerminal(bin: string): Promise<{ port: string; stop: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-start-'));
  const p = spawn(process.execPath, [bin, 'terminal', 'run', '--flash', join(dir, 't.img'), '--create-image', '--listen', 'tcp:127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const stop = () => {
    p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await new Promise<string>((resolve, reject) => {
      createInterface({ input: p.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { port: string }).port));
      p.once('exit', (code) => reject(new Error(`bench start: terminal run exited ${code}`)));
    });
    return { port, stop };
  } catch (e) {
    stop();
    throw e;
  }
}

export async function benchStart(o: { runs: number; log?: (line: string) => void }): Promise<StartBenchResult> {
  const bin = qktBin();
  const terminal = await startTerminal(bin);
  try {
    return measure(bin, terminal.port, o);
  } finally {
    terminal.stop();
  }
}

function measure(bin: string, terminalPort: string, o: { runs: number; log?: (line: string) => void }): StartBenchResult {
  const cases = [
    { name: 'node -e 0', argv: ['-e', '0'], exitCode: 0 },
    { name: 'qkt --help', argv: [bin, '--help'], exitCode: 0 },
    { name: 'qkt status --help', argv: [bin, 'status', '--help'], exitCode: 0 },
    { name: 'qkt status --port tcp: (a blank emulated terminal)', argv: [bin, 'status', '--port', terminalPort], exitCode: 0 },
    { name: 'qkt kmd (usage error: the group list)', argv: [bin, 'kmd'], exitCode: 2 },
    { name: 'qkt carrier load ... T2 (usage error)', argv: [bin, 'carrier', 'load', '--carrier', 'x', '--terminal', 'T1', 'T2'], exitCode: 2 },
  ];
  o.log?.(`start: ${cases.length} cases x ${o.runs} runs, interleaved...`);
  const times = cases.map(() => [] as number[]);
  // Interleaved rounds: a burst of load on the machine hits every case alike.
  for (let r = 0; r < o.runs; r++) {
    cases.forEach((c, i) => {
      const t0 = performance.now();
      const p = spawnSync(process.execPath, c.argv, { stdio: 'ignore' });
      times[i]!.push(performance.now() - t0);
      if (p.status !== c.exitCode) throw new Error(`bench start: ${c.name} exited ${p.status}, expected ${c.exitCode}`);
    });
  }
  const node = median(times[0]!);
  return {
    runs: o.runs,
    node: process.version,
    bareNodeMedianMs: round(node),
    cases: cases.map((c, i) => ({ name: c.name, args: c.argv.slice(c.argv[0] === bin ? 1 : 0), exitCode: c.exitCode, medianMs: round(median(times[i]!)), minMs: round(Math.min(...times[i]!)), ratioToNode: round(median(times[i]!) / node, 2) }))
  };
}

const round = (x: number, places = 1): number => Math.round(x * 10 ** places) / 10 ** places;

export function formatStartBench(r: StartBenchResult): string {
  return [
    `### CLI start (spawn to exit), median of ${r.runs} interleaved runs, node ${r.node}`,
    '',
    '| case | exit | median ms | min ms | x bare node |',
    '|---|---:|---:|---:|---:|',
    ...r.cases.map((c) => `| ${c.name} | ${c.exitCode} | ${c.medianMs} | ${c.minMs} | ${c.ratioToNode} |`),
  ].join('\n');
}
