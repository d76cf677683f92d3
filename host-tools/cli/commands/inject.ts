// `qkt inject --carrier DIR --port PATH`: the field engineer's step. Asks the terminal on the port
// who it is, picks its batch from the carrier, injects it with a progress bar (resuming a broken
// transfer; reopening the port and resuming by itself when the module restarts or the cable drops,
// link/resume.ts), stores the delivery receipt on the carrier, and prints a one-line result. The
// first SIGINT/SIGTERM stops it at a chunk boundary, saying what the module holds.
import { defineCommand, str, CliError, Exit } from '../command.js';
import type { Io, Values } from '../command.js';
import { connectDevice } from '../../link/session.js';
import { injectResuming, RESUME_WAIT_MS } from '../../link/resume.js';
import { StoppedError } from '../../link/stop.js';
import { Group, SystemCmd } from '../../../firmware/link/groups.js';
import { LinkError, Rc, rcName } from '../../../firmware/link/errors.js';
import { batchForTerminal, checkCarrierBeforeSend, openCarrier, withCarrier } from '../carrier-open.js';
import { resolvePort } from '../port-select.js';
import { formatBits } from '../../units.js';
import { int } from '../command.js';
import { deviceTerminalId } from '../device-id.js';
import { CarrierError } from '../../carrier/errors.js';
import { PeerDataError } from '../../link/errors.js';
import { carrierWriteRefusal } from '../../carrier/preflight.js';

export interface InjectCliResult {
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  seconds: number;
  resumedFromBits: number;
  alreadyAccepted: boolean;
  /** Times the transfer was lost (module restart, watchdog, cable) and begun again by itself. */
  resumes: number;
  port: string;
  carrierId: string;
  receiptStored: boolean;
}

export default defineCommand<InjectCliResult>({
  // The carrier's lock is held for the whole inject: its receipt is written under it.
  run: (v, _p, io) => withCarrier(str(v, 'carrier')!, () => injectWith(v, io)),
  render: (r) =>
    `${r.terminalId}: ${formatBits(r.bits)} injected (batch ${r.batchId.slice(0, 8)}, seq ${r.seq}) in ${r.seconds.toFixed(2)} s` +
    (r.alreadyAccepted ? ', already accepted earlier' : r.resumedFromBits > 0 ? `, resumed from ${formatBits(r.resumedFromBits)}` : '') +
    (r.resumes > 0 ? `, lost and resumed by itself ${r.resumes} time(s)` : '') +
    '; receipt stored on the carrier',
});

