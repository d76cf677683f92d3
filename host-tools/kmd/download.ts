// The KMD's download interface: the KMD as a device of its own, speaking the same link protocol
// on a serial port or TCP. An enrolled carrier connects, authenticates (challenge, HMAC under its
// carrier key, its own nonce), reads the notification of pending exports, may ask for new ones,
// and downloads the sealed batches (the paper's "notification reading mode"). Every message after
// AUTH is sealed under the session key AUTH derived (download-session.ts): a connection taken over
// after AUTH gets nothing and can take nothing off the outbox.
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
import { exportBatches, markOnCarrier, NoRoomError, outbox, readOutbox } from './export.js';
import { LockBusyError } from '../lock.js';
import type { ExportedBatch } from './export.js';
import { carrierKey, carrierProof } from './carriers.js';
import { NONCE_BYTES, ReplayWindow, SEAL_OVERHEAD, TO_CARRIER, TO_KMD, open, seal, sessionKey } from './download-session.js';
import type { Payload } from '../../firmware/link/codec.js';
import { printable } from '../peer-text.js';
import { sharedRateLimited } from '../log-limit.js';

export const KMD_FIRMWARE = `qkt-kmd ${FIRMWARE.split(' ')[1]}`;

/** What a listener learns of one cable's session (download-port.ts: idle and login deadlines). */
export interface DownloadHooks {
  /** Every well-formed request frame. */
  onFrame?: () => void;
  /** A carrier authenticated (AUTH succeeded). */
  onAuthenticated?: () => void;
}

