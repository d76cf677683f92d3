// The firmware module as a whole against random and mutated request frames (issue 8): line noise,
// valid frames with bytes flipped, cut, inserted or deleted, and well-framed requests whose payloads
// are random or mutated. Whatever arrives, the module answers every request it can read with a
// well-formed RESPONSE or ERROR (never INTERNAL, never an exception out of a handler), no key is
// consumed and the pool is exactly as it was. The requests are refusals by construction (forged
// headers and tokens, no open transfer or session); key-consuming requests (KEYS SEAL, an AEAD
// NEGOTIATE) are filtered out, since for them a state change is what the protocol documents.
// Flash program/erase counts are logged only: refusals may be audited to flash (being changed).
import t from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { injectBatch } from '../../host-tools/link/inject.js';
import { createInProcessPair } from '../../host-tools/transports/inproc.js';
import { parseSealedHeader } from '../../firmware/crypto/batch.js';
import { decodeServiceHeader, encodeServiceHeader, sessionSeal } from '../../firmware/crypto/service.js';
import { makeAdminToken } from '../../firmware/crypto/token.js';
import { decodeMessage, encodeMessage } from '../../firmware/link/codec.js';
import type { Message, Payload } from '../../firmware/link/codec.js';
import { Deframer } from '../../firmware/link/framer.js';
import { Kind } from '../../firmware/link/frame.js';
import { AdminCmd, DiagCmd, Group, InjectCmd, KeysCmd, SystemCmd } from '../../firmware/link/groups.js';
import { Rc } from '../../firmware/link/errors.js';
import { cobsEncode } from '../../firmware/link/cobs.js';
import { crc32 } from 'node:zlib';
import { makeBatch, poolOf, poolRegion, startRig } from '../../host-tools/test-support/module-rig.js';
import { mutate, mutationsArb, sameBytes } from '../../firmware/test-support/mutate.js';

const RUNS = 300;
/** Sequence numbers from here up are the test's own STATUS probes; fuzzed requests stay below. */
const PROBE_SEQ = 0xff00;

