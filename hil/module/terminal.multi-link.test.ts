// One module, several links (docs/protocol.md 4.9): a transfer belongs to the link that opened
// it; another link's BEGIN gets BUSY and changes nothing, its CHUNK/STATUS/ABORT find no
// transfer; the owner's link closing (or staying silent 30 s) frees the transfer for a resume;
// KEYS sessions belong to their link too; STATUS reports the asking link's counters; a closed
// link's queued requests are not executed.
import t from 'tap';
import { injectBatch } from '../../host-tools/link/inject.js';
import { createInProcessPair } from '../../host-tools/transports/inproc.js';
import { LinkClient } from '../../host-tools/link/client.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { DiagCmd, Group, InjectCmd, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import { Rc } from '../../firmware/link/errors.js';
import { TRANSFER_TAKEOVER_MS } from '../../firmware/commands/inject.js';
import { DeviceLink } from '../../firmware/link/device-link.js';
import { Dispatcher } from '../../firmware/link/dispatch.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { DEFAULT_LIMITS } from '../../firmware/terminal.js';
import { drainPool, makeBatch, poolOf, startRig } from '../../host-tools/test-support/module-rig.js';
import type { Rig } from '../../host-tools/test-support/module-rig.js';

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** A second host on its own cable to the rig's module. */
async function second(rig: Rig): Promise<{ client: LinkClient; close(): Promise<void> }> {
  const [host, device] = createInProcessPair({ names: ['B', 'module'] });
  rig.terminal.attach(device);
  const client = new LinkClient(host, { baseTimeoutMs: 2000 });
  await client.negotiate();
  return { client, close: () => client.close() };
}

/** BEGIN and `chunks` link chunks of `sealed` on `client`, by hand: a transfer left open mid-way. */
async function startTransfer(client: LinkClient, maxChunk: number, sealed: Uint8Array, chunks: number): Promise<{ t: number; c: number }> {
  const info = parseSealedHeader(sealed);
  const stream = sealed.subarray(info.chunksOffset, info.totalLength);
  const b = await client.request(Group.INJECT, InjectCmd.BEGIN, { h: sealed.subarray(0, info.chunksOffset) });
  const tid = b['t'] as number;
  let c = b['c'] as number;
  for (let i = 0; i < chunks; i++) c = (await client.request(Group.INJECT, InjectCmd.CHUNK, { t: tid, o: c, d: stream.subarray(c, c + maxChunk) }))['c'] as number;
  return { t: tid, c };
}

const headOf = (sealed: Uint8Array) => sealed.subarray(0, parseSealedHeader(sealed).chunksOffset);

t.test('a second link cannot begin, chunk, query or abort while another link injects', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const b = await second(rig);
  t.teardown(() => b.close());
  const x = makeBatch(rig.deviceKey, { bits: 256 * 1024 });
  const y = makeBatch(rig.deviceKey, { bits: 8192 });
  const a = await startTransfer(rig.client, rig.params.maxChunk, x.sealed, 2);
  const before = poolOf(rig.terminal);
  t.ok(((before['staging'] as { durableBits: number } | null)?.durableBits ?? 0) > 0, 'A has staged part of its batch');

  for (const [what, sealed] of [
    ['the same batch', x.sealed],
    ['another batch', y.sealed],
  ] as const) {
    await t.rejects(
      b.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(sealed) }),
      { name: 'LinkError', rc: Rc.BUSY, reason: `another connection is injecting batch ${Buffer.from(x.batchId).toString('hex').slice(0, 8)}` },
      `BEGIN of ${what} on link B: BUSY, naming the batch in progress`,
    );
  }
  for (const [cmd, payload] of [
    [InjectCmd.CHUNK, { t: a.t, o: a.c, d: new Uint8Array(16) }],
    [InjectCmd.STATUS, { t: a.t }],
    [InjectCmd.COMMIT, { t: a.t }],
    [InjectCmd.ABORT, { t: a.t }],
  ] as const) {
    await t.rejects(b.client.request(Group.INJECT, cmd, payload), { name: 'LinkError', rc: Rc.NO_TRANSFER }, `command ${cmd} with A's transfer id on link B: NO_TRANSFER`);
  }
  t.same(poolOf(rig.terminal), before, 'the pool (staging, durable offset) is as A left it');
  t.same(await rig.client.request(Group.INJECT, InjectCmd.STATUS, { t: a.t }), { c: a.c, n: parseSealedHeader(x.sealed).totalLength - parseSealedHeader(x.sealed).chunksOffset }, "A's transfer is still open where it was");

  // A finishes (its own BEGIN resumes its transfer); B's batch goes in afterwards.
  const r = await injectBatch(rig.client, rig.params, x.sealed);
  t.ok(r.resumedFromBits > 0, 'A resumed, not restarted');
  await injectBatch(b.client, rig.params, y.sealed);
  t.match(poolOf(rig.terminal), { storedKeyBits: x.bits + y.bits, staging: null });
  await rig.close();
  await b.close();
  t.ok(same(drainPool(rig.flash), Buffer.concat([x.keys, y.keys])), 'both batches byte-identical in the pool');
});

