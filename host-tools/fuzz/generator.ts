// Structure-aware input generator of the module fuzzer. Input i of a run is a pure function of
// (seed, i): its own PRNG stream picks a seed request from the corpus and mutates it at one layer
// (docs/cli.md "qkt bench fuzz"): the wire bytes, the frame body under a valid CRC (so the codec
// sees it), the header, the CBOR payload, a replay of an earlier input, or several frames at once.
import { crc32 } from 'node:zlib';
import { cobsEncode } from '../../firmware/link/cobs.js';
import { Deframer } from '../../firmware/link/framer.js';
import { decodeMessage } from '../../firmware/link/codec.js';
import { CRC_SIZE, HEADER_SIZE, Kind } from '../../firmware/link/frame.js';
import { Group } from '../../firmware/link/groups.js';
import { Prng } from './prng.js';
import { encodeItem, head, item } from './cbor.js';
import type { Item } from './cbor.js';
import { seedCorpus } from './corpus.js';
import type { Seed } from './corpus.js';

export type Layer = 'valid' | 'raw' | 'body' | 'header' | 'cbor' | 'replay' | 'multi';
export const LAYERS: readonly Layer[] = ['valid', 'raw', 'body', 'header', 'cbor', 'replay', 'multi'];

export interface FuzzInput {
  index: number;
  layer: Layer;
  /** The corpus entry it started from (for a replay: the replayed input's). */
  seed: string;
  /** Written to the link one after the other (a frame split across writes, or frames together). */
  writes: Uint8Array[];
  /** Request frames (version 1) in it: at most the places it takes in the module's receive window. */
  requests: number;
}

/** Seq numbers the fuzzer's own requests use; seeds draw theirs below this. */
export const HOST_SEQ_BASE = 0x8000;

const CRC = (b: Uint8Array): number => crc32(b);

/** Wire bytes of a body (header + payload): CRC appended, COBS-encoded, 0x00 on both sides. */
export function wireOfBody(body: Uint8Array, o: { crc?: boolean; lead?: boolean } = {}): Uint8Array {
  const full = new Uint8Array(body.length + CRC_SIZE);
  full.set(body);
  new DataView(full.buffer).setUint32(body.length, o.crc === false ? CRC(body) ^ 1 : CRC(body), false);
  const enc = cobsEncode(full);
  const out = new Uint8Array(enc.length + 2);
  out.set(enc, 1);
  return o.lead === false ? out.subarray(1) : out;
}

export function bodyOf(h: { version: number; kind: number; group: number; command: number; seq: number }, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE + payload.length);
  b.set([h.version & 0xff, h.kind & 0xff, h.group & 0xff, h.command & 0xff, (h.seq >>> 8) & 0xff, h.seq & 0xff]);
  b.set(payload, HEADER_SIZE);
  return b;
}

const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** Nested arrays (or maps) `depth` deep around a 0, written flat: no recursion to build it. */
function deep(depth: number, kind: 'array' | 'map' | 'indef'): Uint8Array {
  if (kind === 'array') return concat([new Uint8Array(depth).fill(0x81), Uint8Array.of(0x00)]);
  if (kind === 'indef') return concat([new Uint8Array(depth).fill(0x9f), Uint8Array.of(0x00), new Uint8Array(depth).fill(0xff)]);
  const out = new Uint8Array(depth * 3 + 1);
  for (let i = 0; i < depth; i++) out.set([0xa1, 0x61, 0x6b], i * 3); // {"k": ...
  return out;
}

export class FuzzGenerator {
  readonly seeds: Seed[];
  private readonly payloads: Uint8Array[];

  /**
   * @param seed the run's seed: the same seed gives the same inputs.
   * @param maxBody the module's largest frame body (PARAMS maxFrame): sizes are aimed around it.
   * @param admin include ADMIN requests with a well-formed (wrong) token, which the module counts in
   *   flash by design (docs/protocol.md 3.10); without it such inputs are drawn again.
   */
  constructor(
    readonly seed: number,
    o: { terminalId: string; maxBody: number; admin?: boolean },
  ) {
    this.maxBody = o.maxBody;
    this.admin = o.admin ?? false;
    this.seeds = seedCorpus({ terminalId: o.terminalId, seed, admin: this.admin });
    this.payloads = this.seeds.map((s) => encodeItem(s.payload));
    this.checker = new Deframer(o.maxBody);
  }
  readonly maxBody: number;
  private readonly admin: boolean;
  private readonly checker: Deframer;

  /** Input `index` of this run. */
  input(index: number): FuzzInput {
    const r = new Prng(this.seed, index);
    for (let attempt = 0; ; attempt++) {
      const x = this.draw(index, r, 0);
      const c = this.classify(x.writes);
      if (this.admin || attempt > 50 || !c.adminToken) return { ...x, requests: c.requests };
    }
  }

