// The benchmarks `qkt bench` knows: each runs, returns a JSON-able result, and formats it as a
// markdown table.
import { benchLink, formatLinkBench } from './link.js';
import type { LinkBenchResult } from './link.js';

export interface BenchOptions {
  quick: boolean;
  bytes?: number;
  log: (line: string) => void;
}

export interface Benchmark {
  run(o: BenchOptions): Promise<unknown>;
  format(result: unknown): string;
}

export const benchmarks: Record<string, Benchmark> = {
  link: {
    run: (o) => benchLink({ bytes: o.bytes ?? (o.quick ? 128 * 1024 : 1024 * 1024), log: o.log }),
    format: (r) => formatLinkBench(r as LinkBenchResult),
  },
};
