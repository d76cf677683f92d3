// Property tests of the link's decoders (issue 8): the deframer (framer.ts), the frame header and
// CRC (frame.ts), the message codec (codec.ts decodeMessage, errorFromPayload) and the handlers'
// field readers (fields.ts), fed random bytes and mutations of valid frames. Nothing may throw but
// the typed LinkError; a decode never changes state: after any garbage the deframer still delivers
// the next good frame, and the CBOR decoder (module-level state in cbor-x) still decodes a good
// payload to the same value.
import t from 'tap';
import { SHARD_MARK } from './fec.js';
import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import { inspect } from 'node:util';
import { Deframer } from './framer.js';
import { decodeMessage, encodeMessage, errorFromPayload } from './codec.js';
import type { Message, Payload } from './codec.js';
import { CRC_SIZE, HEADER_SIZE, MIN_BODY_SIZE, PROTOCOL_VERSION, crcOk, readHeader } from './frame.js';
import { LinkError, Rc } from './errors.js';
import { bytes, oneOf, optionalUint, text, uint } from './fields.js';
import { cobsEncode } from './cobs.js';
import { decodesCleanly, everyTruncation, hex, mutate, mutationsArb, offsetView } from '../test-support/mutate.js';

const RUNS = 400;
const RC_VALUES = new Set<number>(Object.values(Rc));

// ---- valid messages

/** CBOR-able payload values: what handlers take (integers, byte strings, text, flags) and a little nesting. */
const valueArb: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.integer({ min: 0, max: 2 ** 32 }),
    fc.integer({ min: -1000, max: 1000 }),
    fc.uint8Array({ maxLength: 80 }),
    fc.string({ maxLength: 20 }),
    fc.boolean(),
    fc.constant(null),
  ),
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, tie('leaf'), fc.array(tie('leaf'), { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 6 }), tie('leaf'), { maxKeys: 4 })),
})).node;
const payloadArb: fc.Arbitrary<Payload> = fc.dictionary(fc.constantFrom('d', 't', 'o', 'n', 's', 'h', 'm', 'mode', 'token', 'from', 'max', 'x'), valueArb, { maxKeys: 5 });
const messageArb: fc.Arbitrary<Omit<Message, 'version'>> = fc.record({
  kind: fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<0 | 1 | 2 | 3>,
  group: fc.integer({ min: 0, max: 255 }),
  command: fc.integer({ min: 0, max: 255 }),
  seq: fc.integer({ min: 0, max: 0xffff }),
  payload: payloadArb,
});
/** The CRC-checked body the deframer hands the codec (header + CBOR, CRC stripped). */
const bodyOf = (m: Omit<Message, 'version'>): Uint8Array => {
  const out = new Deframer(1 << 16).push(encodeMessage(m));
  if (out.length !== 1) throw new Error('fixture frame did not deframe');
  return out[0]!;
};
/** Frame an arbitrary body with a correct CRC: past the deframer, into the codec. */
const frameBody = (body: Uint8Array): Uint8Array => {
  const withCrc = new Uint8Array(body.length + CRC_SIZE);
  withCrc.set(body);
  new DataView(withCrc.buffer).setUint32(body.length, crc32(body), false);
  return Uint8Array.from([0, ...cobsEncode(withCrc), 0]);
};

// The reference frame decoded after every piece of garbage: the codec must still read it the same.
const REFERENCE: Omit<Message, 'version'> = { kind: 0, group: 2, command: 1, seq: 77, payload: { t: 3, o: 4096, d: new Uint8Array([1, 2, 3]) } };
const REFERENCE_BODY = bodyOf(REFERENCE);
const REFERENCE_WIRE = encodeMessage(REFERENCE);
const REFERENCE_JSON = JSON.stringify(decodeMessage(REFERENCE_BODY));

/** A decode result as text: the message, or the header and the error's code and message (not its stack). */
function outcome(r: ReturnType<typeof decodeMessage>): string {
  return inspect(r.ok ? r.message : { header: r.header, rc: r.error.rc, message: r.error.message }, { depth: 8 });
}

