// The `qkt demo` scenario: the paper's offline distribution end to end on one machine. A KMD
// enrols three terminals, seals 3 Mbit for each onto a carrier, the "field engineer" injects each
// terminal's module over a link (in-process or a socat pty pair), the KMD collects the receipts
// and activates the station's matching keys, and then every terminal talks to the master station:
// OTP uplinks, and an AEAD session with uplinks and downlinks. The summary checks both sides
// consumed exactly the same key bits.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { Group, KeysCmd, SystemCmd } from '../firmware/link/groups.js';
import { decodeServiceHeader } from '../firmware/crypto/service.js';
import type { KeyRange } from '../firmware/crypto/service.js';
import { KmdHome } from './kmd/home.js';
import { enrollTerminal } from './kmd/enroll.js';
import { exportBatch, markOnCarrier, readOutbox } from './kmd/export.js';
import { collectReceipts } from './kmd/collect.js';
import { Carrier } from './carrier/carrier.js';
import { injectBatch } from './link/inject.js';
import { Station } from './station/station.js';
import { StationStore } from './station/store.js';
import { openLinkRig } from './bench/link-rig.js';
import type { RigTransport } from './bench/link-rig.js';

export interface DemoTerminal {
  terminalId: string;
  injectedBits: number;
  injectSeconds: number;
  storedKeyBits: number;
  otpUplinks: number;
  aeadUplinks: number;
  aeadDownlinks: number;
  serviceBytes: number;
  terminalConsumedBits: number;
  stationConsumedBits: number;
}

export interface DemoResult {
  kmdId: string;
  transport: string;
  carrierId: string;
  supplyRateBitsPerSecond: number;
  terminals: DemoTerminal[];
  receiptsCollected: number;
  stationActivatedBits: number;
  /** Every message opened to the same bytes, and both sides consumed the same key bits. */
  ok: boolean;
  home?: string;
}

const TERMINALS = ['T1', 'T2', 'T3'];
const BATCH_BITS = 3 * 2 ** 20; // the paper's initial offline load: 3 Mbit

/** A meter reading as a distribution terminal would report it (about 120 bytes of JSON). */
function reading(terminalId: string, i: number): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ terminal: terminalId, seq: i, t: 1_764_000_000 + 60 * i, ua: 230.1 + (i % 7) / 10, ia: 12.5 + (i % 5), p_kw: 2.87 + i / 100, pf: 0.97 }));
}

