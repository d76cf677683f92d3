// A terminal on TCP with several clients at once (issue 9 item 2, docs/protocol.md 4.9): an 8 Mbit
// inject beside a loop of `qkt status` processes and audit reads, all complete and the batch is
// intact; closing one connection leaves another's inject running and its LOW_WATERMARK events
// coming; a second inject gets BUSY (exit 7) and changes nothing; the 9th connection is answered
// DENIED (exit 7) and closed; a silent connection is closed. Batches are real: a KMD home, enrolled
// images and a carrier made by `qkt`. Processes are ended by pid (hil/cli.ts, e2e-rig.ts).
import t from 'tap';
import type { Test } from 'tap';
import { join } from 'node:path';
import { DiagCmd, Group, KeysCmd, SystemCmd, SystemEvent } from '../firmware/link/groups.js';
import { Kind } from '../firmware/link/frame.js';
import { LinkError, Rc } from '../firmware/link/errors.js';
import { connectTcp, parseTcpAddress } from '../host-tools/transports/tcp.js';
import { paced } from '../host-tools/transports/pacing.js';
import { LinkClient } from '../host-tools/link/client.js';
import type { DeviceParams } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import type { InjectProgress } from '../host-tools/link/inject.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import { startTerminalHost, TCP_MAX_CLIENTS } from '../host-tools/terminal-host.js';
import type { TerminalHost, TerminalHostOptions } from '../host-tools/terminal-host.js';
import net from 'node:net';
import { encodeMessage, decodeMessage } from '../firmware/link/codec.js';
import type { Message, Payload } from '../firmware/link/codec.js';
import { Deframer } from '../firmware/link/framer.js';
import { background, cliSkipReason, parseJson, qktJson, runQkt } from './e2e-rig.js';

t.setTimeout(300_000);
const skip = cliSkipReason();
const MBIT8 = 8 * 2 ** 20;

interface Kit {
  image: (id: string) => string;
  carrier: string;
}

// One KMD home, four enrolled terminals, one carrier with an 8 Mbit batch for each.
let kit: Kit;
t.before(async () => {
  if (skip) return;
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const image = (id: string) => join(dir, `${id}.img`);
  const carrier = join(dir, 'carrier');
  const ids = ['T1', 'T2', 'T3', 'T4', 'T5'];
  await qktJson(t, ['kmd', 'init', '--home', home, '--stock', '48Mbit']);
  for (const id of ids) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', image(id)]);
  await qktJson(t, ['carrier', 'load', '--init', '--home', home, '--carrier', carrier, ...ids.flatMap((id) => ['--terminal', id]), '--bits', '8Mbit']);
  kit = { image, carrier };
});

const batchOf = (id: string): Uint8Array => {
  const c = Carrier.open(kit.carrier);
  return c.readBatch(c.batchFor(id)!);
};

/** A host session on its own TCP connection, paced to `baud` host-to-module when given. */
async function connect(t: Test, address: string, baud?: number): Promise<{ client: LinkClient; params: DeviceParams }> {
  const { host, port } = parseTcpAddress(address);
  const raw = await connectTcp(host, port);
  const client = new LinkClient(baud ? paced(raw, { baud }) : raw, { baseTimeoutMs: 5000, ...(baud ? { baud } : {}) });
  t.teardown(() => client.close());
  return { client, params: await client.negotiate() };
}

