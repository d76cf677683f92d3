// `qkt bench inject`: a full 8 Mbit sealed batch injected into a module whose flash is a file
// image (so every chunk is made durable with a real fsync), over a socat pty pair, unpaced and
// paced at 921600 baud. Reports wall time and goodput as a fraction of the line rate.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { createTerminal } from '../../firmware/terminal.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import { injectBatch } from '../link/inject.js';
import { openLinkRig } from './link-rig.js';
import type { RigTransport } from './link-rig.js';

export interface InjectBenchCase {
  name: string;
  transport: RigTransport;
  baud: number | null;
  keyBits: number;
  sealedBytes: number;
  seconds: number;
  /** Key bits per second delivered into the pool. */
  keyBitsPerSecond: number;
  /** Sealed bytes / (seconds * baud/10): how full the line was. */
  lineRateFraction: number | null;
  /** Key bytes / (seconds * baud/10): the same, counting only key material. */
  keyLineRateFraction: number | null;
  restarts: number;
}

export interface InjectBenchResult {
  bench: 'inject';
  date: string;
  node: string;
  cases: InjectBenchCase[];
}

export async function benchInjectCase(transport: RigTransport, baud: number | null, bits: number): Promise<InjectBenchCase> {
  const dir = mkdtempSync(join(tmpdir(), 'qkt-bench-inject-'));
  const flash = NorFlash.open(join(dir, 'module.img'));
  try {
    const deviceKey = new Uint8Array(randomBytes(32));
    enrollFlash(flash, { terminalId: 'B1', deviceKey });
    const sealed = sealBatch({
      deviceKey,
      header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'B1', seq: 1, purpose: 'any', bits, chunkSize: 4096, createdAt: Date.now() },
      keys: new Uint8Array(randomBytes(bits / 8)),
    });
    const rig = await openLinkRig(transport, baud ?? undefined, createTerminal({ flash }));
    try {
      const t0 = performance.now();
      const r = await injectBatch(rig.session.client, rig.session.params, sealed);
      const seconds = (performance.now() - t0) / 1000;
      const stored = rig.terminal.status()['pool'] as { storedKeyBits: number };
      if (stored.storedKeyBits !== bits) throw new Error(`bench injection stored ${stored.storedKeyBits} bits, expected ${bits}`);
      const line = baud ? baud / 10 : null;
      return {
        name: `${transport}${baud ? ` @${baud}` : ' unpaced'}`,
        transport,
        baud,
        keyBits: bits,
        sealedBytes: sealed.length,
        seconds: Math.round(seconds * 1e4) / 1e4,
        keyBitsPerSecond: Math.round(bits / seconds),
        lineRateFraction: line ? Math.round((sealed.length / seconds / line) * 1e4) / 1e4 : null,
        keyLineRateFraction: line ? Math.round((bits / 8 / seconds / line) * 1e4) / 1e4 : null,
        restarts: r.restarts,
      };
    } finally {
      await rig.close();
    }
  } finally {
    flash.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchInject(o: { bits?: number; bauds?: number[]; transport?: RigTransport; log?: (s: string) => void } = {}): Promise<InjectBenchResult> {
  const bits = o.bits ?? 2 ** 23;
  const cases: InjectBenchCase[] = [];
  for (const baud of [null, ...(o.bauds ?? [921_600])]) {
    o.log?.(`inject: ${bits} key bits over ${o.transport ?? 'pty'}${baud ? ` paced at ${baud} baud` : ' unpaced'}...`);
    cases.push(await benchInjectCase(o.transport ?? 'pty', baud, bits));
  }
  return { bench: 'inject', date: new Date().toISOString(), node: process.version, cases };
}

export function formatInjectBench(r: InjectBenchResult): string {
  return [
    `### Batch injection (${r.date.slice(0, 10)}, Node ${r.node})`,
    '',
    'Module flash is a file image: each 4 KiB chunk is verified (AES-256-GCM), staged and fsynced; the batch is committed atomically.',
    '',
    '| case | key bits | sealed bytes | seconds | key bits/s | sealed / line rate | key / line rate | restarts |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...r.cases.map((c) => `| ${c.name} | ${c.keyBits} | ${c.sealedBytes} | ${c.seconds} | ${c.keyBitsPerSecond} | ${c.lineRateFraction ?? '-'} | ${c.keyLineRateFraction ?? '-'} | ${c.restarts} |`),
  ].join('\n');
}
