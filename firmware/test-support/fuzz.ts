// Run control shared by the model-based tests: how many runs, a replay of a failure, and the
// one command line that replays it.

import fc from 'fast-check';

export function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, not ${v}`);
  return n;
}

/** fast-check parameters from QKT_FUZZ_SEED / QKT_FUZZ_PATH (a replay stops at the failure). */
export function fuzzParams(numRuns: number, defaultSeed?: number): fc.Parameters<unknown> {
  const seed = envInt('QKT_FUZZ_SEED') ?? defaultSeed;
  const path = process.env.QKT_FUZZ_PATH;
  return { numRuns, ...(seed !== undefined ? { seed } : {}), ...(path ? { path, endOnFailure: true } : {}) };
}

/**
 * The shell line that replays a failure: seed, path and, for `fc.commands`, the replayPath that
 * fast-check prints inside the counterexample (without it the path does not replay: "Unable to
 * replay"). Quoted for a POSIX shell.
 */
export function replayLine<Ts>(out: fc.RunDetails<Ts>, file: string, env: Record<string, string> = {}): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const replay = /\/\*replayPath="([^"]*)"\*\//.exec(fc.defaultReportMessage(out) ?? '')?.[1];
  const vars = { ...env, QKT_FUZZ_SEED: String(out.seed), QKT_FUZZ_PATH: out.counterexamplePath ?? '', ...(replay ? { QKT_FUZZ_REPLAY: replay } : {}) };
  return `${Object.entries(vars).map(([k, v]) => `${k}=${q(v)}`).join(' ')} npx tap --disable-coverage ${file}`;
}
