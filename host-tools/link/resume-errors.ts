// The two ways a resumable injection ends without finishing, as typed errors for the CLI to map
// (host-tools/cli/errors.ts): stopped on request, or the link lost past the bounds. Kept apart
// from resume.ts so the CLI's error mapping loads without the injection code.
import { StoppedError } from './stop.js';
import { formatBits } from '../units.js';

/** What the module holds of the batch, for messages: "holds at least 3.1 of 8 Mbit of batch ab12cd34". */
export interface HeldState {
  terminalId: string;
  batchId: string;
  heldBits: number;
  totalBits: number;
}

export function heldText(s: HeldState): string {
  const held = s.totalBits >= 2 ** 20 ? `${(Math.floor((s.heldBits / 2 ** 20) * 10) / 10).toFixed(1).replace(/\.0$/, '')} of ${formatBits(s.totalBits)}` : `${formatBits(s.heldBits)} of ${formatBits(s.totalBits)}`;
  // What the module acknowledged, in whole sealed chunks: durable there (it may hold a little more).
  return `terminal ${s.terminalId} holds at least ${held} of batch ${s.batchId.slice(0, 8)}`;
}

/** Stopped by the user mid-transfer; the module keeps what it staged (resumable). */
export class InjectStoppedError extends StoppedError {
  constructor(
    signal: string | undefined,
    readonly state: HeldState,
    rerun: string | undefined,
  ) {
    super(signal, `stopped: ${heldText(state)}${rerun ? `; resume with: ${rerun}` : '; a re-run resumes'}`);
    this.name = 'InjectStoppedError';
  }
}

/** The link was lost and did not come back within the bounds; a re-run resumes. */
export class LinkLostError extends Error {
  constructor(
    readonly state: HeldState,
    readonly why: string,
    readonly rerun: string | undefined,
  ) {
    super(`link lost: ${why}; ${heldText(state)}: a re-run resumes from there${rerun ? `: ${rerun}` : ''}`);
    this.name = 'LinkLostError';
  }
}
