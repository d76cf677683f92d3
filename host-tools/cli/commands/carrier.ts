// `qkt carrier load|status`: put sealed batches onto a carrier (a folder or a mounted USB drive)
// straight from a local KMD home (or through a KMD's download interface), and show what it holds.
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { defineCommand, bitsOption, strs, str, CliError, Exit } from '../command.js';
import type { Io, Values } from '../command.js';
import type { KmdHome } from '../../kmd/home.js';
import { changeKmd, kmdCli } from '../home.js';
import { Carrier, CarrierError, formatCarrierStatus, LOCK_FILE, MANIFEST_FILE, removeNewCarrier } from '../../carrier/carrier.js';
import type { CarrierStatus } from '../../carrier/carrier.js';
import { exportBatches, markOnCarrier, outbox, readOutbox } from '../../kmd/export.js';
import { openCarrier, withCarrier, withCarrierSync } from '../carrier-open.js';
import { carrierWriteRefusal, checkCarrierWritable, RECEIPT_ROOM_BYTES, sealedBytesFor } from '../../carrier/preflight.js';
import { formatBits } from '../../units.js';
import { downloadFromKmd } from '../../kmd/download-client.js';
import { CARRIER_KEY_FILE } from '../../kmd/carriers.js';
import { warnSharedSecrets } from '../../secret-file.js';

