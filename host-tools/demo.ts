// The `qkt demo` scenario: the paper's offline distribution end to end on one machine. A KMD
// enrols three terminals, seals 3 Mbit for each onto a carrier, the "field engineer" injects each
// terminal's module over a link (in-process or a socat pty pair), the KMD collects the receipts
// and activates the station's matching keys, and then every terminal talks to the master station:
// OTP uplinks, and an AEAD session with uplinks and downlinks. Then each terminal sends the
// service traffic of one of the paper's user classes (A, C, E) at the field's pace through a shaped
// 64 kbit/s network link to the station service on mutual TLS, and the demo prints a small Table I
// of its own (docs/traffic.md). The summary checks both sides consumed exactly the same key bits.
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
import { openStationStore } from './station/open-store.js';
import { openLinkRig } from './bench/link-rig.js';
import type { RigTransport } from './bench/link-rig.js';
import { LinkClient } from './link/client.js';
import { ensurePki, pkiDir } from './kmd/serve.js';
import { startStationServer } from './station/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from './station/certs.js';
import { connectStation } from './station/connect.js';
import { CLASSES, forecastFor, runTraffic } from './station/traffic.js';
import type { ClassForecast, ClassId, TrafficResult } from './station/traffic.js';
import { startShapedRelay } from './transports/shaped-relay.js';

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
  /** Step 6: each terminal's service traffic as a user class, through a shaped link (a small Table I). */
  traffic: { seconds: number; linkBitsPerSecond: number; rows: Array<TrafficResult & { forecast: ClassForecast }> };
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

/** Step 6: the user class each demo terminal's traffic is. */
const TRAFFIC_CLASSES: ClassId[] = ['A', 'C', 'E'];
const LINK_BITS_PER_SECOND = 64_000;

export async function runDemo(o: { transport: RigTransport; keep?: string; messages?: number; trafficSeconds?: number; log?: (s: string) => void; progress?: (done: number, total: number, label: string) => void }): Promise<DemoResult> {
  const log = o.log ?? (() => undefined);
  const messages = o.messages ?? 16;
  const trafficSeconds = o.trafficSeconds ?? 5;
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
    const station = new Station(openStationStore(home.path('station')));
    let ok = true;
    let transport = '';
    const flashes: NorFlash[] = [];
    try {
      const rigs: Array<Awaited<ReturnType<typeof openLinkRig>>> = [];
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
      station.close();

      // 6. Service traffic of the paper's user classes, at once, each terminal on its own shaped
      //    64 kbit/s link (20 ms, +-5 ms, 1% of TCP segments lost) to the station service.
      const cert = await home.locked(async () => {
        await ensurePki(home);
        return ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1'));
      });
      const server = await startStationServer({ stationDir: home.path('station'), listen: 'tls:127.0.0.1:0', tls: cert.pems });
      const shape = { rate: LINK_BITS_PER_SECOND, latencyMs: 20, jitterMs: 5, loss: 0.01 };
      const opened: Array<{ close(): Promise<void> }> = [];
      let rows: Array<TrafficResult & { forecast: ClassForecast }>;
      try {
        log(`service traffic: ${TERMINALS.map((id, i) => `${id} class ${TRAFFIC_CLASSES[i]}`).join(', ')} for ${trafficSeconds} s, T = 1 min, each over a shaped ${LINK_BITS_PER_SECOND / 1000} kbit/s link to the station on mutual TLS`);
        rows = await Promise.all(
          TERMINALS.map(async (id, i) => {
            await issueStationClientCert(pkiDir(home), { kind: 'terminal', id, generation: home.terminal(id).generation ?? 1 }, join(dir, `station-cert-${id}`));
            const relay = await startShapedRelay({ listen: '127.0.0.1:0', target: server.address.replace(/^tls:/, ''), up: { ...shape, seed: i + 1 }, down: { ...shape, seed: i + 101 } });
            opened.push(relay);
            const link = new LinkClient(await connectStation(`tls:127.0.0.1:${relay.address.port}`, readClientPems(join(dir, `station-cert-${id}`))), { baseTimeoutMs: 10_000, retries: 0 });
            opened.push(link);
            await link.negotiate();
            const before = (await rigs[i]!.session.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number };
            const r = await runTraffic({ terminal: rigs[i]!.session.client, station: link, terminalId: id, cls: CLASSES[TRAFFIC_CLASSES[i]!], tMs: 60_000, durationMs: trafficSeconds * 1000, seed: i + 1, mode: 'otp', supplyBitsPerSecond: rate, deadlineMs: 3000 });
            const after = (await rigs[i]!.session.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number; storedKeyBits: number };
            // The module spent exactly what the station consumed for the traffic.
            ok &&= r.failed === 0 && after.consumedKeyBits - before.consumedKeyBits === r.keyBits;
            results[i]!.terminalConsumedBits = after.consumedKeyBits;
            results[i]!.stationConsumedBits += r.keyBits;
            // When the rest of the pool runs dry at the class's average use, offline only: the
            // next field visit's date (qkt status --class shows the same).
            return { ...r, forecast: forecastFor(after.storedKeyBits, CLASSES[TRAFFIC_CLASSES[i]!], 0) };
          }),
        );
      } finally {
        for (const c of opened.reverse()) await c.close().catch(() => undefined);
        await server.close();
      }
      for (const r of rows) log(`${r.terminalId} class ${r.class}: ${r.messages} messages, access delay median ${((r.accessDelayMs?.median ?? 0) / 1000).toFixed(3)} s, cipher ${(r.cipherBitsPerSecond / 1000).toFixed(2)} kbit/s, key use ${r.keyUseRate.toFixed(3)}`);
      for (const rig of rigs) await rig.close();
      return {
        kmdId: home.config.kmdId,
        transport,
        carrierId: carrier.carrierId,
        supplyRateBitsPerSecond: rate,
        terminals: results,
        receiptsCollected: collected.collected.length,
        stationActivatedBits: collected.activatedBits,
        traffic: { seconds: trafficSeconds, linkBitsPerSecond: LINK_BITS_PER_SECOND, rows },
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