  /** True when the bytes hold an ADMIN request whose token the module would check (and count in flash when wrong). */
  reachesAdminToken(writes: Uint8Array[]): boolean {
    return this.classify(writes).adminToken;
  }

  /**
   * What the module will make of these bytes, read with its own deframer and codec: how many
   * request frames of version 1 they hold (each may take a place in its receive window), and
   * whether one is an ADMIN request with a byte-string token.
   */
  private classify(writes: Uint8Array[]): { requests: number; adminToken: boolean } {
    let requests = 0;
    let adminToken = false;
    for (const w of writes) {
      for (const body of this.checker.push(w)) {
        if (body[0] !== 1 || body[1] !== Kind.REQUEST) continue;
        requests++;
        if (body[2] !== Group.ADMIN) continue; // header bytes: no decode needed
        const d = decodeMessage(body);
        if (!d.ok) continue;
        const t = d.message.payload['token'];
        if (t instanceof Uint8Array && t.length <= 256) adminToken = true;
      }
    }
    this.checker.push(Uint8Array.of(0)); // end any partial frame: the next input is read on its own
    return { requests, adminToken };
  }

  private draw(index: number, r: Prng, depth: number): Omit<FuzzInput, 'requests'> {
    const roll = r.int(100);
    const layer: Layer = roll < 8 ? 'valid' : roll < 24 ? 'raw' : roll < 38 ? 'body' : roll < 52 ? 'header' : roll < 88 ? 'cbor' : roll < 94 ? (depth === 0 && index > 0 ? 'replay' : 'cbor') : 'multi';
    const si = r.int(this.seeds.length);
    const seed = this.seeds[si]!;
    const seq = r.int(HOST_SEQ_BASE);
    const h = { version: 1, kind: Kind.REQUEST as number, group: seed.group, command: seed.command, seq };
    const one = (writes: Uint8Array[]): Omit<FuzzInput, 'requests'> => ({ index, layer, seed: seed.name, writes });
    switch (layer) {
      case 'valid':
        return one([wireOfBody(bodyOf(h, this.payloads[si]!))]);
      case 'header':
        return one([wireOfBody(bodyOf(this.mutateHeader(h, r, index), this.payloads[si]!))]);
      case 'cbor':
        return one([wireOfBody(bodyOf(h, this.mutatePayload(seed.payload, r)))]);
      case 'body':
        return one([wireOfBody(mutateBytes(bodyOf(h, this.payloads[si]!), r, 1 + r.int(3)), { lead: r.chance(0.9) })]);
      case 'raw':
        return one(this.raw(bodyOf(h, this.payloads[si]!), r));
      case 'replay': {
        const earlier = this.input(r.int(index));
        return { ...earlier, index, layer: 'replay', seed: `replay of ${earlier.index} (${earlier.seed})` };
      }
      case 'multi': {
        const parts = [0, 1, 2].slice(0, 2 + r.int(2)).map(() => concat(this.draw(index, r, depth + 1).writes));
        const all = concat(parts);
        if (r.chance(0.5)) return one([all]);
        // Split at random points: frames cross write boundaries.
        const cuts = [...new Set([0, ...Array.from({ length: 1 + r.int(6) }, () => r.int(all.length + 1)), all.length])].sort((a, b) => a - b);
        return one(cuts.slice(1).map((c, i) => all.subarray(cuts[i]!, c)).filter((w) => w.length > 0));
      }
    }
  }

  private mutateHeader(h: { version: number; kind: number; group: number; command: number; seq: number }, r: Prng, index: number) {
    const m = { ...h };
    const fields = 1 + r.int(2);
    for (let k = 0; k < fields; k++) {
      switch (r.int(6)) {
        case 0:
          m.version = r.pick([0, 2, 3, 0x7f, 0x80, 0xff, r.int(256)]);
          break;
        case 1:
          m.kind = r.pick([1, 2, 3, 4, 0x80, 0xff, r.int(256)]);
          break;
        case 2:
          m.group = r.pick([7, 8, 0x7f, 0xff, r.int(256)]);
          break;
        case 3:
          m.command = r.pick([4, 5, 0x7f, 0xff, r.int(256)]);
          break;
        case 4:
          // Wrapping, far off, and sequence numbers of earlier inputs (a replayed seq with another command).
          m.seq = r.pick([0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff, r.int(0x10000), index > 0 ? new Prng(this.seed, r.int(index)).u32() % HOST_SEQ_BASE : 0]);
          break;
        default: {
          // Another seed's group and command over this payload: every handler meets every body.
          const o = r.pick(this.seeds);
          m.group = o.group;
          m.command = o.command;
        }
      }
    }
    return m;
  }

