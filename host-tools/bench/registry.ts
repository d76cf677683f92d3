// The benchmarks `qkt bench` knows: each runs, returns a JSON-able result, and formats it as a
// markdown table.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchLink, formatLinkBench } from './link.js';
import type { LinkBenchResult } from './link.js';
import { benchFlash, formatFlashBenchMarkdown } from './flash.js';
import type { FlashBenchResult } from './flash.js';
import { benchInject, formatInjectBench } from './inject.js';
import type { InjectBenchResult } from './inject.js';
import { benchLifetime, formatLifetimeBench } from './lifetime.js';
import { benchMulticlient, formatMulticlientBench } from './multiclient.js';
import type { MulticlientBenchResult } from './multiclient.js';
import type { LifetimeBenchResult } from './lifetime.js';
import { benchDownload, formatDownloadBench } from './download.js';
import type { DownloadBenchResult } from './download.js';
import { benchStation, formatStationBench } from './station.js';
import type { StationBenchResult } from './station.js';
import { benchStart, formatStartBench } from './start.js';
import type { StartBenchResult } from './start.js';
import { benchFuzz, formatFuzzBench } from './fuzz.js';
import type { FuzzBenchResult } from './fuzz.js';
import { benchNoise, formatNoiseBench } from './noise.js';
import { benchTraffic, formatTrafficBench } from './traffic.js';
import type { TrafficBenchResult } from './traffic.js';
import { benchCrypto, formatCryptoBench } from './crypto.js';
import type { CryptoBenchResult } from './crypto.js';
import type { NoiseBenchResult } from './noise.js';
import { benchFleet, formatFleetBench } from './fleet.js';
import type { FleetBenchResult } from './fleet.js';

export interface BenchOptions {
  quick: boolean;
  bytes?: number;
  /** A seed for the benchmarks that draw random inputs: fuzz (default a new one, reported) and noise (default 1). */
  seed?: number;
  /** noise: the rates (fractions of bytes), a fixed bound on each run. */
  rates?: number[];
  timeoutSeconds?: number;
  /** noise: a fixed bound on each ZMODEM run (default: timeoutSeconds, or its default). */
  zmodemTimeoutSeconds?: number;
  log: (line: string) => void;
}

export interface Benchmark {
  run(o: BenchOptions): Promise<unknown>;
  format(result: unknown): string;
  /** Runs only when named (`qkt bench noise`), not in a bare `qkt bench`: a full run takes an hour or more. */
  onlyWhenNamed?: boolean;
}

export const benchmarks: Record<string, Benchmark> = {
  link: {
    run: (o) => benchLink({ bytes: o.bytes ?? (o.quick ? 128 * 1024 : 1024 * 1024), ...(o.quick ? { bauds: [921_600] } : {}), log: o.log }),
    format: (r) => formatLinkBench(r as LinkBenchResult),
  },
  flash: {
    run: async (o) => {
      const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-flash-'));
      try {
        o.log('flash: mount, consume, append, wear and a power-cut sweep on a 2 MiB file image...');
        return await benchFlash({ quick: o.quick, dir });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    format: (r) => formatFlashBenchMarkdown(r as FlashBenchResult),
  },
  inject: {
    run: (o) => benchInject({ bits: o.bytes ? o.bytes * 8 : o.quick ? 2 ** 20 : 2 ** 23, runs: o.quick ? 1 : 3, log: o.log }),
    format: (r) => formatInjectBench(r as InjectBenchResult),
  },
  lifetime: {
    run: (o) => benchLifetime({ months: o.quick ? 2 : 24, log: o.log }),
    format: (r) => formatLifetimeBench(r as LifetimeBenchResult),
  },
  download: {
    run: (o) => benchDownload({ bits: o.bytes ? o.bytes * 8 : o.quick ? 2 ** 20 : 2 ** 22, log: o.log }),
    format: (r) => formatDownloadBench(r as DownloadBenchResult),
  },
  station: {
    run: (o) => benchStation({ uplinks: o.quick ? 50 : 400, handshakes: o.quick ? 5 : 50, log: o.log }),
    format: (r) => formatStationBench(r as StationBenchResult),
  },
  multiclient: {
    run: (o) => benchMulticlient({ bits: o.bytes ? o.bytes * 8 : o.quick ? 2 ** 20 : 2 ** 23, repeats: o.quick ? 1 : 5, log: o.log }),
    format: (r) => formatMulticlientBench(r as MulticlientBenchResult),
  },
  start: {
    run: async (o) => benchStart({ runs: o.quick ? 3 : 20, log: o.log }),
    format: (r) => formatStartBench(r as StartBenchResult),
  },
  fuzz: {
    run: (o) => benchFuzz({ inputs: o.quick ? 20_000 : 1_000_000, ...(o.seed !== undefined ? { seed: o.seed } : {}), log: o.log }),
    format: (r) => formatFuzzBench(r as FuzzBenchResult),
  },
  fleet: {
    run: (o) => benchFleet({ quick: o.quick, ...(o.seed !== undefined ? { seed: o.seed } : {}), log: o.log }),
    format: (r) => formatFleetBench(r as FleetBenchResult),
    onlyWhenNamed: true,
  },
  traffic: {
    run: (o) => benchTraffic({ seconds: o.quick ? 5 : 30, ...(o.seed !== undefined ? { seed: o.seed } : {}), log: o.log }),
    format: (r) => formatTrafficBench(r as TrafficBenchResult),
  },
  crypto: {
    run: (o) => benchCrypto({ bytes: o.bytes ?? (o.quick ? 256 * 1024 : 4 * 1024 * 1024), rounds: o.quick ? 3 : 11, log: o.log }),
    format: (r) => formatCryptoBench(r as CryptoBenchResult),
  },
  noise: {
    run: (o) =>
      benchNoise({
        bits: o.bytes ? o.bytes * 8 : o.quick ? 2 ** 18 : 2 ** 23,
        ...(o.rates ? { rates: o.rates } : {}),
        ...(o.seed !== undefined ? { seed: o.seed } : {}),
        ...(o.timeoutSeconds !== undefined ? { timeoutSeconds: o.timeoutSeconds } : o.quick ? { timeoutFloorSeconds: 60 } : {}),
        ...(o.zmodemTimeoutSeconds !== undefined ? { zmodemTimeoutSeconds: o.zmodemTimeoutSeconds } : {}),
        log: o.log,
      }),
    format: (r) => formatNoiseBench(r as NoiseBenchResult),
    onlyWhenNamed: true,
  },
};
