// KEYS command group: service-data crypto with pool keys, the paper's "quantum negotiation".
// A session is OTP (XOR pad + one-time Poly1305 MAC, information-theoretically secure) or AEAD
// (a pool key as session key, rekeyed by count and age, under the suite the host names:
// AES-256-GCM by default, ChaCha20-Poly1305, or the national SM4-CTR + HMAC-SM3); the host says
// which sub-pool serves encryption and which authentication. Keys are taken through the pool, which
// records them consumed in flash before they are used, and wiped from RAM after use.
// Direction rule (docs/batch.md "Service data"): the terminal picks every key it uses, in pool
// order; OTP serves uplinks only, downlinks use the AEAD session key the terminal named, with
// the direction in the nonce. So terminal and station never pick the same key independently.
import { encodeServiceHeader, decodeServiceHeader, otpSeal, cipherOpen, cipherSealMessage, headerSuite, suiteMaxMessages, SessionCipher, SessionKeyState, AEAD_SUITES, DEFAULT_SUITE, OTP_MAC_KEY_BYTES, SESSION_KEY_BYTES } from '../crypto/service.js';
import type { AeadSuite, KeyRange, ServiceHeader } from '../crypto/service.js';
import { Group, KeysCmd } from '../link/groups.js';
import { LinkError, Rc } from '../link/errors.js';
import { bytes, oneOf, optionalUint, uint } from '../link/fields.js';
import type { CommandGroup, LinkPeer, RequestContext } from '../link/dispatch.js';
import type { ConsumedKey, Purpose } from '../keypool/key-pool.js';
import { mapServiceErrors } from './pool-errors.js';
import type { ModuleContext } from './context.js';

/** Largest service-data message body per SEAL/OPEN: one OTP key never spans batches, and a frame must carry it. */
export const MAX_SERVICE_DATA = 4096;
/** Sessions per link (per TCP connection; the one link of a serial port): a link's fifth evicts its oldest. */
const MAX_SESSIONS = 4;

interface Session {
  id: number;
  /** The link that negotiated it: only that link's requests find it (docs/protocol.md 4.9). */
  owner: LinkPeer | undefined;
  mode: 'otp' | 'aead';
  /** AEAD: the suite every message of the session uses, in both directions. */
  suite: AeadSuite;
  enc: Purpose;
  auth: Purpose;
  counter: number;
  aead?: { cipher: SessionCipher; range: KeyRange; send: SessionKeyState; recv: SessionKeyState };
  rekeyMessages: number;
  rekeyMs: number;
}

/**
 * The KEYS group; `reset()` wipes every session (after zeroize or a reset of the module's state),
 * `release(link)` the sessions of a link that closed.
 */