  /** A hostile CBOR item, at most about `room` bytes encoded. */
  hostile(r: Prng, room: number): Item {
    const big = Math.max(0, Math.min(room - 16, 8192));
    switch (r.int(22)) {
      case 0:
        return { t: 'uint', v: r.pick([2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 32n - 1n, 2n ** 31n, 0xffffn, 0n]) };
      case 1:
        return { t: 'nint', v: r.pick([2n ** 64n - 1n, 2n ** 53n, 2n ** 31n, 0n, 1n]) };
      case 2:
        return { t: 'float', v: r.pick([0.5, Number.NaN, Infinity, -Infinity, -0, 1e308, 5, 2 ** 53, -1, 4096]), size: r.pick([2, 4, 8] as const) };
      case 3:
        return { t: 'bytes', v: r.bytes(r.pick([0, 1, 4, 16, 33, big])) };
      case 4:
        return { t: 'text', v: 'A'.repeat(r.pick([0, 1, 32, 256, big])) };
      case 5:
        return r.pick<Item>([{ t: 'simple', v: 20 }, { t: 'simple', v: 21 }, { t: 'simple', v: 22 }, { t: 'simple', v: 23 }, { t: 'simple', v: 255 }, { t: 'simple', v: 19 }]);
      case 6:
      {
        // Deep nesting: 16, 1,000 or 10,000 levels; mostly cut to what fits the frame (a 10,000-deep
        // array does not fit 8 KiB: sent whole it tests the framer's oversize drop instead).
        const kind = r.pick(['array', 'map', 'indef'] as const);
        const fits = Math.floor((room - 4) / (kind === 'array' ? 1 : kind === 'indef' ? 2 : 3));
        const want = r.pick([16, 1000, 10_000]);
        return { t: 'raw', v: deep(Math.max(1, r.chance(0.8) ? Math.min(want, fits) : want), kind) };
      }
      case 7:
        // A head declaring far more than follows.
        return { t: 'raw', v: Uint8Array.from([...head(r.pick([2, 3, 4, 5]), r.pick([2n ** 32n - 1n, 2n ** 64n - 1n, 0xffffn, 9000n])), ...r.bytes(r.int(8))]) };
      case 8:
        return { t: 'bytes', v: r.bytes(r.int(40)), indef: true };
      case 9:
        return { t: 'text', v: 'indefinite', indef: true };
      case 10:
        return { t: 'array', v: [item(1), item(2)], indef: true, noBreak: r.chance(0.5) };
      case 11:
        return { t: 'map', v: [[item('t'), item(1)]], indef: true, noBreak: r.chance(0.5) };
      case 12:
        return { t: 'tag', tag: r.pick([0n, 1n, 2n, 3n, 4n, 24n, 28n, 29n, 64n, 258n, 55799n, 2n ** 64n - 1n, BigInt(r.u32())]), v: r.pick([item(5), item(new Uint8Array(9).fill(0xff)), item('x'), item([1]), { t: 'uint', v: 0n } as Item]) };
      case 13:
        // Value sharing: tag 28 marks, tag 29 refers (cbor-x resolves them); a reference to nothing.
        return { t: 'raw', v: r.pick([Uint8Array.of(0xd8, 0x1c, 0x81, 0xd8, 0x1d, 0x00), Uint8Array.of(0xd8, 0x1d, 0x00), Uint8Array.of(0xd8, 0x1d, 0x19, 0xff, 0xff), Uint8Array.of(0xd8, 0x1c, 0xa1, 0x61, 0x61, 0xd8, 0x1d, 0x00)]) };
      case 14:
        // Non-shortest integer heads: 5 written in 2, 3, 5 and 9 bytes.
        return { t: 'raw', v: Uint8Array.from(head(r.pick([0, 1]), 5, r.pick([1, 2, 4, 8] as const))) };
      case 15:
        return { t: 'raw', v: r.pick([Uint8Array.of(0xff), Uint8Array.of(0x1c), Uint8Array.of(0x5f, 0x01), Uint8Array.of(0x7f, 0x41, 0x00, 0xff), Uint8Array.of(0xfb, 0x00)]) };
      case 16:
        return { t: 'array', v: Array.from({ length: r.pick([0, 3, 100, Math.min(4000, big)]) }, () => item(r.int(30))) };
      case 17:
        return { t: 'map', v: [] };
      case 18:
        return { t: 'raw', v: r.bytes(1 + r.int(24)) };
      case 19:
        return { t: 'text', v: r.pick(['otp', 'aead', 'any', 'enc', 'auth', 'OTP', '', '\u0000', '\ud800', 'é'.repeat(40)]) };
      case 20:
        return item(r.pick([0, 1, 2, 4096, 65536, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER, -1]));
      default:
        return { t: 'raw', v: Uint8Array.of(0xc2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0, 0) }; // bignum 2^64
    }
  }