export async function runDemo(o: { transport: RigTransport; keep?: string; messages?: number; log?: (s: string) => void; progress?: (done: number, total: number, label: string) => void }): Promise<DemoResult> {
  const log = o.log ?? (() => undefined);
  const messages = o.messages ?? 16;
  const dir = o.keep ?? mkdtempSync(join(tmpdir(), 'qkt-demo-'));
  const rate = 11_000; // the paper's online key rate
  try {
    // 1. The KMD and the factory step. Its supply runs at the paper's 11 kbit/s and starts with a
    //    stock of 16 Mbit (at 11 kbit/s, 3 Mbit takes 286 s to accrue).
    const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: rate, stockBits: 16 * 2 ** 20 });
    log(`KMD ${home.config.kmdId}: enrolling ${TERMINALS.join(', ')}`);
    for (const id of TERMINALS) enrollTerminal(home, id, join(dir, `${id}.img`));

    // 2. Export: seal 3 Mbit per terminal onto the carrier; the station gets the matching keys.
    const carrier = Carrier.init(join(dir, 'carrier'), { carrierId: 'car-demo', kmdId: home.config.kmdId });
    for (const id of TERMINALS) {
      const e = exportBatch(home, id, BATCH_BITS);
      carrier.addBatch(readOutbox(e));
      markOnCarrier(home, id, e.record.batchId, carrier.carrierId);
    }
    log(`carrier ${carrier.carrierId}: ${carrier.pending().length} sealed batches`);

    // 3. The field visit: each terminal's module, plugged in one by one.
    const results: DemoTerminal[] = [];
    const station = new Station(new StationStore(home.path('station')));
    let ok = true;
    let transport = '';
    const flashes: NorFlash[] = [];
    try {
      const rigs = [];
      for (const id of TERMINALS) {
        const flash = NorFlash.open(join(dir, `${id}.img`));
        flashes.push(flash);
        const rig = await openLinkRig(o.transport, undefined, createTerminal({ flash }));
        transport = rig.description;
        rigs.push(rig);
        const entry = carrier.batchFor(id)!;
        const r = await injectBatch(rig.session.client, rig.session.params, carrier.readBatch(entry), {
          onProgress: (p) => o.progress?.(p.bits, p.totalBits, `inject ${id}`),
        });
        carrier.recordReceipt(id, r.batchId, r.receipt);
        log(`${id}: ${r.bits} bits injected in ${r.seconds.toFixed(2)} s, receipt on the carrier`);
        results.push({ terminalId: id, injectedBits: r.bits, injectSeconds: Math.round(r.seconds * 1000) / 1000, storedKeyBits: 0, otpUplinks: 0, aeadUplinks: 0, aeadDownlinks: 0, serviceBytes: 0, terminalConsumedBits: 0, stationConsumedBits: 0 });
      }

      // 4. Back at the KMD: receipts verified, station keys activated.
      const collected = collectReceipts(home, carrier);
      log(`KMD collected ${collected.collected.length} receipts, ${collected.activatedBits} station key bits active`);

      // 5. Service traffic: OTP uplinks, then an AEAD session both ways.
      for (const [i, id] of TERMINALS.entries()) {
        const { client } = rigs[i]!.session;
        const res = results[i]!;
        res.storedKeyBits = ((await client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { storedKeyBits: number }).storedKeyBits;
        const otp = (await client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number;
        for (let k = 0; k < messages; k++) {
          const data = reading(id, k);
          const m = (await client.request(Group.KEYS, KeysCmd.SEAL, { s: otp, d: data }))['m'] as Uint8Array;
          ok &&= Buffer.compare(station.openUplink(id, m), data) === 0;
          res.otpUplinks++;
          res.serviceBytes += data.length;
        }
        const aead = (await client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any' }))['s'] as number;
        let sessionKey: KeyRange | undefined;
        for (let k = 0; k < messages; k++) {
          const data = reading(id, messages + k);
          const m = (await client.request(Group.KEYS, KeysCmd.SEAL, { s: aead, d: data }))['m'] as Uint8Array;
          sessionKey = decodeServiceHeader(m).header.keyIds[0];
          ok &&= Buffer.compare(station.openUplink(id, m), data) === 0;
          res.aeadUplinks++;
          res.serviceBytes += data.length;
        }
        for (let k = 0; k < 4; k++) {
          const cmd = new TextEncoder().encode(JSON.stringify({ cmd: 'set-interval', minutes: 1 + k }));
          const down = station.sealDownlink(id, sessionKey!, cmd);
          const got = (await client.request(Group.KEYS, KeysCmd.OPEN, { s: aead, m: down }))['d'] as Uint8Array;
          ok &&= Buffer.compare(got, cmd) === 0;
          res.aeadDownlinks++;
        }
        const pool = (await client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number };
        res.terminalConsumedBits = pool.consumedKeyBits;
        res.stationConsumedBits = station.consumedBits.get(id) ?? 0;
        ok &&= res.terminalConsumedBits === res.stationConsumedBits;
        log(`${id}: ${res.otpUplinks} OTP + ${res.aeadUplinks} AEAD uplinks, ${res.aeadDownlinks} downlinks; ${res.terminalConsumedBits} key bits used on each side`);
      }
      for (const rig of rigs) await rig.close();
      return {
        kmdId: home.config.kmdId,
        transport,
        carrierId: carrier.carrierId,
        supplyRateBitsPerSecond: rate,
        terminals: results,
        receiptsCollected: collected.collected.length,
        stationActivatedBits: collected.activatedBits,
        ok,
        ...(o.keep ? { home: dir } : {}),
      };
    } finally {
      station.close();
      for (const f of flashes) f.close();
    }
  } finally {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }
}