function checkDecoded(body: Uint8Array): void {
  const r = decodesCleanly(body, decodeMessage, []);
  if (!r) throw new Error('unreachable');
  const h = r.ok ? r.message : r.header;
  for (const k of ['version', 'kind', 'group', 'command', 'seq'] as const) {
    if (!Number.isInteger(h[k])) throw new Error(`header field ${k} is ${String(h[k])} for body ${hex(body)}`);
  }
  if (r.ok) {
    const m = r.message;
    if (m.version !== PROTOCOL_VERSION || m.kind > 3) throw new Error(`accepted version ${m.version} kind ${m.kind}`);
    if (m.payload === null || typeof m.payload !== 'object' || Array.isArray(m.payload) || m.payload instanceof Uint8Array) {
      throw new Error(`accepted a payload that is not a map: ${hex(body)}`);
    }
  } else {
    if (!(r.error instanceof LinkError) || !RC_VALUES.has(r.error.rc) || r.error.message === '') throw new Error(`bad refusal for ${hex(body)}`);
  }
  // The same body as a view at a byte offset (as a transport hands out) decodes the same. The
  // offset keeps 8-byte alignment: cbor-x's typed-array tags depend on alignment (todo test below).
  // (Compared as printed: cbor-x makes an Invalid Date of tag 1 on a string, and NaN dates are never deep-equal.)
  if (outcome(decodeMessage(offsetView(body, 8))) !== outcome(r)) throw new Error(`${hex(body)} decodes differently at a byte offset`);
  // No state left behind in the codec by whatever that was.
  if (JSON.stringify(decodeMessage(REFERENCE_BODY)) !== REFERENCE_JSON) throw new Error(`decoding ${hex(body)} changed how the next payload decodes`);
}

const randomBodyArb = fc.oneof(
  fc.uint8Array({ minLength: MIN_BODY_SIZE - CRC_SIZE, maxLength: 300 }),
  // A valid header, then random bytes: all the work is in the CBOR decoder.
  fc.tuple(fc.constantFrom(0, 1, 2, 3), fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 1, maxLength: 300 })).map(([kind, h, p]) => Uint8Array.from([PROTOCOL_VERSION, kind, ...h, ...p])),
  // ... and random bytes behind a CBOR map head, or inside tags cbor-x gives meaning to (shared refs, records, dates, typed arrays).
  fc.tuple(fc.constantFrom(0xa1, 0xa2, 0xbf, 0xd8, 0xd9, 0xc1, 0x9f), fc.uint8Array({ minLength: 1, maxLength: 100 })).map(([b, p]) => Uint8Array.from([PROTOCOL_VERSION, 0, 2, 1, 0, 9, b, ...p])),
);

t.test(`decodeMessage: ${RUNS * 2} random bodies give a message or a LinkError and leave the decoder as it was`, async (t) => {
  fc.assert(fc.property(randomBodyArb, checkDecoded), { numRuns: RUNS * 2 });
  t.pass(`${RUNS * 2} runs`);
});

t.test(`decodeMessage: ${RUNS} mutated valid bodies, and 20 truncated at every length down to the smallest body`, async (t) => {
  fc.assert(
    fc.property(messageArb, mutationsArb(), (m, ms) => {
      const mutated = mutate(bodyOf(m), ms);
      if (mutated.length >= MIN_BODY_SIZE - CRC_SIZE) checkDecoded(mutated); // the deframer delivers nothing shorter
    }),
    { numRuns: RUNS },
  );
  let n = 0;
  for (const m of fc.sample(messageArb, { numRuns: 20, seed: 8 })) {
    for (const cut of everyTruncation(bodyOf(m))) {
      if (cut.length < MIN_BODY_SIZE - CRC_SIZE) continue;
      checkDecoded(cut);
      n++;
    }
  }
  t.pass(`${RUNS} runs, ${n} truncations`);
});

t.test(`Deframer: ${RUNS} random streams and ${RUNS} mutated frames never throw, deliver only CRC-good bodies, and the next good frame comes out`, async (t) => {
  const feed = (stream: Uint8Array, cut: number) => {
    const d = new Deframer(1024);
    const got: Uint8Array[] = [];
    for (let at = 0; at < stream.length; at += cut) got.push(...d.push(stream.subarray(at, at + cut)));
    for (const body of got) {
      if (body.length < MIN_BODY_SIZE - CRC_SIZE || body.length > d.maxBody - CRC_SIZE) throw new Error(`delivered a ${body.length}-byte body`);
      checkDecoded(body);
    }
    if (d.stats.frames !== got.length) throw new Error('stats.frames does not count the delivered bodies');
    // Whatever came before, a good frame (which starts with a delimiter) is delivered intact. Its
    // leading 0x00 may first complete a frame the stream left open: that one is delivered too.
    const after = d.push(REFERENCE_WIRE);
    if (after.length < 1 || after.length > 2 || hex(after[after.length - 1]!) !== hex(REFERENCE_BODY)) {
      throw new Error(`garbage ${hex(stream)} kept the next frame from coming out`);
    }
    if (after.length === 2) checkDecoded(after[0]!);
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 1, max: 300 }), feed), { numRuns: RUNS });
  fc.assert(
    fc.property(messageArb, mutationsArb(), fc.integer({ min: 1, max: 64 }), (m, ms, cut) => feed(mutate(encodeMessage(m), ms), cut)),
    { numRuns: RUNS },
  );
  t.pass(`${2 * RUNS} runs`);
});