async function injectWith(v: Values, io: Io): Promise<InjectCliResult> {
  // Preflight: a carrier that cannot keep the receipt (missing, read-only, not ours, full) is refused before the port is opened.
  checkCarrierBeforeSend(str(v, 'carrier')!);
  const carrier = openCarrier(str(v, 'carrier')!);
  const port = await resolvePort(str(v, 'port')!, str(v, 'vidpid'));
  const baud = int(v, 'baud', 300, 12_000_000);
  // The signal also ends a wait for the module's first answer (a port where nothing answers yet).
  const connect = () => connectDevice(port, { ...(baud ? { baud } : {}), signal: io.signal });
  const vidpid = str(v, 'vidpid');
  const rerun = `qkt inject --carrier ${sh(carrier.path)} --port ${sh(str(v, 'port')!)}${vidpid ? ` --vidpid ${sh(vidpid)}` : ''}${baud ? ` --baud ${baud}` : ''}`;
  const s = await connect().catch((e: unknown) => {
    throw e instanceof StoppedError ? nothingSent(e, rerun) : e;
  });
  try {
    // Only the two fields used: the whole STATUS is 300 bytes or more, which a noisy line rarely lets through.
    const st = await s.client.request(Group.SYSTEM, SystemCmd.STATUS, { only: ['terminalId', 'state'] }, { signal: io.signal }).catch((e: unknown) => {
      // Stopped while opening the port or asking who is there: not a byte of the batch was sent.
      throw e instanceof StoppedError ? nothingSent(e, rerun) : e;
    });
    const terminalId = deviceTerminalId(st['terminalId'], port, st['state']);
    const entry = batchForTerminal(carrier, terminalId); // a damaged batch file is named as damaged, before BEGIN
    if (!entry) {
      const delivered = carrier.status().delivered.filter((d) => d.terminalId === terminalId);
      const unverified = delivered.find((d) => !d.collected);
      throw new CliError(
        unverified
          ? `batch already delivered: carrier ${carrier.carrierId} holds a receipt for terminal ${terminalId}'s batch ${unverified.batchId.slice(0, 8)} that the KMD has not verified yet (qkt kmd collect --carrier ${carrier.path}; if it is false the batch is offered again)`
          : delivered.length > 0
            ? `batch already delivered: carrier ${carrier.carrierId} has nothing more for terminal ${terminalId} (a new batch: qkt carrier load --home H --carrier DIR --terminal ${terminalId} --bits N)`
            : `wrong carrier: ${carrier.carrierId} holds no batch for terminal ${terminalId} (load one: qkt carrier load --home H --carrier DIR --terminal ${terminalId} --bits N)`,
        Exit.CARRIER,
      );
    }
    const sealed = entry.sealed;
    let r;
    try {
      r = await injectResuming(s, {
        connect,
        sealed,
        signal: io.signal,
        rerun,
        waitMs: resumeWaitMs(),
        onProgress: (p) => io.progress.update(p.bits, p.totalBits, `inject ${terminalId}`),
        onNote: (line) => {
          io.progress.done();
          io.note(`qkt: ${line}`);
        },
      });
    } catch (e) {
      if (e instanceof LinkError && e.rc === Rc.BUSY) {
        // Another connection's inject holds the module's one transfer (docs/protocol.md 4.9).
        throw new CliError(`terminal ${terminalId} is busy: ${e.reason ?? 'busy'}; run qkt inject again once it is done (qkt status --port ${port} shows the staging)`, Exit.BUSY);
      }
      if (e instanceof LinkError) {
        const retire = `; back at the KMD, retire it: qkt kmd void --home H --terminal ${terminalId} --batch ${entry.batchId.slice(0, 8)} --reason stale`;
        const why = e.rc === Rc.STALE_BATCH ? `it already holds a newer batch${retire}` : e.rc === Rc.WRONG_TERMINAL ? 'the batch is addressed to another terminal' : e.rc === Rc.AUTH_FAILED ? 'the batch does not authenticate (tampered, or sealed for another module, or under the key the module had before a re-enrolment: load a new carrier)' : e.rc === Rc.NO_SPACE ? 'its key pool has no room' : (e.reason ?? rcName(e.rc));
        throw new CliError(`terminal ${terminalId} refused the batch: ${rcName(e.rc)}: ${why}`, Exit.REFUSED);
      }
      throw e;
    }
    io.progress.done();
    try {
      carrier.recordReceipt(terminalId, r.batchId, r.receipt);
    } catch (e) {
      // The carrier is fine; what the port answered is not a receipt of this batch (or one the KMD
      // already proved false): the terminal's fault, exit 4 like any answer the tool cannot accept.
      if (e instanceof CarrierError && e.code === 'BAD_RECEIPT') {
        const detail = e.message.replace(/^[^:]*: /, '');
        throw new PeerDataError(`terminal ${terminalId} sent a receipt that is not one for its batch ${r.batchId.slice(0, 8)} (${detail}); nothing was stored: it is not a genuine qkt device or it is damaged`);
      }
      // The drive went read-only (a USB stick's filesystem error), full, or lost its permissions
      // after the preflight: the terminal holds the batch, and BEGIN gives its receipt again.
      throw carrierWriteRefusal(carrier.path, e, `the terminal's receipt could not be stored (terminal ${terminalId} holds batch ${r.batchId.slice(0, 8)} in full: the same qkt inject gets its receipt again)`) ?? e;
    }
    return {
      terminalId,
      batchId: r.batchId,
      seq: r.seq,
      bits: r.bits,
      seconds: Math.round(r.seconds * 1000) / 1000,
      resumedFromBits: r.resumedFromBits,
      alreadyAccepted: r.alreadyAccepted,
      resumes: r.resumes,
      port,
      carrierId: carrier.carrierId,
      receiptStored: true,
    };
  } finally {
    await s.close();
  }
}

/** How long one outage is waited out: QKT_RESUME_WAIT seconds (fractional allowed), default 20. */
function resumeWaitMs(): number {
  const env = process.env['QKT_RESUME_WAIT'];
  const secs = env === undefined || env.trim() === '' ? NaN : Number(env);
  return Number.isFinite(secs) && secs >= 0 ? Math.round(secs * 1000) : RESUME_WAIT_MS;
}

/** Stopped while opening the port or asking who is there: not a byte of the batch was sent. */
function nothingSent(e: StoppedError, rerun: string): StoppedError {
  return new StoppedError(e.signal, `stopped before anything was sent to the terminal; run the same command again: ${rerun}`);
}

/** A word as a shell takes it back: as is when plain, else single-quoted. */
function sh(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
