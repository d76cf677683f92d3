// `qkt station run`: the master station as a service on TCP, speaking the link protocol (group
// STATION): terminals' sealed uplinks come in and are opened with the matching pre-applied keys
// (each key taken once, by the id the message names), downlinks are sealed under a terminal's
// session key, and STATUS accounts key use per terminal. Opened service data goes to the
// station's inbox (one JSON line per message), as it would to the SCADA front end. One service per
// store (its service lock, held for the service's life; it alone appends to inbox.jsonl); the
// pools are shared with the KMD's exports and collects, each operation under that pool's lock,
// so batches exported while the service runs are served (store.ts).
import { appendFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Dispatcher } from '../../firmware/link/dispatch.js';
import type { CommandGroup } from '../../firmware/link/dispatch.js';
import { DeviceLink } from '../../firmware/link/device-link.js';
import { Group, StationCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { bytes, text, uint } from '../../firmware/link/fields.js';
import { systemGroup } from '../../firmware/commands/system.js';
import { DEFAULT_LIMITS, CHUNK_OVERHEAD } from '../../firmware/terminal.js';
import { decodeServiceHeader } from '../../firmware/crypto/service.js';
import { FIRMWARE } from '../../firmware/version.js';
import { listenTcp, parseTcpAddress } from '../transports/tcp.js';
import { Station, StationError } from './station.js';
import { StationStore, StationStoreError, stationServiceLockOptions } from './store.js';
import { LockBusyError, lockSync } from '../lock.js';
import { isId } from '../kmd/home.js';

export const STATION_FIRMWARE = `qkt-station ${FIRMWARE.split(' ')[1]}`;

export interface StationServer {
  address: string;
  close(): Promise<void>;
}

export async function startStationServer(stationDir: string, listen: string, log: (line: string) => void = () => undefined): Promise<StationServer> {
  const store = new StationStore(stationDir);
  const serviceLock = lockSync(stationDir, stationServiceLockOptions(stationDir));
  try {
    return await serveStore(store, stationDir, listen, log, () => serviceLock.release());
  } catch (e) {
    serviceLock.release();
    throw e;
  }
}

async function serveStore(store: StationStore, stationDir: string, listen: string, log: (line: string) => void, unlock: () => void): Promise<StationServer> {
  const station = new Station(store);
  const inbox = join(stationDir, 'inbox.jsonl');
  const maxChunk = DEFAULT_LIMITS.maxBody - CHUNK_OVERHEAD;
  const known = (id: string) => {
    // The id names a folder of the store: only plain terminal ids, never a path.
    if (!isId(id)) throw new LinkError(Rc.BAD_REQUEST, 'field "t" must be a terminal id');
    if (!existsSync(join(stationDir, id, 'pool.img'))) throw new LinkError(Rc.WRONG_TERMINAL, `the station holds no keys for terminal ${id}`);
    return id;
  };
  const guard = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof StationError) throw new LinkError(Rc.AUTH_FAILED, e.message.slice(0, 80));
      if (e instanceof LockBusyError) throw new LinkError(Rc.BUSY, e.message.slice(0, 80));
      if (e instanceof StationStoreError) throw new LinkError(Rc.KEY_NOT_AVAILABLE, e.message.slice(0, 80));
      if (e instanceof Error && e.name === 'PoolError') throw new LinkError(Rc.KEY_NOT_AVAILABLE, e.message.slice(0, 80));
      if (e instanceof Error && (e.name === 'CryptoFormatError' || e instanceof RangeError)) throw new LinkError(Rc.BAD_REQUEST, e.message.slice(0, 80));
      throw e;
    }
  };
  const group: CommandGroup = {
    id: Group.STATION,
    name: 'station',
    commands: {
      [StationCmd.UPLINK]: (p) => {
        const terminalId = known(text(p, 't', 32));
        const m = bytes(p, 'm', maxChunk);
        const mode = guard(() => decodeServiceHeader(m).header.mode);
        const before = station.consumedBits.get(terminalId) ?? 0;
        const data = guard(() => station.openUplink(terminalId, m));
        const keyBits = (station.consumedBits.get(terminalId) ?? 0) - before;
        appendFileSync(inbox, JSON.stringify({ at: new Date().toISOString(), terminal: terminalId, mode, bytes: data.length, data: Buffer.from(data).toString('base64') }) + '\n', { mode: 0o600 });
        log(`station: ${terminalId} ${mode} uplink, ${data.length} bytes, ${keyBits} key bits`);
        return { n: data.length, keyBits };
      },
      [StationCmd.DOWNLINK]: (p) => {
        const terminalId = known(text(p, 't', 32));
        const range = { batchId: bytes(p, 'b', 16, 16), bitOffset: uint(p, 'o'), bits: 256 };
        const m = guard(() => station.sealDownlink(terminalId, range, bytes(p, 'd', 4096)));
        return { m };
      },
      [StationCmd.STATUS]: () => ({
        terminals: readdirSync(stationDir)
          .filter((d) => existsSync(join(stationDir, d, 'pool.img')))
          .sort()
          .map((id) => {
            const s = guard(() => store.status(id));
            return { terminalId: id, storedKeyBits: s.storedKeyBits, consumedKeyBits: s.consumedKeyBits, activeBatches: s.active.length, inactiveBatches: s.inactive.length };
          }),
      }),
    },
  };
  const dispatcher = new Dispatcher();
  dispatcher.register(
    systemGroup({
      params: () => ({ maxFrame: DEFAULT_LIMITS.maxBody, window: DEFAULT_LIMITS.window, maxChunk, firmware: STATION_FIRMWARE }),
      status: () => ({ firmware: STATION_FIRMWARE }),
    }),
  );
  dispatcher.register(group);
  const { host, port } = parseTcpAddress(listen);
  const l = await listenTcp(host, port, (t) => void new DeviceLink(t, dispatcher, DEFAULT_LIMITS));
  return {
    address: `tcp:${l.address.host}:${l.address.port}`,
    close: async () => {
      await l.close();
      station.close();
      unlock();
    },
  };
}