  private mutatePayload(p: Item, r: Prng): Uint8Array {
    const room = this.maxBody - HEADER_SIZE - CRC_SIZE - 32;
    if (p.t !== 'map' || r.chance(0.08)) {
      // The whole payload replaced: not a map at all, or a map inside something.
      return encodeItem(this.hostile(r, room));
    }
    const entries = p.v.map(([k, v]) => [k, v] as [Item, Item]);
    const map: Extract<Item, { t: 'map' }> = { t: 'map', v: entries };
    const ops = 1 + r.int(3);
    for (let k = 0; k < ops; k++) {
      const at = r.int(Math.max(1, entries.length));
      switch (r.int(8)) {
        case 0:
        case 1:
        case 2:
          // Wrong type (or a hostile value of the right type) for a key the handler reads.
          if (entries[at]) entries[at] = [entries[at]![0], this.hostile(r, room)];
          else entries.push([item('t'), this.hostile(r, room)]);
          break;
        case 3:
          entries.splice(at, 1); // missing key
          break;
        case 4:
          entries.push([r.pick([item('x'), item('t'), item(''), item(0), item(new Uint8Array(2)), item('d'.repeat(300))]), this.hostile(r, room)]); // extra key
          break;
        case 5:
          // Duplicate key: the same key again with another value, before or after.
          if (entries[at]) entries.splice(r.chance(0.5) ? at : entries.length, 0, [entries[at]![0], this.hostile(r, room)]);
          break;
        case 6:
          map.indef = true;
          map.noBreak = r.chance(0.3);
          break;
        default:
          // A key of another type or spelling.
          if (entries[at]) entries[at] = [r.pick([item(0), item(new Uint8Array([0x74])), item('T'), item('t\u0000'), { t: 'text', v: 't', indef: true } as Item]), entries[at]![1]];
      }
    }
    let out = encodeItem(map);
    if (r.chance(0.05)) out = out.subarray(0, r.int(out.length)); // truncated payload
    else if (r.chance(0.05)) out = concat([out, r.bytes(1 + r.int(8))]); // trailing bytes
    return out;
  }

  private raw(body: Uint8Array, r: Prng): Uint8Array[] {
    switch (r.int(8)) {
      case 0:
        return [r.bytes(1 + r.int(r.chance(0.1) ? 20_000 : 300))]; // garbage
      case 1:
        return [new Uint8Array(1 + r.int(64))]; // lone 0x00s
      case 2: {
        // Oversize: a body past maxBody with a valid CRC, or a run of non-zero bytes past the buffer.
        if (r.chance(0.5)) return [wireOfBody(concat([body, r.bytes(this.maxBody + r.int(4096))]))];
        return [concat([Uint8Array.of(0), r.bytes(this.maxBody * 2).map((b) => b || 1)])];
      }
      case 3: {
        const w = wireOfBody(body);
        return [w.subarray(0, r.int(w.length))]; // truncated, no delimiter: the next frame ends it
      }
      case 4:
        return [mutateBytes(wireOfBody(body), r, 1 + r.int(4))]; // bit flips on the wire: CRC fails
      case 5:
        return [wireOfBody(body, { crc: false })]; // wrong CRC
      case 6:
        return [wireOfBody(body.subarray(0, r.int(HEADER_SIZE + 2)))]; // valid CRC over a short body
      default:
        return [wireOfBody(body, { lead: false }).slice(0, -1)]; // no delimiters at all
    }
  }
}

/** Bit flips, byte overwrites, insertions, deletions and truncation (as firmware/test-support/mutate.ts). */
export function mutateBytes(v: Uint8Array, r: Prng, count: number): Uint8Array {
  let b: Uint8Array = Uint8Array.from(v);
  for (let k = 0; k < count; k++) {
    const n = b.length;
    const at = r.int(Math.max(1, n));
    switch (r.int(6)) {
      case 0:
      case 1:
        if (n) b[at]! ^= 1 << r.int(8);
        break;
      case 2:
        if (n) b[at] = r.pick([0, 0xff, 0x7f, 0x80, r.int(256)]);
        break;
      case 3:
        b = concat([b.subarray(0, at), r.bytes(1 + r.int(8)), b.subarray(at)]);
        break;
      case 4:
        b = concat([b.subarray(0, at), b.subarray(at + 1 + r.int(8))]);
        break;
      default:
        b = b.subarray(0, at);
    }
  }
  return b;
}

export const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
