// Test support for the end-to-end CLI suites (e2e-offline, field-tool, kmd-serve): run `qkt` as
// a user would, with every process and socat pair a test starts ended by pid in its teardown.
import type { Test } from 'tap';
import { assertFreshBuild } from './build-check.js';
import { createPtyPair, socatSkipReason } from './pty.js';
import type { PtyPair } from './pty.js';
import { runQkt, startQkt } from './cli.js';
import type { Background, CliRun } from './cli.js';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { LinkClient } from '../host-tools/link/client.js';
import type { DeviceParams } from '../host-tools/link/client.js';

/**
 * Never a reason to skip: a CLI test with a missing or stale build must fail, not pass unseen.
 * Throws (naming the stale file and the build command) unless dist/ matches the source.
 */
export function cliSkipReason(): false {
  assertFreshBuild();
  return false;
}

/** cliSkipReason, then socatSkipReason. */
export function ptySkipReason(): string | false {
  return cliSkipReason() || socatSkipReason();
}

/** A socat pty pair closed (socat killed by pid) when the test ends. */
export async function ptyPair(t: Test): Promise<PtyPair> {
  const p = await createPtyPair();
  t.teardown(() => p.close());
  return p;
}

/** `qkt ...args` (long-running, --json added) stopped by pid when the test ends. */
export async function background(t: Test, args: string[]): Promise<Background> {
  const b = await startQkt(args);
  t.teardown(() => b.stop());
  return b;
}

/** `qkt ...args --json`, which must exit 0; returns its JSON document. */
export async function qktJson<R = Record<string, unknown>>(t: Test, args: string[]): Promise<R> {
  const r = await runQkt([...args, '--json']);
  t.equal(r.code, 0, `qkt ${args.slice(0, 2).join(' ')} exits 0${r.code === 0 ? '' : `: ${r.stderr.trim()}`}`);
  return parseJson<R>(r);
}

export function parseJson<R = Record<string, unknown>>(r: CliRun): R {
  try {
    return JSON.parse(r.stdout) as R;
  } catch {
    throw new Error(`not one JSON document on stdout (exit ${r.code}): ${JSON.stringify(r.stdout)}; stderr: ${r.stderr}`);
  }
}

export { runQkt };

/** A refusal as the CLI gives it: exit `code`, nothing on stdout, one line on stderr matching `reason`. */
export function failsWith(t: Test, r: CliRun, code: number, reason: RegExp, what: string): void {
  t.equal(r.code, code, `${what}: exit ${code}`);
  t.equal(r.stdout, '', `${what}: nothing on stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  t.equal(lines.length, 1, `${what}: one line on stderr: ${r.stderr.trim()}`);
  t.match(lines[0], reason, `${what}: says why`);
}

/** The terminal module, in process, on its flash image (as `terminal run` would host it). */
export async function moduleOn(t: Test, image: string): Promise<{ client: LinkClient; params: DeviceParams }> {
  const flash = NorFlash.open(image);
  t.teardown(() => flash.close());
  const [host, device] = createInProcessPair();
  createTerminal({ flash, transport: device });
  const client = new LinkClient(host);
  t.teardown(() => client.close());
  return { client, params: await client.negotiate() };
}
