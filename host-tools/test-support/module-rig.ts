// Test support: an enrolled module on an in-memory flash, a host client on an in-process cable,
// and sealed batches made the way the KMD makes them, with the plaintext kept for checking.
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash, POOL_OPTIONS } from '../../firmware/secure/enroll.js';
import { KeyPool, MAX_KEY_BYTES } from '../../firmware/keypool/key-pool.js';
import { createTerminal } from '../../firmware/terminal.js';
import type { Terminal, TerminalOptions } from '../../firmware/terminal.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import type { Purpose } from '../../firmware/crypto/batch.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from '../link/client.js';
import type { DeviceParams } from '../link/client.js';
import type { Transport } from '../../firmware/link/transport.js';
import { SECURE_SECTORS } from '../../firmware/secure/secure-area.js';

export interface Rig {
  flash: NorFlash;
  terminal: Terminal;
  client: LinkClient;
  params: DeviceParams;
  deviceKey: Uint8Array;
  terminalId: string;
  /** Everything the module sent, for leak checks. */
  sent: Uint8Array[];
  close(): Promise<void>;
  /** Reconnect the host on a fresh cable (after a pull); `wrap` wraps the new host end (fault injection). */
  reconnect(o?: { wrap?: (host: Transport) => Transport }): Promise<void>;
}

export function newFlash(): NorFlash {
  return NorFlash.memory();
}

export function enrolled(terminalId = 'T1', deviceKey: Uint8Array = new Uint8Array(randomBytes(32))): { flash: NorFlash; deviceKey: Uint8Array; terminalId: string } {
  const flash = newFlash();
  enrollFlash(flash, { terminalId, deviceKey });
  return { flash, deviceKey, terminalId };
}

export async function startRig(
  o: { flash?: NorFlash; deviceKey?: Uint8Array; terminalId?: string; terminal?: Partial<TerminalOptions>; enroll?: boolean; wrapHost?: (host: Transport) => Transport } = {},
): Promise<Rig> {
  const base = o.flash ? { flash: o.flash, deviceKey: o.deviceKey ?? new Uint8Array(32), terminalId: o.terminalId ?? 'T1' } : o.enroll === false ? { flash: newFlash(), deviceKey: new Uint8Array(32), terminalId: 'T1' } : enrolled(o.terminalId, o.deviceKey);
  const sent: Uint8Array[] = [];
  const terminal = createTerminal({ flash: base.flash, ...o.terminal });
  const connect = async (wrap?: (host: Transport) => Transport) => {
    const [host, device] = createInProcessPair({ names: ['host', 'module'] });
    terminal.attach(spy(device, sent));
    const client = new LinkClient(wrap ? wrap(host) : host, { baseTimeoutMs: 2000 });
    return { client, params: await client.negotiate() };
  };
  let c = await connect(o.wrapHost);
  const rig: Rig = {
    ...base,
    terminal,
    client: c.client,
    params: c.params,
    sent,
    close: async () => {
      await rig.client.close();
    },
    reconnect: async (r) => {
      await rig.client.close().catch(() => undefined);
      c = await connect(r?.wrap);
      rig.client = c.client;
      rig.params = c.params;
    },
  };
  return rig;
}

/** Wrap a device-side transport to record what the module sends. */
function spy(t: Transport, sent: Uint8Array[]): Transport {
  return {
    description: t.description,
    write: (b) => {
      sent.push(Uint8Array.from(b));
      return t.write(b);
    },
    onData: (l) => t.onData(l),
    onClose: (l) => t.onClose(l),
    close: () => t.close(),
  };
}

export interface TestBatch {
  sealed: Uint8Array;
  keys: Uint8Array;
  batchId: Uint8Array;
  seq: number;
  bits: number;
}

let seqCounter = 0;
export function makeBatch(deviceKey: Uint8Array, o: { terminalId?: string; bits?: number; seq?: number; purpose?: Purpose; chunkSize?: number } = {}): TestBatch {
  const bits = o.bits ?? 64 * 1024;
  const keys = new Uint8Array(randomBytes(bits / 8));
  const batchId = new Uint8Array(randomBytes(16));
  const seq = o.seq ?? ++seqCounter + 100;
  const sealed = sealBatch({
    deviceKey,
    header: { batchId, terminalId: o.terminalId ?? 'T1', seq, purpose: o.purpose ?? 'any', bits, chunkSize: o.chunkSize ?? 4096, createdAt: 1_700_000_000_000 },
    keys: keys.slice(),
  });
  return { sealed, keys, batchId, seq, bits };
}

/** Raw bytes of the key pool's region (every sector after the secure area), for "unchanged" checks. */
export function poolRegion(flash: NorFlash): Uint8Array {
  const start = SECURE_SECTORS * flash.geometry.sectorSize;
  return flash.peek(start, flash.geometry.size - start);
}

/** The module's pool as its status reports it (stored and consumed bits, batches, lastSeq, staging). */
export function poolOf(terminal: Terminal): Record<string, unknown> {
  return terminal.status()['pool'] as Record<string, unknown>;
}

/**
 * Offsets of every `width`-byte window of `secret` that occurs anywhere in `haystack` (sorted,
 * each once); empty = no leak. Indexes the secret's windows by their first 4 bytes, then slides
 * over the haystack once: fast enough to scan a whole flash image.
 */
export function findWindows(haystack: Uint8Array, secret: Uint8Array, width = 8): number[] {
  if (width < 4) throw new RangeError('width must be at least 4');
  const hay = Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength);
  const sec = Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
  const byPrefix = new Map<number, number[]>();
  for (let i = 0; i + width <= sec.length; i++) {
    const k = sec.readUInt32LE(i);
    const list = byPrefix.get(k);
    if (list) list.push(i);
    else byPrefix.set(k, [i]);
  }
  const hits = new Set<number>();
  for (let j = 0; j + width <= hay.length; j++) {
    const candidates = byPrefix.get(hay.readUInt32LE(j));
    if (!candidates) continue;
    for (const i of candidates) if (sec.compare(hay, j, j + width, i, i + width) === 0) hits.add(i);
  }
  return [...hits].sort((a, b) => a - b);
}

/**
 * Mount the pool on `flash` (as a fresh boot would; any module on it must be done) and consume
 * every key in pool order, `purpose` 'any': the plaintext the pool would serve, to compare with
 * what was sealed. Consumes them: the pool is empty afterwards.
 */
export function drainPool(flash: NorFlash): Uint8Array {
  const pool = KeyPool.mount(flash, POOL_OPTIONS);
  const parts: Uint8Array[] = [];
  for (;;) {
    const left = pool.status().storedKeyBits / 8;
    if (left === 0) break;
    // A key never spans batches: take each batch's remainder in one go.
    const b = pool.status().batches.find((x) => x.bits > x.consumedBits)!;
    parts.push(pool.consume('any', Math.min(MAX_KEY_BYTES, (b.bits - b.consumedBits) / 8)).key);
  }
  return Buffer.concat(parts);
}
