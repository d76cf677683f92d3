// The master station's cipher machine: opens terminal uplinks with the matching keys named in
// each message header (taken from the station store by id: never twice), and seals downlinks
// under the AEAD session key a terminal chose, with the suite its uplinks named (the header's
// mode byte, authenticated as AAD: the station learns the suite as it learns the mode). A first verified use of an inactive batch proves
// its delivery and activates it (pre-application mode, DESIGN.md "Security model").
import { cipherOpen, cipherSealMessage, decodeServiceHeader, headerSuite, otpOpen, splitOtpKey, encodeServiceHeader, SessionCipher, SessionKeyState, DEFAULT_SUITE } from '../../firmware/crypto/service.js';
import type { AeadSuite, KeyRange } from '../../firmware/crypto/service.js';
import { StationStoreError } from './store.js';
import type { StationKeyStore } from './store.js';

export class StationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StationError';
  }
}

interface Session {
  /** The suite the session's first authentic uplink named: the key is never used under another. */
  suite: AeadSuite;
  cipher: SessionCipher;
  range: KeyRange;
  recv: SessionKeyState;
  sendCounter: number;
}

/** AEAD sessions kept per terminal; a new one beyond it drops (and wipes) that terminal's oldest. */
export const MAX_SESSIONS_PER_TERMINAL = 8;

const rangeKey = (t: string, r: KeyRange) => `${t}/${Buffer.from(r.batchId).toString('hex')}/${r.bitOffset}`;

export class Station {
  private readonly sessions = new Map<string, Session>();
  /** Key bits the station consumed, per terminal. */
  readonly consumedBits = new Map<string, number>();

  constructor(
    readonly store: StationKeyStore,
    private readonly clock: () => number = Date.now,
  ) {}

  private take(terminalId: string, r: KeyRange): Uint8Array {
    const k = this.store.takeById(terminalId, r.batchId, r.bitOffset, r.bits / 8, true);
    this.consumedBits.set(terminalId, (this.consumedBits.get(terminalId) ?? 0) + r.bits + k.skippedBits);
    return k.key;
  }

  /**
   * The session under `id`, if its batch is still live in the store. A batch voided since (`kmd
   * void --in-use`, `kmd enroll --again`, in another process) ends the session here: its key is
   * wiped and the caller refused, so nothing is sealed or opened under a key the KMD retired.
   */
  private session(terminalId: string, id: string): Session | undefined {
    const s = this.sessions.get(id);
    if (!s || this.store.holdsBatch(terminalId, s.range.batchId)) return s;
    s.cipher.wipe();
    this.sessions.delete(id);
    throw new StationStoreError(`session ended: batch ${Buffer.from(s.range.batchId).toString('hex').slice(0, 8)} of ${terminalId} is void at the station`, 'UNKNOWN_BATCH');
  }

  private keep(terminalId: string, id: string, s: Session): void {
    const mine = [...this.sessions.keys()].filter((k) => k.startsWith(`${terminalId}/`));
    if (mine.length >= MAX_SESSIONS_PER_TERMINAL) {
      const oldest = this.sessions.get(mine[0]!)!;
      oldest.cipher.wipe();
      this.sessions.delete(mine[0]!);
    }
    this.sessions.set(id, s);
  }

  private activate(terminalId: string, ranges: KeyRange[]): void {
    for (const r of ranges) this.store.activate(terminalId, Buffer.from(r.batchId).toString('hex'), 'first-use');
  }

  /** Open an uplink message (service header + sealed body) from `terminalId`. */
  openUplink(terminalId: string, message: Uint8Array): Uint8Array {
    const { header, length } = decodeServiceHeader(message);
    const aad = message.subarray(0, length);
    const body = message.subarray(length);
    if (header.mode === 'otp') {
      // The keys are read, the message checked, and only an authentic message spends them: a
      // forged header, however far ahead of the frontier it points, burns nothing.
      const parts = header.keyIds.map((r) => this.store.peekById(terminalId, r.batchId, r.bitOffset, r.bits / 8));
      const material = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) {
        material.set(p, at);
        at += p.length;
        p.fill(0);
      }
      const { macKey32, keyStream } = splitOtpKey(material);
      let plain: Uint8Array;
      try {
        plain = otpOpen(keyStream, body, macKey32, aad);
      } catch {
        throw new StationError(`uplink from ${terminalId} does not authenticate (no key spent)`);
      } finally {
        material.fill(0);
        macKey32.fill(0);
        keyStream.fill(0);
      }
      // Authentic: spend the keys now (by id, never twice: a replay fails here).
      for (const r of header.keyIds) this.take(terminalId, r).fill(0);
      this.activate(terminalId, header.keyIds);
      return plain;
    }
    const r = header.keyIds[0]!;
    const id = rangeKey(terminalId, r);
    const suite = headerSuite(header);
    let s = this.session(terminalId, id);
    // One key, one suite: a message naming an open session's key under another suite is refused
    // unopened (using the key under a second suite would void each suite's analysis).
    if (s && s.suite !== suite) throw new StationError(`uplink from ${terminalId} names suite ${suite}, its session key is ${s.suite}`);
    // A new session key is read first and taken only once a message under it authenticates.
    let fresh: SessionCipher | undefined;
    if (!s) {
      const k = this.store.peekById(terminalId, r.batchId, r.bitOffset, r.bits / 8);
      try {
        fresh = new SessionCipher(suite, k);
      } finally {
        k.fill(0);
      }
    }
    let plain: Uint8Array;
    try {
      plain = cipherOpen(s ? s.cipher : fresh!, header.counter, body, aad, 'up');
    } catch {
      fresh?.wipe();
      throw new StationError(`uplink from ${terminalId} does not authenticate`);
    }
    if (!s) {
      // Authentic: take the key now (by id, never twice), keep the cipher built from its value.
      try {
        this.take(terminalId, r).fill(0);
      } catch (e) {
        fresh!.wipe();
        throw e;
      }
      s = { suite, cipher: fresh!, range: r, recv: new SessionKeyState(this.clock(), { maxMessages: 2 ** 32, maxAgeMs: Number.MAX_SAFE_INTEGER }), sendCounter: 0 };
      this.keep(terminalId, id, s);
    }
    // The counter is recorded only for an authentic message: a forgery cannot block real ones.
    if (!s.recv.accept(header.counter, this.clock())) throw new StationError(`uplink counter ${header.counter} from ${terminalId} replayed`);
    this.activate(terminalId, [r]);
    return plain;
  }

  /** Seal a downlink to `terminalId` under the session key its uplinks named. */
  sealDownlink(terminalId: string, sessionKey: KeyRange, plaintext: Uint8Array): Uint8Array {
    const s = this.session(terminalId, rangeKey(terminalId, sessionKey));
    if (!s) throw new StationError(`no AEAD session with ${terminalId} under that key; it must send an uplink first`);
    const counter = s.sendCounter++;
    const head = encodeServiceHeader({ mode: 'aead', ...(s.suite !== DEFAULT_SUITE ? { suite: s.suite } : {}), keyIds: [sessionKey], counter });
    return cipherSealMessage(s.cipher, counter, plaintext, head, 'down');
  }

  /**
   * Wipe and drop every AEAD session: after the store lost changes it had made (a group commit
   * that failed), a session may hold a key the store still names as unused.
   */
  forgetSessions(): void {
    for (const s of this.sessions.values()) s.cipher.wipe();
    this.sessions.clear();
  }

  close(): void {
    for (const s of this.sessions.values()) s.cipher.wipe();
    this.sessions.clear();
    this.store.close();
  }
}