t.test("closing the owner's link frees the transfer: another link resumes it from the durable offset", async (t) => {
  const rig = await startRig();
  const b = await second(rig);
  t.teardown(() => b.close());
  const x = makeBatch(rig.deviceKey, { bits: 256 * 1024 });
  await startTransfer(rig.client, rig.params.maxChunk, x.sealed, 3);
  await rig.client.close();
  // No wait: the in-process cable ends the module side before close() resolves (inproc.ts), so
  // the transfer is free now.
  const r = await injectBatch(b.client, rig.params, x.sealed);
  t.ok(r.resumedFromBits > 0, `B resumed at ${r.resumedFromBits} bits`);
  await b.close();
  t.ok(same(drainPool(rig.flash), x.keys), 'batch byte-identical');
});

t.test('an owner silent for 30 s (module clock) is taken over; its next chunk finds no transfer', async (t) => {
  let now = 1_000_000;
  const rig = await startRig({ terminal: { clock: () => now } });
  t.teardown(() => rig.close());
  const b = await second(rig);
  t.teardown(() => b.close());
  const x = makeBatch(rig.deviceKey, { bits: 256 * 1024 });
  const a = await startTransfer(rig.client, rig.params.maxChunk, x.sealed, 2);
  now += TRANSFER_TAKEOVER_MS - 1;
  await t.rejects(b.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) }), { name: 'LinkError', rc: Rc.BUSY }, 'one ms short of the limit: BUSY');
  now += 1;
  const taken = await b.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) });
  t.ok((taken['c'] as number) > 0 && (taken['c'] as number) <= a.c, `B took over at the durable offset ${String(taken['c'])}`);
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.CHUNK, { t: a.t, o: a.c, d: new Uint8Array(16) }), { name: 'LinkError', rc: Rc.NO_TRANSFER }, "A's old transfer is gone");
  await injectBatch(b.client, rig.params, x.sealed);
  t.match(poolOf(rig.terminal), { storedKeyBits: x.bits, staging: null });
});

t.test("STATUS reports the asking link's counters", async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  for (let i = 0; i < 5; i++) await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
  const b = await second(rig); // attached last
  t.teardown(() => b.close());
  const mine = (await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['link'] as { requests: number };
  const theirs = (await b.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['link'] as { requests: number };
  t.equal(mine.requests, 7, 'A: PARAMS and 6 STATUS (this one counted as it runs)');
  t.equal(theirs.requests, 2, 'B: PARAMS and this STATUS');
});

t.test("a link that closes with requests queued: the running one finishes, the queued ones never run", async (t) => {
  const d = new Dispatcher();
  const ran: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let running!: () => void;
  const firstRuns = new Promise<void>((r) => (running = r));
  d.register({
    id: 9,
    name: 'spend',
    commands: {
      0: async (p) => {
        ran.push(p['n'] as number);
        if (p['n'] === 1) {
          running();
          await gate; // the first request is running when the cable goes
        }
        return {};
      },
    },
  });
  const [host, device] = createInProcessPair();
  new DeviceLink(device, d, DEFAULT_LIMITS);
  for (const n of [1, 2, 3]) await host.write(encodeMessage({ kind: Kind.REQUEST, group: 9, command: 0, seq: n, payload: { n } }));
  await firstRuns;
  t.same(ran, [1], 'the first request is running, two queued');
  await host.close();
  release();
  // Nothing to wait for: the check is that nothing more happens. 20 ms bounds it (the queued
  // requests would run in the microtasks right after the release).
  await new Promise((r) => setTimeout(r, 20));
  t.same(ran, [1], 'requests 2 and 3 were dropped with the link');
});

t.test("KEYS sessions belong to their link: another link can neither use, close nor evict them", async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  await injectBatch(rig.client, rig.params, makeBatch(rig.deviceKey, { bits: 64 * 1024 }).sealed);
  const b = await second(rig);
  t.teardown(() => b.close());
  const s = (await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number;
  const before = poolOf(rig.terminal);
  for (const [cmd, payload] of [
    [KeysCmd.SEAL, { s, d: new Uint8Array(16) }],
    [KeysCmd.OPEN, { s, m: new Uint8Array(64) }],
    [KeysCmd.CLOSE, { s }],
  ] as const) {
    await t.rejects(b.client.request(Group.KEYS, cmd, payload), { name: 'LinkError', rc: Rc.NO_TRANSFER }, `command ${cmd} with A's session on link B: NO_TRANSFER`);
  }
  t.same(poolOf(rig.terminal), before, 'no key spent by B');
  // B fills its own four sessions and a fifth: its own oldest goes, A's stays.
  const bs: number[] = [];
  for (let i = 0; i < 5; i++) bs.push((await b.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number);
  await t.rejects(b.client.request(Group.KEYS, KeysCmd.SEAL, { s: bs[0]!, d: new Uint8Array(16) }), { name: 'LinkError', rc: Rc.NO_TRANSFER }, "B's fifth session evicted B's first");
  t.ok((await b.client.request(Group.KEYS, KeysCmd.SEAL, { s: bs[4]!, d: new Uint8Array(16) }))['m'] instanceof Uint8Array, "B's newest works");
  t.ok((await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(16) }))['m'] instanceof Uint8Array, "A's session still works");
});