/** Serve the download interface on one cable; each cable has its own authentication state. */
export function serveDownload(home: KmdHome, transport: Transport, log: (line: string) => void = () => undefined, hooks: DownloadHooks = {}): DeviceLink {
  const limits = DEFAULT_LIMITS;
  // Anyone who reaches the port can fail authentication at will, under any carrier id they name:
  // those lines are limited (one a second across every connection), and the id is shown escaped.
  const failLog = sharedRateLimited(log);
  // A READ response is sealed: its data leaves room for the seal (download-session.ts).
  const maxChunk = limits.maxBody - CHUNK_OVERHEAD - SEAL_OVERHEAD;
  let challenge: { carrierId: string; bytes: Uint8Array } | undefined;
  let session: { carrierId: string; key: Uint8Array; counters: ReplayWindow } | undefined;
  const endSession = () => {
    session?.key.fill(0);
    session = undefined;
  };
  transport.onClose(endSession);
  /**
   * A command after AUTH: the request must carry a fresh counter and a MAC under the session key;
   * the response is sealed with the same counter. Errors go out as plain error replies (the
   * carrier takes any error as a failure, never as a success).
   */
  const sealed =
    (command: number, fn: (p: Payload, carrierId: string) => Payload | Promise<Payload>) =>
    async (p: Payload): Promise<Payload> => {
      const s = session;
      if (!s) throw new LinkError(Rc.DENIED, 'authenticate first (HELLO, AUTH)');
      const { counter, inner } = open(s.key, TO_KMD, command, p);
      if (!s.counters.take(counter)) throw new LinkError(Rc.AUTH_FAILED, 'session counter replayed or too old');
      const out = await fn(inner, s.carrierId);
      // The session may have ended while fn awaited (HELLO, close): then nothing is sealed.
      if (session !== s) throw new LinkError(Rc.DENIED, 'session ended');
      return seal(s.key, TO_CARRIER, command, counter, out);
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
        endSession();
        return { kmdId: home.config.kmdId, challenge: challenge.bytes };
      },
      [DownloadCmd.AUTH]: (p) => {
        const mac = bytes(p, 'mac', 64);
        const nonce = bytes(p, 'nonce', NONCE_BYTES, NONCE_BYTES);
        const c = challenge;
        challenge = undefined; // one try per challenge
        if (!c) throw new LinkError(Rc.BAD_STATE, 'HELLO first');
        const key = carrierKey(home, c.carrierId);
        const ok = key !== undefined && ctEqual(carrierProof(key, home.config.kmdId, c.carrierId, c.bytes), mac);
        if (!ok) {
          key?.fill(0);
          failLog(`download: carrier ${printable(c.carrierId, 40)} failed authentication`);
          throw new LinkError(Rc.AUTH_FAILED, 'carrier not enrolled here or wrong key');
        }
        // Both challenges in the key: the KMD's makes it fresh for the KMD, the carrier's for the carrier.
        const k = sessionKey(key, home.config.kmdId, c.carrierId, c.bytes, nonce);
        key.fill(0);
        session = { carrierId: c.carrierId, key: k, counters: new ReplayWindow() };
        hooks.onAuthenticated?.();
        log(`download: carrier ${printable(c.carrierId, 40)} authenticated`);
        // Counter 0, sealed: the carrier learns that this KMD holds its key too.
        return seal(k, TO_CARRIER, DownloadCmd.AUTH, 0, { carrier: c.carrierId });
      },
      [DownloadCmd.NOTIFY]: sealed(DownloadCmd.NOTIFY, () => ({ pending: pending().map(describe) })),
      [DownloadCmd.REQUEST]: sealed(DownloadCmd.REQUEST, async (p, carrierId) => {
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
          if (e instanceof KmdError) log(`download: export refused: ${printable(e.message)}`);
          if (e instanceof KmdError && e.code === 'SUPPLY') throw new LinkError(Rc.KEYS_EXHAUSTED, e.message.slice(0, 80));
          // The KMD's own message (terminal, sizes, the fix) is longer than a wire reason (80): the
          // carrier gets what matters, the fix included; the KMD's log has the rest.
          if (e instanceof KmdError && e.code === 'NO_ROOM') throw new LinkError(Rc.NO_SPACE, noRoomReason(e));
          if (e instanceof LockBusyError) throw new LinkError(Rc.BUSY, e.message.slice(0, 80));
          if (e instanceof RangeError) throw new LinkError(Rc.BAD_REQUEST, e.message.slice(0, 80));
          throw e;
        }
        log(`download: carrier ${carrierId} asked for ${bits} bits for ${printable((ids as string[]).join(', '))}`);
        return { pending: pending().map(describe) };
      }),
      [DownloadCmd.READ]: sealed(DownloadCmd.READ, (p) => {
        const all = batchBytes(text(p, 'b', 32));
        const off = uint(p, 'o');
        const n = Math.min(uint(p, 'n', maxChunk), maxChunk);
        if (off > all.length) throw new LinkError(Rc.BAD_REQUEST, `offset past the end (${all.length} bytes)`);
        return { d: all.subarray(off, off + n) };
      }),
      [DownloadCmd.TAKEN]: sealed(DownloadCmd.TAKEN, async (p, id) => {
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
      }),
    },
  };
  const dispatcher = new Dispatcher();
  dispatcher.register(
    systemGroup({
      params: () => ({ maxFrame: limits.maxBody, window: limits.window, maxChunk, firmware: KMD_FIRMWARE }),
      // What the outbox holds is told only inside an authenticated session (3.11.7): a stranger
      // learns the KMD's id (HELLO says it too) and firmware, not how many batches wait.
      status: () => ({ kmdId: home.config.kmdId, firmware: KMD_FIRMWARE, ...(session ? { pending: pending().length } : {}) }),
    }),
  );
  dispatcher.register(group);
  return new DeviceLink(transport, dispatcher, limits, hooks.onFrame ? { onFrame: hooks.onFrame } : {});
}

/**
 * The wire reason (at most 80 characters) of an export the station has no room for: what frees
 * room, honestly; with the keys in use, nothing at the KMD short of `kmd void --in-use` does.
 */
export function noRoomReason(e: KmdError): string {
  return e instanceof NoRoomError && e.inUseOnly
    ? 'station room full of keys the terminal holds: frees as it uses them; none spent'
    : 'station room full, nothing spent; at the KMD: qkt kmd void or kmd collect';
}
