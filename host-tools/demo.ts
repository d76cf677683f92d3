// The `qkt demo` scenario: the whole chain on one machine. For now: an emulated terminal and a
// host on a link (in-process or a socat pty pair), negotiating, asking status and moving a bulk
// transfer through the windowed protocol; later stages plug in KMD, carrier and station.
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { DiagCmd, Group, SystemCmd } from '../firmware/link/groups.js';
import { sendBulk } from './link/bulk-sender.js';
import { openLinkRig } from './bench/link-rig.js';
import type { RigTransport } from './bench/link-rig.js';

export interface DemoStep {
  step: string;
  detail: string;
}

export interface DemoResult {
  transport: string;
  steps: DemoStep[];
  terminal: Record<string, unknown>;
  bulk: { bytes: number; seconds: number; checksumOk: boolean; restarts: number };
  link: { maxFrame: number; window: number; maxChunk: number; framesReceivedByTerminal: number; corruptFrames: number };
}

export async function runDemo(o: { transport: RigTransport; bytes?: number; log?: (s: string) => void }): Promise<DemoResult> {
  const steps: DemoStep[] = [];
  const step = (s: string, detail: string) => {
    steps.push({ step: s, detail });
    o.log?.(`- ${s}: ${detail}`);
  };
  const rig = await openLinkRig(o.transport);
  try {
    const { client, params } = rig.session;
    step('link', rig.description);
    step('negotiate', `protocol v${params.versions.join('/')}, frames up to ${params.maxFrame} B, window ${params.window}, chunks of ${params.maxChunk} B`);
    const st = await client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    step('status', `${st['firmware']}, ${st['enrolled'] ? `terminal ${st['terminalId']}` : 'blank module (not enrolled)'}`);
    const bytes = o.bytes ?? 1024 * 1024;
    const data = randomBytes(bytes);
    const id = (await client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: bytes }))['t'] as number;
    const t0 = performance.now();
    const res = await sendBulk({
      total: bytes,
      startOffset: 0,
      chunkSize: params.maxChunk,
      window: params.window,
      read: (off, n) => data.subarray(off, off + n),
      sendChunk: (off, d) => client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: id, o: off, d }),
      queryCommitted: async () => (await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id }))['c'] as number,
    });
    const seconds = (performance.now() - t0) / 1000;
    const check = await client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: id });
    const checksumOk = check['crc'] === crc32(data);
    step('bulk', `${bytes} bytes in ${res.chunksSent} chunks, ${seconds.toFixed(3)} s, checksum ${checksumOk ? 'matches' : 'MISMATCH'}`);
    const ls = rig.terminal.link.stats;
    return {
      transport: rig.description,
      steps,
      terminal: st,
      bulk: { bytes, seconds: Math.round(seconds * 1e4) / 1e4, checksumOk, restarts: res.restarts },
      link: { maxFrame: params.maxFrame, window: params.window, maxChunk: params.maxChunk, framesReceivedByTerminal: ls.frames, corruptFrames: ls.corrupt },
    };
  } finally {
    await rig.close();
  }
}