async function host(t: Test, id: string, o: Omit<TerminalHostOptions, 'flashPath' | 'listen'> = {}): Promise<TerminalHost> {
  const h = await startTerminalHost({ flashPath: kit.image(id), listen: 'tcp:127.0.0.1:0', ...o });
  t.teardown(() => h.close());
  return h;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('three clients at once: an 8 Mbit inject, a qkt status loop and audit reads all complete; the batch is intact', { skip }, async (t) => {
  const term = await background(t, ['terminal', 'run', '--flash', kit.image('T1'), '--listen', 'tcp:127.0.0.1:0']);
  const address = term.ready['port'] as string;
  // Paced at 921600 baud (about 12 s), so the other clients run beside it the whole time.
  const t0 = performance.now();
  let injectEnd = 0;
  const inject = runQkt(['inject', '--carrier', kit.carrier, '--port', address, '--baud', '921600', '--json'], { timeoutMs: 120_000 }).then((r) => {
    injectEnd = performance.now();
    return r;
  });
  const running = () => injectEnd === 0;

  const statusRuns: Array<{ code: number | null; end: number; staging: { durableBits: number } | null; stderr: string }> = [];
  const statusLoop = (async () => {
    await sleep(500);
    while (running()) {
      const r = await runQkt(['status', '--port', address, '--json']);
      const pool = r.code === 0 ? (parseJson<{ pool: { staging: { durableBits: number } | null } }>(r).pool) : undefined;
      statusRuns.push({ code: r.code, end: performance.now(), staging: pool?.staging ?? null, stderr: r.stderr });
    }
  })();

  const audits: Array<{ total: number; end: number }> = [];
  const auditLoop = (async () => {
    const { client } = await connect(t, address);
    while (running()) {
      const log = await client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 32 });
      audits.push({ total: log['total'] as number, end: performance.now() });
      await sleep(100);
    }
  })();
  const auditCli = (async () => {
    await sleep(3000);
    return runQkt(['status', '--port', address, '--audit', '--json']);
  })();

  const r = await inject;
  await Promise.all([statusLoop, auditLoop]);
  t.equal(r.code, 0, `inject exits 0${r.code === 0 ? '' : `: ${r.stderr}`}`);
  t.match(parseJson(r), { terminalId: 'T1', bits: MBIT8, resumedFromBits: 0, alreadyAccepted: false, receiptStored: true }, 'a whole, fresh inject: never restarted from a resume');
  const during = statusRuns.filter((s) => s.end < injectEnd);
  t.ok(during.length >= 3, `${during.length} qkt status runs completed during the ${Math.round((injectEnd - t0) / 1000)} s inject`);
  t.same(statusRuns.filter((s) => s.code !== 0).map((s) => s.stderr), [], 'every qkt status run exits 0');
  t.ok(
    during.some((s) => s.staging && s.staging.durableBits > 0 && s.staging.durableBits < MBIT8),
    'a status run saw the batch part-way staged',
  );
  t.ok(audits.filter((a) => a.end < injectEnd).length >= 10, `${audits.length} audit reads on a third connection during the inject`);
  const ac = await auditCli;
  t.equal(ac.code, 0, 'qkt status --audit during the inject exits 0');
  t.ok(Array.isArray(parseJson<{ audit: { log: unknown[] } }>(ac).audit.log), 'and lists the audit log');

  const after = await qktJson<{ pool: { storedKeyBits: number; staging: unknown; batches: Array<{ bits: number }> } }>(t, ['status', '--port', address]);
  t.match(after.pool, { storedKeyBits: MBIT8, staging: null, batches: [{ bits: MBIT8 }] }, 'the pool holds the whole batch');
});

t.test('closing connection B leaves A injecting, and A still gets LOW_WATERMARK', { skip }, async (t) => {
  const h = await host(t, 'T2', { lowWatermarkBits: MBIT8 - 8192 });
  const a = await connect(t, h.address, 2_000_000); // about 5 s for the batch
  const b = await connect(t, h.address);
  const events: string[] = [];
  a.client.onEvent((m) => {
    if (m.kind === Kind.EVENT && m.group === Group.SYSTEM && m.command === SystemEvent.LOW_WATERMARK) events.push(`A ${String(m.payload['storedKeyBits'])}`);
  });
  let bClosedAt = -1;
  const progress: InjectProgress[] = [];
  let closing: Promise<void> | undefined;
  const res = await injectBatch(a.client, a.params, batchOf('T2'), {
    onProgress: (p) => {
      progress.push(p);
      // A quarter of the way in, B (which asked for status meanwhile) hangs up.
      if (!closing && p.committedBytes > p.totalBytes / 4) {
        bClosedAt = progress.length;
        closing = b.client.request(Group.SYSTEM, SystemCmd.STATUS, {}).then(() => b.client.close());
      }
    },
  });
  await closing;
  t.ok(bClosedAt > 0 && progress.length - bClosedAt > 10, `A's inject went on for ${progress.length - bClosedAt} more progress steps after B closed`);
  t.match(res, { bits: MBIT8, resumedFromBits: 0, restarts: 0 }, 'A: whole batch, no restart, no resume');
  t.equal(h.terminal.linkCount, 1, 'the module serves A alone now');

  // C spends keys below the watermark: A, idle, hears of it.
  const c = await connect(t, h.address);
  const s = (await c.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'];
  await c.client.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(2048) });
  for (let i = 0; i < 50 && events.length === 0; i++) await sleep(20);
  t.equal(events.length, 1, 'A got one LOW_WATERMARK event');
  t.ok(Number(events[0]?.split(' ')[1]) < MBIT8 - 8192, `it names stored bits below the watermark: ${events[0]}`);
});

