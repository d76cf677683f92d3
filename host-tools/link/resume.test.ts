// Resumable injection and stopping, in process: sendBulk stops at a chunk boundary on abort;
// injectResuming reopens after the module "restarts" (a new module on the same flash, its RAM
// state gone) and delivers the batch once; gives up past its bounds with LinkLostError; stops
// with InjectStoppedError while it waits to reopen.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { NorFlash } from '../../firmware/flash/nor-flash.js';
import { enrollFlash } from '../../firmware/secure/enroll.js';
import { createTerminal } from '../../firmware/terminal.js';
import { sealBatch } from '../../firmware/crypto/batch.js';
import { Group, SystemCmd } from '../../firmware/link/groups.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import type { Transport } from '../../firmware/link/transport.js';
import { createInProcessPair } from '../transports/inproc.js';
import { LinkClient } from './client.js';
import { sendBulk } from './bulk-sender.js';
import { injectResuming, InjectStoppedError, LinkLostError } from './resume.js';
import type { LinkSession } from './resume.js';
import { StoppedError } from './stop.js';

const deviceKey = new Uint8Array(randomBytes(32));
const BITS = 64 * 1024 * 8; // 64 KiB of key: 16 sealed chunks of 4096
const sealed = sealBatch({
  deviceKey,
  header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'T1', seq: 1, purpose: 'any', bits: BITS, chunkSize: 4096, createdAt: 1_700_000_000_000 },
  keys: new Uint8Array(randomBytes(BITS / 8)),
});

function enrolled(): NorFlash {
  const flash = NorFlash.memory();
  enrollFlash(flash, { terminalId: 'T1', deviceKey });
  return flash;
}

/** A module booted on `flash` (a restart is a new one on the same flash) and a session to it. */
async function boot(flash: NorFlash): Promise<LinkSession & { device: Transport }> {
  const [host, device] = createInProcessPair();
  createTerminal({ flash, transport: device });
  const client = new LinkClient(host);
  const params = await client.negotiate();
  return { client, params, device, close: () => client.close() };
}

t.test('sendBulk stops at a chunk boundary on abort, with the offset the device acknowledged', async (t) => {
  const abort = new AbortController();
  const sent: number[] = [];
  let device = 0;
  const err = await sendBulk({
    total: 100,
    startOffset: 0,
    chunkSize: 10,
    window: 2,
    read: (o, n) => new Uint8Array(n).fill(o),
    sendChunk: async (o, d) => {
      sent.push(o);
      if (o === 30) abort.abort(new StoppedError('SIGINT'));
      await new Promise((r) => setImmediate(r));
      device = Math.max(device, o + d.length);
      return { c: device };
    },
    queryCommitted: async () => device,
    signal: abort.signal,
  }).catch((e: unknown) => e);
  t.type(err, StoppedError);
  t.equal((err as StoppedError).signal, 'SIGINT', 'the reason names the signal');
  t.same(sent, [0, 10, 20, 30], 'no chunk after the signal (the window had 20 and 30 in flight)');
});

t.test('a module restart mid-transfer: reopened, resumed from its durable offset, delivered once', async (t) => {
  const flash = enrolled();
  const first = await boot(flash);
  let opens = 0;
  let cut = false;
  const notes: string[] = [];
  const r = await injectResuming(first, {
    sealed,
    chunkBytes: 4112,
    connect: async () => {
      opens++;
      return boot(flash);
    },
    onNote: (l) => notes.push(l),
    onProgress: (p) => {
      // Power cut half way: the module's end of the cable goes dead, its RAM (the transfer) with it.
      if (!cut && p.bits >= BITS / 2) {
        cut = true;
        void first.device.close();
      }
    },
  });
  t.equal(opens, 1, 'the port was reopened once');
  t.equal(r.resumes, 1, 'one resume counted');
  t.equal(r.resumedFromBits, 0, 'this run began at 0');
  t.match(notes, [/^link lost: the link closed; terminal T1 holds at least [\d.]+ kbit of 512 kbit of batch [0-9a-f]{8}; reopening the port/]);
  const check = await boot(flash);
  const st = await check.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  t.match(st, { pool: { storedKeyBits: BITS, staging: null, batches: [{ bits: BITS }] } });
  t.equal((st['pool'] as { batches: unknown[] }).batches.length, 1, 'exactly once');
  await check.close();
});