t.test(`frame with a good CRC around ${RUNS} mutated bodies: delivered as sent, then decoded cleanly`, async (t) => {
  fc.assert(
    fc.property(messageArb, mutationsArb(), (m, ms) => {
      const body = mutate(bodyOf(m), ms);
      const out = new Deframer(4096).push(frameBody(body));
      if (body.length < MIN_BODY_SIZE - CRC_SIZE) {
        if (out.length !== 0) throw new Error(`a ${body.length}-byte body was delivered`);
        return;
      }
      // A body whose first byte is 0xFE is an FEC shard, never a frame (docs/protocol.md 2.6): a
      // mutation that makes one is taken as a (bad) shard and delivers nothing. Found by a CI run.
      if (body[0] === SHARD_MARK) {
        if (out.length !== 0) throw new Error(`a body starting 0xFE was delivered as a frame: ${hex(body)}`);
        return;
      }
      if (out.length !== 1 || hex(out[0]!) !== hex(body)) throw new Error(`body ${hex(body)} not delivered as sent`);
      checkDecoded(out[0]!);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test(`readHeader and crcOk: ${RUNS} random bodies of any length`, async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
      const ok = decodesCleanly(b, crcOk, []);
      if (typeof ok !== 'boolean' || (b.length < CRC_SIZE && ok)) throw new Error(`crcOk(${hex(b)}) = ${String(ok)}`);
      if (b.length >= HEADER_SIZE) {
        const h = decodesCleanly(b, readHeader, []);
        if (!h || h.seq !== ((b[4]! << 8) | b[5]!) || h.version !== b[0]) throw new Error(`readHeader(${hex(b)}) wrong`);
      }
    }),
    { numRuns: RUNS },
  );
  // And it does recognise a good CRC: the reference body with the CRC encodeFrame writes.
  const withCrc = Uint8Array.from([...REFERENCE_BODY, ...u32(crc32(REFERENCE_BODY))]);
  t.ok(crcOk(withCrc), 'a good CRC');
  withCrc[withCrc.length - 1]! ^= 1;
  t.notOk(crcOk(withCrc), 'a bad CRC');
});

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
}

t.test(`field readers and errorFromPayload: ${RUNS} decoded random payloads give a value or a LinkError`, async (t) => {
  // Payloads as the codec delivers them: decoded from random CBOR behind a map head, or generated.
  const decodedPayloadArb = fc.oneof(
    payloadArb,
    randomBodyArb.map((b) => {
      const r = decodeMessage(b);
      return r.ok ? r.message.payload : {};
    }),
  );
  fc.assert(
    fc.property(decodedPayloadArb, fc.constantFrom('d', 't', 'o', 'n', 's', 'h', 'm', 'mode', 'token', 'x', 'missing'), (p, key) => {
      const readers: Array<() => unknown> = [
        () => uint(p, key),
        () => uint(p, key, 0xffff),
        () => optionalUint(p, key, 2 ** 32),
        () => bytes(p, key, 16),
        () => bytes(p, key, 4096, 3),
        () => text(p, key, 8),
        () => oneOf(p, key, ['otp', 'aead'] as const),
      ];
      for (const read of readers) {
        try {
          read();
        } catch (e) {
          if (!(e instanceof LinkError) || (e.rc !== Rc.BAD_REQUEST && e.rc !== Rc.TOO_LARGE) || e.message === '') {
            throw new Error(`field reader threw ${(e as Error).name}: ${(e as Error).message}`);
          }
        }
      }
      const le = decodesCleanly(new Uint8Array(0), () => errorFromPayload(p), []);
      if (!(le instanceof LinkError) || typeof le.rc !== 'number') throw new Error('errorFromPayload did not give a LinkError');
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} runs`);
});

t.test(
  'decodeMessage takes only a CBOR map as the payload: not a tagged date, Map, typed array or unknown tag',
  async (t) => {
    // A plain object (what a CBOR map decodes to) or a refusal; handlers never see another kind of object.
    for (const cbor of ['c100', 'c16400000000', 'd90103a0', 'd84540', 'd90100a0']) {
      const r = decodeMessage(Uint8Array.from([PROTOCOL_VERSION, 0, 2, 1, 0, 9, ...Buffer.from(cbor, 'hex')]));
      const plain = r.ok && Object.getPrototypeOf(r.message.payload) === Object.prototype;
      t.ok(!r.ok || plain, `CBOR ${cbor}: ${r.ok ? Object.prototype.toString.call(r.message.payload) : 'refused'}`);
    }
  },
);

t.test(
  'decodeMessage does not depend on where the body sits in memory',
  { todo: 'cbor-x reads typed-array tags (RFC 8746) differently by alignment: d846 42 0000 is refused at offset 6, a Uint32Array(0) at 13' },
  async (t) => {
    const body = Uint8Array.from([PROTOCOL_VERSION, 0, 2, 1, 0, 9, 0xd8, 0x46, 0x42, 0, 0]);
    t.equal(outcome(decodeMessage(offsetView(body, 7))), outcome(decodeMessage(body)));
  },
);