t.test('a second inject while one runs: BUSY (exit 7) naming the batch; the first completes, the re-run finds it done', { skip }, async (t) => {
  const h = await host(t, 'T3');
  const a = await connect(t, h.address, 2_000_000);
  let second: ReturnType<typeof runQkt> | undefined;
  const res = await injectBatch(a.client, a.params, batchOf('T3'), {
    onProgress: (p) => {
      if (!second && p.committedBytes > p.totalBytes / 10) second = runQkt(['inject', '--carrier', kit.carrier, '--port', h.address]);
    },
  });
  const r = await second!;
  t.equal(r.code, 7, 'the second inject exits 7 (busy)');
  t.equal(r.stdout, '', 'nothing on stdout');
  t.match(r.stderr.trim(), /^qkt: terminal T3 is busy: another connection is injecting batch [0-9a-f]{8}; run qkt inject again once it is done/, 'one line that says why and what to do');
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(res, { bits: MBIT8, resumedFromBits: 0, restarts: 0 }, 'the first inject was not disturbed');
  const again = await qktJson(t, ['inject', '--carrier', kit.carrier, '--port', h.address]);
  t.match(again, { terminalId: 'T3', alreadyAccepted: true, bits: MBIT8 }, 'the re-run afterwards finds the batch accepted');
  t.match(h.status()['pool'], { storedKeyBits: MBIT8, staging: null });
});

t.test(`the ${TCP_MAX_CLIENTS + 1}th connection is answered DENIED and closed; a freed slot serves again`, { skip }, async (t) => {
  const h = await host(t, 'T4');
  const clients = [];
  for (let i = 0; i < TCP_MAX_CLIENTS; i++) clients.push(await connect(t, h.address));
  t.equal(h.terminal.linkCount, TCP_MAX_CLIENTS);

  const cli = await runQkt(['status', '--port', h.address]);
  t.equal(cli.code, 7, 'qkt status on a full module exits 7');
  t.equal(cli.stderr, `qkt: ${h.address} refused the connection: terminal serves ${TCP_MAX_CLIENTS} connections at once; try again later\n`);

  const { host: hh, port } = parseTcpAddress(h.address);
  const raw = await connectTcp(hh, port);
  const closed = new Promise<number>((r) => raw.onClose(() => r(performance.now())));
  const extra = new LinkClient(raw, { baseTimeoutMs: 2000 });
  const t0 = performance.now();
  await t.rejects(extra.negotiate(), new LinkError(Rc.DENIED, `terminal serves ${TCP_MAX_CLIENTS} connections at once; try again later`), 'a raw 9th session: PARAMS answered DENIED');
  const at = await closed;
  t.ok(at - t0 < 5000, 'and the module closes that connection (within its 2 s grace)');
  t.equal(h.terminal.linkCount, TCP_MAX_CLIENTS, 'the refused connection never became a link');
  // Every one of the 8 still works.
  for (const c of clients) t.equal((await c.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['terminalId'], 'T4');

  await clients[3]!.client.close();
  await sleep(50);
  const ok = await qktJson(t, ['status', '--port', h.address]);
  t.equal(ok['terminalId'], 'T4', 'a slot freed: qkt status is served');
});

t.test('a connection that sends nothing for the idle timeout is closed; a talking one stays', { skip }, async (t) => {
  const h = await host(t, 'T4', { idleMs: 400, firstFrameMs: 400 });
  const { host: hh, port } = parseTcpAddress(h.address);
  const silent = await connectTcp(hh, port);
  const silentClosed = new Promise<void>((r) => silent.onClose(() => r()));
  t.teardown(() => silent.close());
  const talker = await connect(t, h.address);
  for (let i = 0; i < 12; i++) {
    // 1.2 s of requests 100 ms apart: three idle timeouts, never one without a byte.
    await talker.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    await sleep(100);
  }
  const outcome = await Promise.race([silentClosed.then(() => 'closed'), sleep(5000).then(() => 'still open')]);
  t.equal(outcome, 'closed', 'the silent connection was closed by the module');
  t.equal(h.terminal.linkCount, 1, 'its slot is free; the talking connection is still served');
  t.equal((await talker.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['terminalId'], 'T4');
});

/** A raw TCP peer: frames by hand, replies collected (or never read), reset at will. */
async function rawPeer(t: Test, address: string) {
  const { host: h, port } = parseTcpAddress(address);
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: h, port }, () => resolve(s));
    s.once('error', reject);
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  t.teardown(() => void socket.destroy());
  const deframer = new Deframer(70_000);
  const replies = new Map<number, Message>();
  socket.on('data', (c: Buffer) => {
    for (const b of deframer.push(c)) {
      const m = decodeMessage(b);
      if (m.ok) replies.set(m.message.seq, m.message);
    }
  });
  const frame = (group: number, command: number, seq: number, payload: Payload = {}) => encodeMessage({ kind: Kind.REQUEST, group, command, seq, payload });
  const call = async (group: number, command: number, seq: number, payload: Payload = {}): Promise<Message> => {
    socket.write(frame(group, command, seq, payload));
    for (let i = 0; i < 500 && !replies.has(seq); i++) await sleep(10);
    const m = replies.get(seq);
    if (!m) throw new Error(`no reply to seq ${seq}`);
    return m;
  };
  return { socket, closed, frame, call };
}