export function keysGroup(ctx: ModuleContext): CommandGroup & { reset(): void; release(link: LinkPeer): void } {
  const sessions = new Map<number, Session>();
  let nextId = 1;

  const take = (purpose: Purpose, n: number): { key: ConsumedKey; range: KeyRange } => {
    const key = mapServiceErrors(() => ctx.pool().consume(purpose, n));
    const batchId = ctx.secure().batchIdFor(key.keyId.batchId);
    if (!batchId) {
      key.key.fill(0);
      throw new LinkError(Rc.INTERNAL, `no batch id recorded for pool batch ${key.keyId.batchId}`);
    }
    return { key, range: { batchId, bitOffset: key.keyId.bitOffset, bits: n * 8 } };
  };

  const newSessionKey = (s: Session) => {
    s.aead?.cipher.wipe();
    const { key, range } = take(s.enc, SESSION_KEY_BYTES);
    let cipher: SessionCipher;
    try {
      cipher = new SessionCipher(s.suite, key.key);
    } finally {
      key.key.fill(0); // the cipher holds its own copy (or, for SM4, the keys derived from it)
    }
    const now = ctx.clock();
    const limits = { maxMessages: s.rekeyMessages, maxAgeMs: s.rekeyMs };
    s.aead = { cipher, range, send: new SessionKeyState(now, limits), recv: new SessionKeyState(now, limits) };
  };

  // Another link's session is not found, whatever id is sent: a connection can neither use nor
  // close a session it did not negotiate.
  const session = (id: number, c: RequestContext): Session => {
    const s = sessions.get(id);
    if (!s || (s.owner && c.link && s.owner !== c.link)) throw new LinkError(Rc.NO_TRANSFER, `no session ${id}`);
    return s;
  };

  const dropSession = (s: Session) => {
    s.aead?.cipher.wipe();
    sessions.delete(s.id);
  };

  return {
    reset: () => {
      for (const s of [...sessions.values()]) dropSession(s);
    },
    release: (link) => {
      for (const s of [...sessions.values()]) if (s.owner === link) dropSession(s);
    },
    id: Group.KEYS,
    name: 'keys',
    guard: () => void ctx.pool(),
    commands: {
      [KeysCmd.NEGOTIATE]: (p, c) => {
        const mode = oneOf(p, 'mode', ['otp', 'aead'] as const);
        const enc = p['enc'] === undefined ? 'enc' : oneOf(p, 'enc', ['enc', 'any'] as const);
        const auth = p['auth'] === undefined ? 'auth' : oneOf(p, 'auth', ['auth', 'any'] as const);
        // An unknown suite is refused here, before any key is taken or session evicted.
        const asked = p['suite'] === undefined ? undefined : oneOf(p, 'suite', AEAD_SUITES);
        if (asked !== undefined && mode !== 'aead') throw new LinkError(Rc.BAD_REQUEST, 'field "suite" applies to mode "aead" only');
        const suite = asked ?? DEFAULT_SUITE;
        const s: Session = {
          id: nextId++,
          owner: c.link,
          mode,
          suite,
          enc,
          auth,
          counter: 0,
          rekeyMessages: optionalUint(p, 'rekeyMessages', suiteMaxMessages(suite)) ?? 2 ** 16,
          rekeyMs: optionalUint(p, 'rekeyMs') ?? 3_600_000,
        };
        if (s.rekeyMessages < 1 || s.rekeyMs < 1) throw new LinkError(Rc.BAD_REQUEST, 'rekey limits must be positive');
        // Validated first: a refused NEGOTIATE closes nothing.
        // A link's fifth session evicts that link's oldest, never another link's.
        const mine = [...sessions.values()].filter((x) => x.owner === c.link);
        if (mine.length >= MAX_SESSIONS) dropSession(mine[0]!);
        if (mode === 'aead') newSessionKey(s);
        sessions.set(s.id, s);
        // The suite is echoed when it was asked for: a reply to a request without one stays the
        // bytes it always was.
        return { s: s.id, mode, enc, auth, ...(asked !== undefined ? { suite } : {}) };
      },
      [KeysCmd.SEAL]: (p, c) => {
        const s = session(uint(p, 's'), c);
        const data = bytes(p, 'd', MAX_SERVICE_DATA);
        if (s.mode === 'otp') {
          const mac = take(s.auth, OTP_MAC_KEY_BYTES);
          let pad: { key: ConsumedKey; range: KeyRange } | undefined;
          try {
            pad = data.length > 0 ? take(s.enc, data.length) : undefined;
            const header: ServiceHeader = { mode: 'otp', keyIds: pad ? [mac.range, pad.range] : [mac.range], counter: s.counter++ };
            const head = encodeServiceHeader(header);
            const sealed = otpSeal(pad?.key.key ?? new Uint8Array(0), data, mac.key.key, head);
            return { m: concat(head, sealed), keyBits: header.keyIds.reduce((a, r) => a + r.bits, 0) };
          } finally {
            mac.key.key.fill(0);
            pad?.key.key.fill(0);
          }
        }
        const now = ctx.clock();
        let rekeyed = false;
        if (s.aead!.send.needsRekey(now)) {
          newSessionKey(s);
          rekeyed = true;
        }
        const a = s.aead!;
        const counter = a.send.nextCounter(now);
        const head = encodeServiceHeader({ mode: 'aead', ...(s.suite !== DEFAULT_SUITE ? { suite: s.suite } : {}), keyIds: [a.range], counter });
        return { m: cipherSealMessage(a.cipher, counter, data, head, 'up'), rekeyed };
      },
      [KeysCmd.OPEN]: (p, c) => {
        const s = session(uint(p, 's'), c);
        const m = bytes(p, 'm', MAX_SERVICE_DATA + 512);
        let parsed: ReturnType<typeof decodeServiceHeader>;
        try {
          parsed = decodeServiceHeader(m);
        } catch (e) {
          throw new LinkError(Rc.BAD_REQUEST, (e as Error).message);
        }
        const { header, length } = parsed;
        if (header.mode !== 'aead' || s.mode !== 'aead' || !s.aead) {
          throw new LinkError(Rc.DENIED, 'downlinks use the AEAD session key; OTP serves uplinks only');
        }
        if (headerSuite(header) !== s.suite) {
          throw new LinkError(Rc.DENIED, `message suite ${headerSuite(header)} is not the session's (${s.suite})`);
        }
        const a = s.aead;
        const r = header.keyIds[0]!;
        if (header.keyIds.length !== 1 || r.bitOffset !== a.range.bitOffset || Buffer.compare(r.batchId, a.range.batchId) !== 0) {
          throw new LinkError(Rc.KEY_NOT_AVAILABLE, 'message is not under this session key');
        }
        let d: Uint8Array;
        try {
          d = cipherOpen(a.cipher, header.counter, m.subarray(length), m.subarray(0, length), 'down');
        } catch {
          throw new LinkError(Rc.AUTH_FAILED, 'message does not authenticate');
        }
        // The replay window moves only for an authentic message: a forgery carrying a high
        // counter must not use up the counters the station's genuine messages will carry.
        if (!a.recv.accept(header.counter, ctx.clock())) {
          d.fill(0);
          throw new LinkError(Rc.AUTH_FAILED, `counter ${header.counter} replayed or out of range`);
        }
        return { d };
      },
      [KeysCmd.CLOSE]: (p, c) => {
        dropSession(session(uint(p, 's'), c));
        return {};
      },
    },
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