t.test(`module: ${RUNS} random and mutated request frames change no key and no pool state, and are answered cleanly`, async (t) => {
  const rig = await startRig();
  t.teardown(() => rig.close());
  // A pool with keys in it and a last accepted seq: something a bad request could consume or move.
  const accepted = makeBatch(rig.deviceKey, { bits: 8192, seq: 500 });
  await injectBatch(rig.client, rig.params, accepted.sealed);

  // ---- seed requests: each a refusal, or an answer that changes nothing
  const foreignKey = new Uint8Array(32).fill(0x5c);
  const headOf = (sealed: Uint8Array) => sealed.subarray(0, parseSealedHeader(sealed).chunksOffset);
  const forged = makeBatch(foreignKey, { bits: 8192, seq: 900 }); // tag under another module's key
  const stale = makeBatch(rig.deviceKey, { bits: 8192, seq: 400 }); // authentic, but older
  const otherTerminal = makeBatch(rig.deviceKey, { bits: 8192, seq: 901, terminalId: 'T2' });
  const badToken = makeAdminToken(foreignKey, { terminalId: 'T1', command: 'zeroize', counter: 7 });
  // An AEAD session, opened (its key consumed) before the snapshot: OPEN then reaches the service
  // header decoder and the AEAD check. The downlink seed is genuine (the test knows the pool's
  // plaintext): opening it moves only the session's replay counter in RAM; its mutants are refused.
  const session = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead' });
  const sealedUp = await rig.client.request(Group.KEYS, KeysCmd.SEAL, { s: session['s'], d: new Uint8Array(4) });
  const range = decodeServiceHeader(sealedUp['m'] as Uint8Array).header.keyIds[0]!;
  const sessionKey = accepted.keys.subarray(range.bitOffset / 8, range.bitOffset / 8 + 32);
  const aeadHead = encodeServiceHeader({ mode: 'aead', keyIds: [range], counter: 3 });
  const downlink = Uint8Array.from([...aeadHead, ...sessionSeal(sessionKey, 3, new Uint8Array(20), aeadHead, 'down')]);
  const seeds: Array<Omit<Message, 'version' | 'seq'>> = [
    { kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.PARAMS, payload: { versions: [1] } },
    { kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.STATUS, payload: {} },
    { kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.AUDIT_LOG, payload: { from: 1, max: 8 } },
    { kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.ECHO, payload: { d: new Uint8Array([1, 2, 3]) } },
    { kind: Kind.REQUEST, group: Group.DIAG, command: DiagCmd.SINK_CHUNK, payload: { t: 1, o: 0, d: new Uint8Array(16) } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.BEGIN, payload: { h: headOf(forged.sealed) } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.BEGIN, payload: { h: headOf(stale.sealed) } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.BEGIN, payload: { h: headOf(otherTerminal.sealed) } },
    // The batch already accepted: the same receipt again, and nothing else changes (docs/protocol.md).
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.BEGIN, payload: { h: headOf(accepted.sealed) } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.CHUNK, payload: { t: 1, o: 0, d: forged.sealed.subarray(200, 400) } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.STATUS, payload: { t: 1 } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.COMMIT, payload: { t: 1 } },
    { kind: Kind.REQUEST, group: Group.INJECT, command: InjectCmd.ABORT, payload: { t: 1 } },
    // No NEGOTIATE seed: each OTP session it opens (RAM only) would soon evict the AEAD session above.
    { kind: Kind.REQUEST, group: Group.KEYS, command: KeysCmd.NEGOTIATE, payload: { mode: 'xor', enc: 'any', auth: 'any' } },
    { kind: Kind.REQUEST, group: Group.KEYS, command: KeysCmd.OPEN, payload: { s: session['s'], m: downlink } },
    { kind: Kind.REQUEST, group: Group.KEYS, command: KeysCmd.CLOSE, payload: { s: 99 } },
    { kind: Kind.REQUEST, group: Group.ADMIN, command: AdminCmd.ZEROIZE, payload: { token: badToken } },
    { kind: Kind.REQUEST, group: Group.ADMIN, command: AdminCmd.FACTORY_RESET, payload: { token: badToken } },
  ];

  /** Requests whose documented effect is to consume keys: never sent (the rest must change nothing). */
  const consumesKeys = (body: Uint8Array): boolean => {
    const d = decodeMessage(body);
    if (!d.ok) return false;
    const m = d.message;
    return m.group === Group.KEYS && (m.command === KeysCmd.SEAL || (m.command === KeysCmd.NEGOTIATE && m.payload['mode'] === 'aead'));
  };
  /** Header + CBOR of a message, the part a mutation re-framed with a good CRC reaches the codec with. */
  const bodyOf = (m: Omit<Message, 'version'>): Uint8Array => new Deframer(1 << 16).push(encodeMessage(m))[0]!;
  const frameBody = (body: Uint8Array): Uint8Array => {
    const withCrc = new Uint8Array(body.length + 4);
    withCrc.set(body);
    new DataView(withCrc.buffer).setUint32(body.length, crc32(body), false);
    return Uint8Array.from([0, ...cobsEncode(withCrc), 0]);
  };
  const seqArb = fc.integer({ min: 0, max: PROBE_SEQ - 1 });
  const seedArb = fc.tuple(fc.constantFrom(...seeds), seqArb).map(([s, seq]) => ({ ...s, seq }));
  const randomPayloadArb: fc.Arbitrary<Payload> = fc.dictionary(
    fc.constantFrom('d', 't', 'o', 'n', 's', 'h', 'm', 'mode', 'enc', 'auth', 'token', 'from', 'max', 'versions', 'rekeyMessages'),
    fc.oneof(fc.integer({ min: -2, max: 2 ** 33 }), fc.uint8Array({ maxLength: 200 }), fc.constantFrom('otp', 'any', 'enc', 'auth', ''), fc.boolean(), fc.constant(null), fc.double({ min: -1e6, max: 1e6, noNaN: true }), fc.constantFrom(Number.NaN, Infinity, 2 ** 53 + 2, -(2 ** 40))),
    { maxKeys: 4 },
  );

  /** A seed with each of its byte-string fields mutated: the handlers' own decoders (headers, tokens, service headers) get the damage. */
  const fieldsMutatedArb = fc.tuple(seedArb, fc.array(mutationsArb(), { minLength: 1, maxLength: 3 })).map(([m, mss]) => {
    let i = 0;
    const payload = Object.fromEntries(Object.entries(m.payload).map(([k, v]) => [k, v instanceof Uint8Array ? mutate(v, mss[i++ % mss.length]!) : v]));
    return { ...m, payload };
  });

  /** What goes on the wire in one run, with what it is (for the failure message). */
  const inputArb: fc.Arbitrary<{ what: string; wire: Uint8Array }> = fc.oneof(
    seedArb.map((m) => ({ what: `seed ${m.group}/${m.command}`, wire: encodeMessage(m) })),
    { weight: 4, arbitrary: fieldsMutatedArb.map((m) => ({ what: `seed ${m.group}/${m.command} with mutated byte fields`, wire: encodeMessage(m) })) },
    fc.uint8Array({ minLength: 1, maxLength: 600 }).map((wire) => ({ what: 'line noise', wire })),
    fc.tuple(seedArb, mutationsArb()).map(([m, ms]) => ({ what: `mutated frame of ${m.group}/${m.command}`, wire: mutate(encodeMessage(m), ms) })),
    fc.tuple(seedArb, mutationsArb()).map(([m, ms]) => ({ what: `mutated body of ${m.group}/${m.command}, good CRC`, wire: frameBody(mutate(bodyOf(m), ms)) })),
    fc
      .record({ group: fc.integer({ min: 0, max: 7 }), command: fc.integer({ min: 0, max: 6 }), seq: seqArb, payload: randomPayloadArb })
      .map((m) => ({ what: `random payload to ${m.group}/${m.command}`, wire: encodeMessage({ ...m, kind: Kind.REQUEST }) })),
  ).filter(({ wire }) => new Deframer(1 << 16).push(wire).every((b) => !consumesKeys(b) && (b.length < 6 || ((b[4]! << 8) | b[5]!) < PROBE_SEQ)));

  // ---- a raw cable into the module, and everything it answers on it
  const [host, device] = createInProcessPair({ names: ['fuzzer', 'module'] });
  rig.terminal.attach(device);
  const replies = new Deframer(1 << 16);
  const answers: Message[] = [];
  const bad: string[] = [];
  let waiting: { seq: number; resolve: () => void } | undefined;
  host.onData((chunk) => {
    for (const body of replies.push(chunk)) {
      const d = decodeMessage(body);
      if (!d.ok) {
        bad.push(`undecodable reply: ${d.error.message}`);
        continue;
      }
      answers.push(d.message);
      if (waiting && d.message.seq === waiting.seq) waiting.resolve();
    }
  });
  const internal: unknown[] = [];
  const onInternal = rig.terminal.dispatcher.onInternalError;
  rig.terminal.dispatcher.onInternalError = (e, ctx) => {
    internal.push(e);
    onInternal?.(e, ctx);
  };
  let probe = PROBE_SEQ;
  /** A STATUS probe after each input: once it is answered, the module has handled everything before it. */
  const settle = async (): Promise<void> => {
    const seq = probe++ > 0xfffe ? (probe = PROBE_SEQ) : probe;
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to probe ${seq}`)), 5000);
      waiting = { seq, resolve: () => (clearTimeout(timer), resolve()) };
    });
    await host.write(encodeMessage({ kind: Kind.REQUEST, group: Group.SYSTEM, command: SystemCmd.STATUS, seq, payload: {} }));
    await answered;
  };

  /** group/command and outcome of every answer to a fuzzed request: shows what the runs reached. */
  const tally = new Map<string, number>();
  const poolBefore = poolOf(rig.terminal);
  const rawBefore = poolRegion(rig.flash);
  const opsBefore = { ...rig.flash.stats };
  const auditBefore = (rig.terminal.status()['audit'] as { events: number }).events;

  await fc.assert(
    fc.asyncProperty(inputArb, async ({ what, wire }) => {
      answers.length = 0;
      await host.write(wire);
      await settle();
      for (const a of answers) {
        if (a.seq < PROBE_SEQ) {
          const k = `${a.group}/${a.command} ${a.kind === Kind.ERROR ? `rc ${String(a.payload['rc'])}` : 'ok'}`;
          tally.set(k, (tally.get(k) ?? 0) + 1);
        }
        if (a.kind !== Kind.RESPONSE && a.kind !== Kind.ERROR) bad.push(`${what}: answered with kind ${a.kind}`);
        if (a.kind === Kind.ERROR && a.payload['rc'] === Rc.INTERNAL) bad.push(`${what}: INTERNAL (${String(a.payload['r'])})`);
      }
      if (bad.length > 0 || internal.length > 0) throw new Error(`${bad.join('; ')} ${internal.map((e) => String(e)).join('; ')}`);
      if (!isDeepStrictEqual(poolOf(rig.terminal), poolBefore)) throw new Error(`${what} changed the pool: ${JSON.stringify(poolOf(rig.terminal))}`);
      if (rig.terminal.state !== 'ready') throw new Error(`${what} left the module ${rig.terminal.state}`);
    }),
    { numRuns: RUNS },
  );

  t.same(poolOf(rig.terminal), poolBefore, 'pool status as before: no key consumed, nothing staged, same last seq');
  t.ok(sameBytes(poolRegion(rig.flash), rawBefore), 'pool region of the flash byte for byte as before');
  t.same(internal, [], 'no handler failed with an undescribed error');
  const ops = rig.flash.stats;
  const auditAfter = (rig.terminal.status()['audit'] as { events: number }).events;
  t.comment(
    `flash during ${RUNS} runs: ${ops.programs - opsBefore.programs} programs (${ops.programBytes - opsBefore.programBytes} bytes), ` +
      `${ops.erases - opsBefore.erases} erases; ${auditAfter - auditBefore} audit events; ${JSON.stringify(rig.terminal.link.stats)}`,
  );

  t.comment(`answers: ${[...tally].sort().map(([k, n]) => `${k}: ${n}`).join(', ')}`);

  // And the module still serves: the keys the fuzzing did not consume are there to use.
  const n = await rig.client.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead' });
  t.equal(n['mode'], 'aead', 'a genuine AEAD session still opens');
  t.equal((poolOf(rig.terminal) as { consumedKeyBits: number }).consumedKeyBits, (poolBefore as { consumedKeyBits: number }).consumedKeyBits + 256, 'its key is the first one consumed');
  await host.close();
});