const within = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => 'closed'), sleep(ms).then(() => 'still open')]);

t.test('a peer that floods requests and never reads is closed; another connection\'s inject completes', { skip }, async (t) => {
  const drops: string[] = [];
  const h = await host(t, 'T5', { onDrop: (why) => drops.push(why) });
  const a = await connect(t, h.address);
  const inject = injectBatch(a.client, a.params, batchOf('T5'));
  const flooder = await rawPeer(t, h.address);
  flooder.socket.pause(); // never reads a reply
  let sent = 0;
  let open = true;
  void flooder.closed.then(() => (open = false));
  // Far past what the module may queue for it (1 MiB or 1024 frames of output beyond what the
  // kernel's buffers take): without the bound this grows the module's memory without limit. A
  // retry of an executed request is answered from the response cache: one full-chunk ECHO, then
  // tiny retries of it, each answered with the whole cached reply, fill the buffers fast.
  flooder.socket.write(flooder.frame(Group.DIAG, DiagCmd.ECHO, 1, { d: new Uint8Array(a.params.maxChunk) }));
  await sleep(100);
  const retry = flooder.frame(Group.DIAG, DiagCmd.ECHO, 1, { d: new Uint8Array(0) });
  while (open && sent < 200_000) {
    const batch = Buffer.concat(Array.from({ length: 50 }, () => retry));
    sent += 50;
    if (!flooder.socket.write(batch)) await Promise.race([new Promise((r) => flooder.socket.once('drain', r)), flooder.closed]);
    await sleep(1);
  }
  t.equal(await within(flooder.closed, 30_000), 'closed', `the module closed the non-reading peer (after ${sent} requests)`);
  const r = await inject;
  t.equal(r.bits, MBIT8, "the other connection's 8 Mbit inject completed");
  t.equal(h.terminal.linkCount, 1, 'only the flooder was dropped');
  t.match(drops, [/^peer does not read its replies: \d+ frames, \d+ bytes unsent$/], 'for not reading its replies');
});

t.test('a reset connection with SEALs queued behind other links\' work: at most the one running spends keys', { skip }, async (t) => {
  const h = await host(t, 'T5');
  const probe = await connect(t, h.address);
  // T5's batch (already in from the test before, or put in now: the re-run finds it done).
  await injectBatch(probe.client, probe.params, batchOf('T5'));
  const consumed = async () => ((await probe.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number }).consumedKeyBits;
  let stop = false;
  // Keep the dispatcher's queue busy from other connections, as a loaded module's is.
  const busy = await Promise.all([0, 1, 2, 3, 4].map(() => connect(t, h.address)));
  const loops = busy.map(async (b) => {
    while (!stop) await Promise.all([0, 1, 2, 3].map(() => b.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { max: 64 }).catch(() => undefined)));
  });
  const seals = async (reset: boolean): Promise<number> => {
    const p = await rawPeer(t, h.address);
    const neg = await p.call(Group.KEYS, KeysCmd.NEGOTIATE, 1, { mode: 'otp', enc: 'any', auth: 'any' });
    t.equal(neg.kind, Kind.RESPONSE, 'session negotiated');
    const s = neg.payload['s'] as number;
    const before = await consumed();
    p.socket.write(Buffer.concat([2, 3, 4, 5].map((seq) => p.frame(Group.KEYS, KeysCmd.SEAL, seq, { s, d: new Uint8Array(4096) }))));
    if (reset) p.socket.resetAndDestroy();
    await sleep(300);
    return (await consumed()) - before;
  };
  const all = await seals(false);
  t.ok(all > 0, `control: 4 pipelined SEALs on a connection that stays spend ${all} key bits`);
  const oneSeal = all / 4;
  for (let trial = 0; trial < 3; trial++) {
    const spent = await seals(true);
    t.ok(spent <= oneSeal, `trial ${trial}: ${spent} key bits spent, at most one SEAL's worth (4 were queued)`);
  }
  stop = true;
  await Promise.all(loops);
});