export interface LoadResult {
  carrierId: string;
  carrier: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

/**
 * The carrier at `dir` if there is one (of this KMD), or a function that makes one there: into an
 * existing empty folder or drive, or, with `init`, a new folder. Nothing is made by a mistyped path
 * or a drive that is not mounted. Checked before anything is exported, made only after the export
 * worked; `undo` removes what `make` made (a load that then failed leaves no empty carrier).
 */
export function checkCarrierTarget(dir: string, kmdId: string, carrierId?: string, init = false, needBytes = 0): Carrier | { make: () => Carrier; undo: () => void } {
  // Room and write access are checked before anything is exported: a refusal spends nothing.
  const writable = () => {
    try {
      checkCarrierWritable(dir, { needBytes: needBytes + RECEIPT_ROOM_BYTES, consequence: 'no batch could be stored on it; nothing was exported' });
    } catch (e) {
      if (e instanceof CarrierError) throw new CliError(e.message, Exit.CARRIER);
      throw e;
    }
  };
  if (existsSync(join(dir, MANIFEST_FILE))) {
    const c = openCarrier(dir);
    if (c.kmdId !== kmdId) throw new CliError(`carrier ${c.carrierId} belongs to KMD ${c.kmdId}, not this KMD (${kmdId})`, Exit.CARRIER);
    writable();
    return c;
  }
  const exists = existsSync(dir);
  if (!exists && !init) {
    throw new CliError(`carrier ${dir} does not exist: is the drive mounted? (qkt ports lists the drives; to make a new carrier folder there, add --init)`, Exit.CARRIER);
  }
  if (exists && !statSync(dir).isDirectory()) throw new CliError(`${dir} is not a folder; give an empty folder or a mounted drive`, Exit.CARRIER);
  if (exists && readdirSync(dir).filter((f) => f !== 'lost+found' && f !== LOCK_FILE).length > 0) {
    throw new CliError(`${dir} is not empty and not a carrier; give an empty folder or drive`, Exit.CARRIER);
  }
  if (exists) writable();
  return { make: () => initCarrier(dir, kmdId, carrierId), undo: () => void removeNewCarrier(dir, { folder: !exists }) };
}

function initCarrier(dir: string, kmdId: string, carrierId?: string): Carrier {
  try {
    return Carrier.init(dir, { carrierId: carrierId ?? `car-${randomBytes(3).toString('hex')}`, kmdId });
  } catch (e) {
    if (e instanceof CarrierError) throw new CliError(`${dir}: ${e.message}`, Exit.CARRIER);
    throw e;
  }
}

export const carrierLoad = defineCommand<LoadResult>({
  async run(v, _p, io) {
    const dir = str(v, 'carrier')!;
    const ids = strs(v, 'terminal');
    const bits = bitsOption(v, 'bits');
    if (str(v, 'kmd')) {
      if (str(v, 'home')) throw new CliError('give one of --kmd PORT or --home H', Exit.USAGE);
      if (v['init'] === true) throw new CliError('--init makes a carrier for --home; a carrier for --kmd is made by qkt kmd carrier add --dir DIR', Exit.USAGE);
      warnSharedSecrets([join(dir, CARRIER_KEY_FILE)]); // the carrier's key authenticates it to the KMD
      return withCarrier(dir, () => downloadFromKmd({ port: str(v, 'kmd')!, carrier: openCarrier(dir), terminals: ids, ...(bits ? { bits } : {}), progress: io.progress }));
    }
    if (ids.length === 0 || bits === undefined) throw new CliError('--terminal and --bits are required with --home', Exit.USAGE);
    // The whole load holds the home's lock: export, onto the carrier, off the outbox, as one change.
    return changeKmd(v, (home) => withCarrierSync(dir, () => loadFromHome(home, dir, ids, bits, v, io)));
  },
  render: (r) => [...r.loaded.map((l) => `${l.terminalId}: ${formatBits(l.bits)} sealed (batch ${l.batchId.slice(0, 8)}, seq ${l.seq}) ${l.outcome}`), `carrier ${r.carrierId} at ${r.carrier}`].join('\n'),
});

function loadFromHome(home: KmdHome, dir: string, ids: string[], bits: number, v: Values, io: Io): LoadResult {
  for (const id of ids) kmdCli(() => home.terminal(id));
  const target = checkCarrierTarget(dir, home.config.kmdId, str(v, 'carrier-id'), v['init'] === true, ids.length * sealedBytesFor(bits));
  // A batch already queued for a terminal (kmd export, or a load that was cut) goes first; the
  // others are exported in one transaction: a refusal (supply, station room) spends nothing,
  // and the carrier is not even made.
  const queued = new Map(ids.map((id) => [id, outbox(home, id)[0]] as const));
  const fresh = ids.filter((id) => !queued.get(id));
  if (fresh.length > 0) for (const e of kmdCli(() => exportBatches(home, fresh, bits))) queued.set(e.terminalId, e);
  const made = target instanceof Carrier ? undefined : target;
  const loaded: LoadResult['loaded'] = [];
  let carrier: Carrier | undefined;
  try {
    carrier = made ? made.make() : (target as Carrier);
    for (const [i, id] of ids.entries()) {
      io.progress.update(i, ids.length, `load ${id}`, 'terminal');
      const e = queued.get(id)!;
      const added = carrier.addBatch(readOutbox(e));
      markOnCarrier(home, id, e.record.batchId, carrier.carrierId);
      loaded.push({ terminalId: id, batchId: e.record.batchId, seq: e.record.seq, bits: e.record.bits, outcome: added.outcome });
    }
  } catch (err) {
    // A carrier this load made and could not put a batch on is taken away again (the batches stay
    // queued at the KMD for the next load); one holding a batch stays, with what it holds.
    if (made && loaded.length === 0) {
      try {
        made.undo();
      } catch {
        // the first error is the one to report
      }
    }
    // A drive that turned read-only or full under the load: the batches stay queued at the KMD.
    const where = (err as NodeJS.ErrnoException).path;
    const onCarrier = typeof where === 'string' && (resolve(where) + sep).startsWith(resolve(dir) + sep);
    const refusal = onCarrier ? carrierWriteRefusal(dir, err, 'the batch could not be stored on it; the KMD keeps it queued for the next carrier load') : undefined;
    if (refusal) throw new CliError(refusal.message, Exit.CARRIER);
    throw err;
  }
  io.progress.update(ids.length, ids.length, 'load', 'terminal');
  return { carrierId: carrier.carrierId, carrier: carrier.path, loaded };
}

export const carrierStatus = defineCommand<CarrierStatus>({
  async run(v) {
    // Opening finishes interrupted work (a torn journal line, a cut wipe): never while another
    // command is writing the carrier, whose half-written line is not torn. A second or it says who.
    return withCarrierSync(str(v, 'carrier')!, () => openCarrier(str(v, 'carrier')!).status(), { waitMs: 1000 });
  },
  render: (s) => formatCarrierStatus(s),
});
