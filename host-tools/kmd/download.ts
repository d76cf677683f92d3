// The KMD's download interface: the KMD as a device of its own, speaking the same link protocol
// on a serial port or TCP. An enrolled carrier connects, authenticates (challenge, HMAC under its
// carrier key), reads the notification of pending exports, may ask for new ones, and downloads
// the sealed batches (the paper's "notification reading mode").
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { Dispatcher } from '../../firmware/link/dispatch.js';
import type { CommandGroup } from '../../firmware/link/dispatch.js';
import { DeviceLink } from '../../firmware/link/device-link.js';
import { DownloadCmd, Group } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { bytes, text, uint } from '../../firmware/link/fields.js';
import { systemGroup } from '../../firmware/commands/system.js';
import { DEFAULT_LIMITS, CHUNK_OVERHEAD } from '../../firmware/terminal.js';
import { ctEqual } from '../../firmware/crypto/_util.js';
import type { Transport } from '../../firmware/link/transport.js';
import { FIRMWARE } from '../../firmware/version.js';
import type { KmdHome } from './home.js';
import { KmdError, isId } from './home.js';
import { exportBatches, markOnCarrier, outbox, readOutbox } from './export.js';
import { LockBusyError } from '../lock.js';
import type { ExportedBatch } from './export.js';
import { carrierKey, carrierProof } from './carriers.js';

export const KMD_FIRMWARE = `qkt-kmd ${FIRMWARE.split(' ')[1]}`;

/** Serve the download interface on one cable; each cable has its own authentication state. */
export function serveDownload(home: KmdHome, transport: Transport, log: (line: string) => void = () => undefined): DeviceLink {
  const limits = DEFAULT_LIMITS;
  const maxChunk = limits.maxBody - CHUNK_OVERHEAD;
  let challenge: { carrierId: string; bytes: Uint8Array } | undefined;
  let carrierId: string | undefined;
  const authed = () => {
    if (!carrierId) throw new LinkError(Rc.DENIED, 'authenticate first (HELLO, AUTH)');
    return carrierId;
  };
  const pending = (): ExportedBatch[] => outbox(home);
  const find = (batchId: string): ExportedBatch => {
    const e = pending().find((x) => x.record.batchId === batchId);
    if (!e) throw new LinkError(Rc.NO_TRANSFER, `no pending batch ${batchId.slice(0, 8)}`);
    return e;
  };
  const describe = (e: ExportedBatch) => ({ terminalId: e.terminalId, batchId: e.record.batchId, seq: e.record.seq, bits: e.record.bits, bytes: statSync(e.file).size });
  // The batch being downloaded, read from the outbox once rather than once per READ.
  let reading: { batchId: string; bytes: Uint8Array } | undefined;
  const batchBytes = (batchId: string): Uint8Array => {
    if (reading?.batchId !== batchId) reading = { batchId, bytes: readOutbox(find(batchId)) };
    return reading.bytes;
  };

  const group: CommandGroup = {
    id: Group.DOWNLOAD,
    name: 'download',
    commands: {
      [DownloadCmd.HELLO]: (p) => {
        const id = text(p, 'carrier', 32);
        challenge = { carrierId: id, bytes: new Uint8Array(randomBytes(32)) };
        carrierId = undefined;
        return { kmdId: home.config.kmdId, challenge: challenge.bytes };
      },
      [DownloadCmd.AUTH]: (p) => {
        const mac = bytes(p, 'mac', 64);
        const c = challenge;
        challenge = undefined; // one try per challenge
        if (!c) throw new LinkError(Rc.BAD_STATE, 'HELLO first');
        const key = carrierKey(home, c.carrierId);
        const ok = key !== undefined && ctEqual(carrierProof(key, home.config.kmdId, c.carrierId, c.bytes), mac);
        key?.fill(0);
        if (!ok) {
          log(`download: carrier ${c.carrierId} failed authentication`);
          throw new LinkError(Rc.AUTH_FAILED, 'carrier not enrolled here or wrong key');
        }
        carrierId = c.carrierId;
        log(`download: carrier ${carrierId} authenticated`);
        return { carrier: carrierId };
      },
      [DownloadCmd.NOTIFY]: () => {
        authed();
        return { pending: pending().map(describe) };
      },
      [DownloadCmd.REQUEST]: async (p) => {
        authed();
        const ids = p['terminals'];
        if (!Array.isArray(ids) || ids.length === 0 || ids.length > 64 || !ids.every((x) => typeof x === 'string')) {
          throw new LinkError(Rc.BAD_REQUEST, 'field "terminals" must be a list of 1-64 terminal ids');
        }
        const bits = uint(p, 'bits', 2 ** 23);
        for (const id of ids as string[]) {
          if (!isId(id)) throw new LinkError(Rc.BAD_REQUEST, `not a terminal id: ${JSON.stringify(id).slice(0, 40)}`);
          if (!home.hasTerminal(id)) throw new LinkError(Rc.WRONG_TERMINAL, `terminal ${id} is not enrolled at this KMD`);
        }
        // One export transaction holding the home's lock (only for it: CLI commands run beside).
        try {
          await home.locked(() => exportBatches(home, ids as string[], bits));
        } catch (e) {
          if (e instanceof KmdError && e.code === 'SUPPLY') throw new LinkError(Rc.KEYS_EXHAUSTED, e.message.slice(0, 80));
          if (e instanceof KmdError && e.code === 'NO_ROOM') throw new LinkError(Rc.NO_SPACE, e.message.slice(0, 80));
          if (e instanceof LockBusyError) throw new LinkError(Rc.BUSY, e.message.slice(0, 80));
          if (e instanceof RangeError) throw new LinkError(Rc.BAD_REQUEST, e.message.slice(0, 80));
          throw e;
        }
        log(`download: carrier ${carrierId} asked for ${bits} bits for ${(ids as string[]).join(', ')}`);
        return { pending: pending().map(describe) };
      },
      [DownloadCmd.READ]: (p) => {
        authed();
        const all = batchBytes(text(p, 'b', 32));
        const off = uint(p, 'o');
        const n = Math.min(uint(p, 'n', maxChunk), maxChunk);
        if (off > all.length) throw new LinkError(Rc.BAD_REQUEST, `offset past the end (${all.length} bytes)`);
        return { d: all.subarray(off, off + n) };
      },
      [DownloadCmd.TAKEN]: async (p) => {
        const id = authed();
        const e = find(text(p, 'b', 32));
        try {
          await home.locked(() => markOnCarrier(home, e.terminalId, e.record.batchId, id));
        } catch (err) {
          if (err instanceof LockBusyError) throw new LinkError(Rc.BUSY, err.message.slice(0, 80));
          throw err;
        }
        if (reading?.batchId === e.record.batchId) reading = undefined;
        log(`download: carrier ${id} took ${e.terminalId} batch ${e.record.batchId.slice(0, 8)}`);
        return {};
      },
    },
  };
  const dispatcher = new Dispatcher();
  dispatcher.register(
    systemGroup({
      params: () => ({ maxFrame: limits.maxBody, window: limits.window, maxChunk, firmware: KMD_FIRMWARE }),
      status: () => ({ kmdId: home.config.kmdId, firmware: KMD_FIRMWARE, pending: pending().length }),
    }),
  );
  dispatcher.register(group);
  return new DeviceLink(transport, dispatcher, limits);
}