t.test('bytes are not activity: a trickling peer is closed; one without a first frame is closed sooner', { skip }, async (t) => {
  const h = await host(t, 'T4', { idleMs: 400, firstFrameMs: 300 });
  const never = await rawPeer(t, h.address); // never a frame, one byte every 100 ms
  const framed = await rawPeer(t, h.address); // one valid frame, then only bytes
  await framed.call(Group.SYSTEM, SystemCmd.PARAMS, 1);
  const trickle = async (p: { socket: net.Socket; closed: Promise<void> }) => {
    let open = true;
    void p.closed.then(() => (open = false));
    for (let i = 0; i < 30 && open; i++) {
      p.socket.write(Buffer.from([0x41]));
      await sleep(100);
    }
  };
  await Promise.all([trickle(never), trickle(framed)]);
  t.equal(await within(never.closed, 100), 'closed', 'a connection that sent no valid frame is closed, its bytes notwithstanding');
  t.equal(await within(framed.closed, 100), 'closed', 'a connection that trickles bytes after a frame is closed at the idle timeout');
});

t.test('every slot taken: a newcomer evicts the connection idle longest, if idle long enough', { skip }, async (t) => {
  const h = await host(t, 'T4', { maxClients: 2, evictIdleMs: 500 });
  const quiet = await rawPeer(t, h.address);
  await quiet.call(Group.SYSTEM, SystemCmd.PARAMS, 1);
  const busy = await connect(t, h.address);
  await t.rejects(connect(t, h.address), new LinkError(Rc.DENIED, 'terminal serves 2 connections at once; try again later'), 'both slots in use: DENIED');
  for (let i = 0; i < 8; i++) {
    await busy.client.request(Group.SYSTEM, SystemCmd.STATUS, {});
    await sleep(100);
  }
  const late = await connect(t, h.address);
  t.equal((await late.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['terminalId'], 'T4', 'the newcomer is served');
  t.equal(await within(quiet.closed, 2000), 'closed', 'the connection idle longest gave up its slot');
  t.equal((await busy.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['terminalId'], 'T4', 'the active one is untouched');
});

t.test('every slot taken by sockets that never send: a real client evicts one and is served, however fast they come back', { skip }, async (t) => {
  const drops: string[] = [];
  const h = await host(t, 'T4', { maxClients: 3, onDrop: (why) => drops.push(why) });
  const { host: ip, port } = parseTcpAddress(h.address);
  // Three silent sockets, each reopened the moment the module closes it (a review's slot hog).
  let stopped = false;
  const socks = new Set<net.Socket>();
  const open = () => {
    if (stopped) return;
    const s = net.connect({ host: ip, port });
    socks.add(s);
    s.on('error', () => undefined);
    s.once('close', () => {
      socks.delete(s);
      setImmediate(open);
    });
  };
  for (let i = 0; i < 3; i++) open();
  t.teardown(() => {
    stopped = true;
    socks.forEach((s) => s.destroy());
  });
  await sleep(200);
  let served = 0;
  for (let i = 0; i < 5; i++) {
    const c = await connect(t, h.address);
    if ((await c.client.request(Group.SYSTEM, SystemCmd.STATUS, {}))['terminalId'] === 'T4') served++;
    await c.client.close();
  }
  t.equal(served, 5, 'each of 5 real clients is served while the silent sockets keep every slot taken');
  t.ok(drops.includes('evicted: no valid frame yet with every slot taken'), 'a silent socket gave up its slot, reported as such');
});