/** A host on its own in-process cable with its raw transport too (to send bytes by hand). */
async function rawSecond(rig: Rig) {
  const [host, device] = createInProcessPair({ names: ['A2', 'module'] });
  rig.terminal.attach(device);
  const client = new LinkClient(host, { baseTimeoutMs: 2000 });
  await client.negotiate();
  return { host, client };
}

t.test('bytes of a chunk still arriving on the owner link keep its transfer; silence after them frees it', async (t) => {
  let now = 1_000_000;
  const rig = await startRig({ terminal: { clock: () => now } });
  t.teardown(() => rig.close());
  const a = await rawSecond(rig);
  t.teardown(() => a.client.close());
  const x = makeBatch(rig.deviceKey, { bits: 256 * 1024 });
  const tr = await startTransfer(a.client, rig.params.maxChunk, x.sealed, 1);
  const info = parseSealedHeader(x.sealed);
  const stream = x.sealed.subarray(info.chunksOffset, info.totalLength);
  // A slow line: one chunk frame takes longer than the takeover time to arrive, in pieces.
  const frame = encodeMessage({ kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.CHUNK, seq: 60_000, payload: { t: tr.t, o: tr.c, d: stream.subarray(tr.c, tr.c + rig.params.maxChunk) } });
  const third = Math.floor(frame.length / 3);
  for (const piece of [frame.subarray(0, third), frame.subarray(third, 2 * third)]) {
    now += TRANSFER_TAKEOVER_MS - 1000;
    await a.host.write(piece);
    await new Promise((r) => setTimeout(r, 10));
  }
  now += TRANSFER_TAKEOVER_MS - 1000; // about 90 s since A's last whole request, 29 s since its last byte
  await t.rejects(rig.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) }), { name: 'LinkError', rc: Rc.BUSY }, 'a live owner on a slow line is not taken over');
  await a.host.write(frame.subarray(2 * third));
  await new Promise((r) => setTimeout(r, 20));
  t.same(await a.client.request(Group.INJECT, InjectCmd.STATUS, { t: tr.t }), { c: tr.c + rig.params.maxChunk, n: stream.length }, "the slow chunk landed in A's transfer");
  now += TRANSFER_TAKEOVER_MS;
  const taken = await rig.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) });
  t.ok(typeof taken['t'] === 'number', 'an owner silent (no request, no byte) for the takeover time is taken over');
});

/** A client whose request() runs `before` once, ahead of the `nth` INJECT CHUNK it sends. */
function interceptChunk(client: LinkClient, nth: number, before: () => Promise<void>): LinkClient {
  let chunks = 0;
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop !== 'request') return Reflect.get(target, prop, receiver) as unknown;
      return async (group: number, command: number, payload: Record<string, unknown>, o?: object) => {
        if (group === Group.INJECT && command === InjectCmd.CHUNK && ++chunks === nth) await before();
        return target.request(group, command, payload as never, o as never);
      };
    },
  });
}