t.test('the module never comes back: LinkLostError within the wait, saying what it holds', async (t) => {
  const flash = enrolled();
  const first = await boot(flash);
  let tries = 0;
  let cut = false;
  const err = await injectResuming(first, {
    sealed,
    chunkBytes: 4112,
    waitMs: 300,
    rerun: 'qkt inject --carrier C --port P',
    connect: async () => {
      tries++;
      throw new Error('cannot open P: ENOENT');
    },
    onProgress: (p) => {
      if (!cut && p.bits >= BITS / 4) {
        cut = true;
        void first.device.close();
      }
    },
  }).catch((e: unknown) => e);
  t.type(err, LinkLostError);
  t.ok(tries >= 1 && tries <= 3, `reopened ${tries} time(s) in 300 ms (pauses 0.25 s, 0.5 s)`);
  t.match((err as Error).message, /^link lost: the link closed and the port gave no terminal in 0 s \(\d tr(y|ies); last: cannot open P: ENOENT\); terminal T1 holds at least \d+ kbit of 512 kbit of batch [0-9a-f]{8}: a re-run resumes from there: qkt inject --carrier C --port P$/);
  t.ok((err as LinkLostError).state.heldBits >= BITS / 4, 'the state it reports is what the module acknowledged');
});

t.test('losses in a row with no progress are bounded', async (t) => {
  const flash = enrolled();
  const first = await boot(flash);
  let opens = 0;
  const err = await injectResuming(first, {
    sealed,
    maxLosses: 2,
    connect: async () => {
      opens++;
      const s = await boot(flash);
      void s.device.close(); // dies at once, every time
      return s;
    },
    onProgress: () => void first.device.close(),
  }).catch((e: unknown) => e);
  t.type(err, LinkLostError);
  t.equal(opens, 2, 'two reopens, then the third loss in a row gives up');
  t.match((err as Error).message, /the link closed \(2 times in a row with no progress\)/);
});

t.test('a stop while waiting to reopen: InjectStoppedError naming the signal', async (t) => {
  const flash = enrolled();
  const first = await boot(flash);
  const abort = new AbortController();
  const err = await injectResuming(first, {
    sealed,
    signal: abort.signal,
    rerun: 'qkt inject --carrier C --port P',
    connect: () => new Promise<never>(() => abort.abort(new StoppedError('SIGTERM'))), // never opens
    onProgress: () => void first.device.close(),
  }).catch((e: unknown) => e);
  t.type(err, InjectStoppedError);
  t.equal((err as InjectStoppedError).signal, 'SIGTERM');
  t.match((err as Error).message, /^stopped: terminal T1 holds at least \d+ (k?bit) of 512 kbit of batch [0-9a-f]{8}; resume with: qkt inject --carrier C --port P$/);
});

