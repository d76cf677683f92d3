// A stranger on the cable (issue 8): 100,000 forged or malformed requests from a client that never
// authenticates, spread over an hour of module clock. Refusals are counted in RAM and written as
// one coalesced `refused` event at most every 10 minutes; bad admin tokens count in flash only up
// to the lockout (five), then cost nothing. So the whole flood costs a stated handful of flash
// writes, and the enrolment, the auth failures and the lockout are still in the audit log after it.
import t from 'tap';
import { crc32 } from 'node:zlib';
import { cobsEncode } from '../../firmware/link/cobs.js';
import { encodeMessage } from '../../firmware/link/codec.js';
import { Kind } from '../../firmware/link/frame.js';
import { Deframer } from '../../firmware/link/framer.js';
import { AdminCmd, Group, InjectCmd, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { makeAdminToken } from '../../firmware/crypto/token.js';
import { prng } from '../../firmware/flash/faults.js';
import { createInProcessPair } from '../../host-tools/transports/inproc.js';
import { makeBatch, poolOf, startRig } from '../../host-tools/test-support/module-rig.js';
import { REFUSAL_INTERVAL_MS } from '../../firmware/secure/secure-area.js';
import { MAX_FAILED_AUTH } from '../../firmware/commands/admin.js';

const FLOOD = 100_000;
const HOUR = 3_600_000;
/** The stated bound: 5 failed-auth records + 5 of their events, 1 + 6 coalesced refusal events, at most one compaction. */
const MAX_APPENDS = 2 * MAX_FAILED_AUTH + 1 + Math.ceil(HOUR / REFUSAL_INTERVAL_MS);

t.test(`${FLOOD} forged and malformed requests cost at most ${MAX_APPENDS} record appends and one compaction`, async (t) => {
  let now = 1_800_000_000_000;
  const rig = await startRig({ terminal: { clock: () => now } });
  t.teardown(() => rig.close());
  const genuine = makeBatch(rig.deviceKey, { bits: 8192, seq: 10 });
  const { injectBatch } = await import('../../host-tools/link/inject.js');
  await injectBatch(rig.client, rig.params, genuine.sealed);
  const pool = poolOf(rig.terminal);

  // The stranger's requests, framed as any client would: forged batch headers (tag under another
  // key), an authentic but stale header, chunks for no transfer, bad admin tokens, KEYS OPEN with
  // no session, bad arguments, unknown commands; and raw noise with broken CRCs.
  const foreign = new Uint8Array(32).fill(7);
  const head = (sealed: Uint8Array) => sealed.subarray(0, parseSealedHeader(sealed).chunksOffset);
  const forged = Array.from({ length: 8 }, (_, i) => head(makeBatch(foreign, { bits: 8192, seq: 100 + i }).sealed));
  const stale = head(makeBatch(rig.deviceKey, { bits: 8192, seq: 3 }).sealed);
  const badToken = makeAdminToken(foreign, { terminalId: 'T1', command: 'zeroize', counter: 99 });
  const rand = prng(42);
  let countedRefusals = 0;
  const request = (n: number): { frame: Uint8Array; answered: boolean } => {
    const r = rand();
    const seq = n & 0xffff;
    const m = (group: number, command: number, payload: Record<string, unknown>) => ({ frame: encodeMessage({ kind: Kind.REQUEST, group, command, seq, payload }), answered: true });
    if (r < 0.4) {
      countedRefusals++;
      return m(Group.INJECT, InjectCmd.BEGIN, { h: forged[n % forged.length]! });
    }
    if (r < 0.45) {
      countedRefusals++;
      return m(Group.INJECT, InjectCmd.BEGIN, { h: stale });
    }
    if (r < 0.6) return m(Group.INJECT, InjectCmd.CHUNK, { t: seq, o: 0, d: new Uint8Array(64) });
    if (r < 0.65) return m(Group.ADMIN, AdminCmd.ZEROIZE, { token: badToken });
    if (r < 0.75) return m(Group.KEYS, KeysCmd.OPEN, { s: 9, m: new Uint8Array(40) });
    if (r < 0.8) return m(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: -1 });
    if (r < 0.85) return m(9, 1, {});
    // noise: a frame whose CRC does not match, or random bytes between delimiters
    const body = new Uint8Array(24).map(() => Math.floor(rand() * 256));
    body.set(new Uint8Array(new Uint32Array([crc32(body) ^ 1]).buffer), 20);
    return { frame: Uint8Array.from([0, ...cobsEncode(body), 0]), answered: false };
  };

  // A second cable, as a stranger would plug in; requests go four at a time (the window).
  const [host, device] = createInProcessPair({ names: ['stranger', 'module'] });
  rig.terminal.attach(device);
  const deframer = new Deframer(1 << 16);
  let answers = 0;
  let wake: (() => void) | undefined;
  host.onData((b) => {
    answers += deframer.push(b).length;
    wake?.();
  });
  const m0 = rig.flash.faults.mutations;
  const e0 = [0, 1, 2, 3].map((s) => rig.flash.eraseCount(s));
  const step = HOUR / FLOOD;
  let expected = 0;
  for (let sent = 0; sent < FLOOD; ) {
    const frames: Uint8Array[] = [];
    for (let k = 0; k < 4 && sent < FLOOD; k++, sent++) {
      const { frame, answered } = request(sent);
      frames.push(frame);
      if (answered) expected++;
      now += step;
    }
    await host.write(Uint8Array.from(frames.flatMap((f) => [...f])));
    // Wait for the answers (noise gets none: it is counted and dropped).
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      wake = () => {
        if (answers >= expected) {
          clearTimeout(timer);
          resolve();
        }
      };
      wake();
    });
  }
  await host.close();

  const appends = rig.flash.faults.mutations - m0;
  const erases = [0, 1, 2, 3].map((s, i) => rig.flash.eraseCount(s) - e0[i]!);
  const compactions = erases.reduce((a, b) => a + b, 0);
  t.ok(compactions <= 1, `secure area sectors erased ${erases.join(' ')} times during the flood (at most one compaction)`);
  // Each append is one program, two if it crosses a page; a compaction rewrites the checkpoint.
  t.ok(appends - compactions * 64 <= 2 * MAX_APPENDS, `${appends} flash operations for ${FLOOD} requests (bound: ${MAX_APPENDS} appends)`);
  t.same(poolOf(rig.terminal), pool, 'the pool is as it was: no key consumed, nothing staged');

  const log = (await rig.client.request(Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 64 })) as { events: Array<{ type: string; count?: number; detail: string }> };
  const types = log.events.map((e) => e.type);
  t.equal(types[0], 'enrolled', 'the enrolment is still readable');
  t.equal(types.filter((x) => x === 'auth-failed').length, MAX_FAILED_AUTH - 1, 'every bad token before the lockout is logged');
  t.equal(types.filter((x) => x === 'lockout').length, 1, 'the lockout is logged, once');
  const refusedEvents = log.events.filter((e) => e.type === 'refused');
  t.ok(refusedEvents.length >= 1 && refusedEvents.length <= 1 + Math.ceil(HOUR / REFUSAL_INTERVAL_MS) + MAX_FAILED_AUTH, `${refusedEvents.length} coalesced refused events`);
  const status = rig.terminal.status() as { audit: { pendingRefusals: number } };
  const written = refusedEvents.reduce((a, e) => a + (e.count ?? 0), 0);
  t.equal(written + status.audit.pendingRefusals, countedRefusals, `${countedRefusals} refused batch headers: ${written} in the log, ${status.audit.pendingRefusals} still counted in RAM`);
  t.equal(answers, expected, `every one of the ${expected} requests answered, the noise dropped`);
});