t.test('host inject whose transfer is taken over: BEGINs again, gets BUSY while the other holds it, resumes once it is gone', async (t) => {
  let now = 1_000_000;
  const rig = await startRig({ terminal: { clock: () => now } });
  t.teardown(() => rig.close());
  const x = makeBatch(rig.deviceKey, { bits: 256 * 1024 });
  const params = { ...rig.params, window: 1 }; // one chunk in flight: the takeover lands between two
  // Taken over and held: the re-BEGIN is answered BUSY (the CLI's exit 7), not NO_TRANSFER.
  const b = await second(rig);
  const held = interceptChunk(rig.client, 3, async () => {
    now += TRANSFER_TAKEOVER_MS;
    await b.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) });
  });
  await t.rejects(injectBatch(held, params, x.sealed), { name: 'LinkError', rc: Rc.BUSY }, 'BUSY after the re-BEGIN');
  // Taken over, then the taker's link closes: the re-BEGIN resumes from what the pool holds.
  await b.close(); // B's hold ends
  await new Promise((r) => setTimeout(r, 20));
  const c = await second(rig);
  const gone = interceptChunk(rig.client, 2, async () => {
    now += TRANSFER_TAKEOVER_MS;
    await c.client.request(Group.INJECT, InjectCmd.BEGIN, { h: headOf(x.sealed) });
    await c.close();
    await new Promise((r) => setTimeout(r, 20));
  });
  const r = await injectBatch(gone, params, x.sealed);
  t.ok(r.restarts >= 1, `the host began again (${r.restarts} restart(s))`);
  t.ok(r.resumedFromBits > 0, 'and resumed, not restarted from zero');
  t.match(poolOf(rig.terminal), { storedKeyBits: x.bits, staging: null });
  await rig.close();
  t.ok(same(drainPool(rig.flash), x.keys), 'batch byte-identical');
});

t.test('the DIAG sink belongs to its link: another link cannot see, write into or replace it; ids are not counted', async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  const b = await second(rig);
  t.teardown(() => b.close());
  const a1 = (await rig.client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: 8 }))['t'] as number;
  await rig.client.request(Group.DIAG, DiagCmd.SINK_CHUNK, { t: a1, o: 0, d: new Uint8Array([1, 2, 3, 4]) });
  for (const [cmd, payload] of [
    [DiagCmd.SINK_CHUNK, { t: a1, o: 4, d: new Uint8Array([9, 9, 9, 9]) }],
    [DiagCmd.SINK_STATUS, { t: a1 }],
  ] as const) {
    await t.rejects(b.client.request(Group.DIAG, cmd, payload), { name: 'LinkError', rc: Rc.NO_TRANSFER }, `DIAG ${cmd} with A's sink id on link B: NO_TRANSFER`);
  }
  const b1 = (await b.client.request(Group.DIAG, DiagCmd.SINK_BEGIN, { n: 4 }))['t'] as number;
  t.not(b1, a1 + 1, 'ids are not counted up');
  t.match(await rig.client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: a1 }), { c: 4, n: 8 }, "B's SINK_BEGIN did not replace A's sink");
  t.match(await b.client.request(Group.DIAG, DiagCmd.SINK_STATUS, { t: b1 }), { c: 0, n: 4 }, "B has its own");
});

t.test('a peer that never reads its replies is closed once its unsent output passes the limit; the module serves on', async (t) => {
  const rig = await startRig({ terminal: { limits: { maxUnsentFrames: 64 } } });
  t.teardown(() => rig.close());
  // A transport whose writes are never taken (a peer with its receive window full).
  const [host, device] = createInProcessPair({ names: ['sink', 'module'] });
  let closed = false;
  let writes = 0;
  const stuck = { ...device, description: 'stuck', write: () => (writes++, new Promise<void>(() => undefined)), close: () => ((closed = true), device.close()) };
  let shed = '';
  rig.terminal.attach(stuck, { onShed: (why) => (shed = why) });
  const frames = Array.from({ length: 400 }, (_, i) => encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: i + 1, payload: {} }));
  for (let i = 0; i < frames.length && !closed; i++) {
    await host.write(frames[i]!).catch(() => undefined);
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 50));
  t.ok(closed, 'the link closed its transport');
  t.match(shed, /does not read/, 'and said why');
  t.ok(writes <= 64, `at most the limit of frames (${writes}) was ever queued to it`);
  t.equal((await rig.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['state'], 'ready', 'the other link is served');
});

t.test("on the module's only cable (overflow 'drop') a peer that does not read loses answers, the link stays", async (t) => {
  const rig = await startRig({ terminal: { limits: { maxUnsentFrames: 64 } } });
  t.teardown(() => rig.close());
  const [host, device] = createInProcessPair({ names: ['serial host', 'module'] });
  let closed = false;
  let writes = 0;
  const stuck = { ...device, description: 'stuck', write: () => (writes++, new Promise<void>(() => undefined)), close: () => ((closed = true), device.close()) };
  const link = rig.terminal.attach(stuck, { overflow: 'drop' });
  for (let i = 0; i < 400; i++) {
    await host.write(encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, seq: i + 1, payload: {} }));
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 50));
  t.equal(closed, false, 'the cable is not closed');
  t.ok(link.open, 'the link is open');
  t.equal(writes, 64, 'answers past the limit were dropped, not queued');
  t.equal(link.stats.frames, 400, 'and every frame was still read');
});