t.test('a module that forgets and re-takes one chunk, then two, in turn, is not progress: bounded', async (t) => {
  // A faulty or lying module: each BEGIN answers offset 0, it acknowledges one chunk (odd BEGINs)
  // or two (even ones), then answers NO_TRANSFER. What it holds at each loss goes up and down
  // around the same two values; before, every rise over the previous loss reset the count.
  let begins = 0;
  let acked = 0;
  const request = async (group: number, command: number, p: Record<string, unknown>): Promise<Record<string, unknown>> => {
    if (group !== Group.INJECT) throw new Error(`unexpected group ${group}`);
    if (command === 0) {
      if (++begins > 200) throw new Error('unbounded: 200 BEGINs');
      acked = 0;
      return { t: 1, c: 0 };
    }
    if (command === 1) {
      if (++acked > 1 + (begins % 2)) throw new LinkError(Rc.NO_TRANSFER, 'forgot');
      return { c: (p['o'] as number) + (p['d'] as Uint8Array).length };
    }
    return { c: 0 };
  };
  const client = { request, lastReceiveAt: performance.now(), answerTimeoutMs: () => 1000, bestChunk: () => undefined, wireBytes: (n: number) => n, lineLost: () => undefined } as unknown as LinkClient;
  const session: LinkSession = { client, params: { versions: [1], maxFrame: 8256, window: 4, maxChunk: 4112, firmware: 'liar' }, close: async () => undefined };
  const err = await injectResuming(session, { sealed, connect: async () => session }).catch((e: unknown) => e);
  t.type(err, LinkLostError, (err as Error).message);
  t.match((err as Error).message, /\(5 times in a row with no progress\)/);
  t.ok(begins <= 8, `gave up after ${begins} BEGINs`);
});

t.test('sendBulk leaves no abort listener behind, however it ends (a run resumes many times on one signal)', async (t) => {
  const abort = new AbortController();
  const base = { total: 40, startOffset: 0, chunkSize: 10, window: 2, read: (o: number, n: number) => new Uint8Array(n).fill(o), queryCommitted: async () => 0, signal: abort.signal };
  for (let i = 0; i < 12; i++) {
    await sendBulk({ ...base, sendChunk: async (o, d) => ({ c: o + d.length }) });
    await sendBulk({ ...base, sendChunk: async () => Promise.reject(new LinkError(Rc.NO_TRANSFER, 'forgot')) }).catch(() => undefined);
  }
  t.equal(getEventListeners(abort.signal, 'abort').length, 0, 'no listener left on the signal');
});

t.test('the last progress of a batch whose last chunk is short is the whole batch (the bar ends at 100%)', async (t) => {
  const bits = 200 * 1024; // 25600 bytes: 6.25 chunks of 4096
  const short = sealBatch({
    deviceKey,
    header: { batchId: new Uint8Array(randomBytes(16)), terminalId: 'T1', seq: 1, purpose: 'any', bits, chunkSize: 4096, createdAt: 1_700_000_000_000 },
    keys: new Uint8Array(randomBytes(bits / 8)),
  });
  const first = await boot(enrolled());
  const seen: number[] = [];
  await injectResuming(first, { sealed: short, connect: () => Promise.reject(new Error('no reopen')), onProgress: (p) => seen.push(p.bits) });
  await first.close();
  t.equal(seen.at(-1), bits, `ends at ${seen.at(-1)} of ${bits} bits`);
});

t.test("a module's PARAMS baud: replies timed by the slower end, but never slower than 9600 baud", async (t) => {
  const timeouts: Record<string, number> = {};
  for (const [name, lineRate] of [['unpaced', undefined], ['19200', 19_200], ['a liar at 1 baud', 1]] as const) {
    const [host, device] = createInProcessPair();
    createTerminal({ flash: enrolled(), transport: device, ...(lineRate ? { lineRate } : {}) });
    const client = new LinkClient(host, { baud: 115_200, baseTimeoutMs: 1000 });
    const params = await client.negotiate();
    t.equal(params['baud'], lineRate, `${name}: PARAMS baud`);
    timeouts[name] = client.answerTimeoutMs(8192, 16) - 1000;
    await client.close();
  }
  const at = (baud: number) => 2 * (8192 + 16) * (10_000 / baud);
  t.equal(timeouts['unpaced'], at(115_200), "no baud: the host's own rate");
  t.equal(timeouts['19200'], at(19_200), "19200: the module's, the slower");
  t.equal(timeouts['a liar at 1 baud'], at(9600), 'a device claiming 1 baud: held at 9600 (about 17 s for a full chunk, not 46 hours)');
});
