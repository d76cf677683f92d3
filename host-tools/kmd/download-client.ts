// The carrier's side of the KMD download interface (`qkt carrier load --kmd PORT`): connect,
// authenticate with the carrier key, optionally ask for exports, read the notification and
// download each pending sealed batch onto the carrier, then tell the KMD it is taken.
import { DownloadCmd, Group } from '../../firmware/link/groups.js';
import { connectDevice } from '../link/session.js';
import { openCarrier } from '../cli/carrier-open.js';
import { CliError, Exit } from '../cli/command.js';
import type { ProgressSink } from '../cli/command.js';
import { carrierProof, readCarrierKey } from './carriers.js';
import { KmdError } from './home.js';

export interface DownloadResult {
  carrierId: string;
  carrier: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }>;
}

interface Pending {
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  bytes: number;
}

export async function downloadFromKmd(o: { port: string; carrierDir: string; terminals: string[]; bits?: number; progress?: ProgressSink }): Promise<DownloadResult> {
  const carrier = openCarrier(o.carrierDir);
  let key: Uint8Array;
  try {
    key = readCarrierKey(carrier.path);
  } catch (e) {
    if (e instanceof KmdError) throw new CliError(e.message, Exit.CARRIER);
    throw e;
  }
  if (o.terminals.length > 0 && o.bits === undefined) throw new CliError('--bits is required with --terminal', Exit.USAGE);
  const s = await connectDevice(o.port);
  try {
    const { client, params } = s;
    const hello = await client.request(Group.DOWNLOAD, DownloadCmd.HELLO, { carrier: carrier.carrierId });
    if (hello['kmdId'] !== carrier.kmdId) {
      throw new CliError(`the KMD on ${o.port} is ${String(hello['kmdId'])}; carrier ${carrier.carrierId} belongs to ${carrier.kmdId}`, Exit.CARRIER);
    }
    const mac = carrierProof(key, carrier.kmdId, carrier.carrierId, hello['challenge'] as Uint8Array);
    key.fill(0);
    await client.request(Group.DOWNLOAD, DownloadCmd.AUTH, { mac });
    let pending = (await client.request(Group.DOWNLOAD, DownloadCmd.NOTIFY, {}))['pending'] as Pending[];
    if (o.terminals.length > 0) {
      // Ask only for terminals that have nothing waiting (a re-run after a cut takes what is there).
      const missing = o.terminals.filter((id) => !pending.some((p) => p.terminalId === id));
      if (missing.length > 0) {
        pending = (await client.request(Group.DOWNLOAD, DownloadCmd.REQUEST, { terminals: missing, bits: o.bits! }, { timeoutMs: 60_000 }))['pending'] as Pending[];
      }
      pending = pending.filter((p) => o.terminals.includes(p.terminalId));
    }
    const total = pending.reduce((a, p) => a + p.bytes, 0);
    let done = 0;
    const loaded: DownloadResult['loaded'] = [];
    for (const p of pending) {
      const buf = new Uint8Array(p.bytes);
      // Pipelined reads, up to the KMD's window at once.
      for (let off = 0; off < p.bytes; ) {
        const reads: Array<Promise<void>> = [];
        for (let k = 0; k < params.window && off < p.bytes; k++, off += params.maxChunk) {
          const at = off;
          reads.push(
            client.request(Group.DOWNLOAD, DownloadCmd.READ, { b: p.batchId, o: at, n: params.maxChunk }, { expectBytes: params.maxChunk }).then((r) => {
              buf.set(r['d'] as Uint8Array, at);
              done += (r['d'] as Uint8Array).length;
              o.progress?.update(done, total, 'download');
            }),
          );
        }
        await Promise.all(reads);
      }
      const added = carrier.addBatch(buf); // validates the sealed layout before anything is written
      await client.request(Group.DOWNLOAD, DownloadCmd.TAKEN, { b: p.batchId });
      loaded.push({ terminalId: p.terminalId, batchId: p.batchId, seq: p.seq, bits: p.bits, outcome: added.outcome });
    }
    return { carrierId: carrier.carrierId, carrier: carrier.path, loaded };
  } finally {
    key.fill(0);
    await s.close();
  }
}
