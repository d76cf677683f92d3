// The shaped link's scheduler on an injected clock: exact delivery times for known inputs
// (serialisation, latency), order under jitter, a lost segment resent after the RTO with the ones
// behind it held, the RTO backing off, coalescing, and seeded runs replaying exactly.
import t from 'tap';
import { mulberry32 } from './faults.js';
import { DEFAULT_MSS_BYTES, DEFAULT_OVERHEAD_BYTES, MIN_RTO_MS, Shaper, resolveShape, wireMs } from './shaper.js';
import type { Delivery, ShapeOptions } from './shaper.js';

/** Run the shaper to idle, stepping the clock to each event; every delivery with its time. */
function drain(s: Shaper): Delivery[] {
  const out: Delivery[] = [];
  for (let at = s.nextEventAt(); at !== undefined; at = s.nextEventAt()) out.push(...s.advance(at));
  return out;
}

const bytes = (n: number, fill = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i + fill) & 0xff);
const concat = (ds: Delivery[]): Uint8Array => Uint8Array.from(ds.flatMap((d) => [...d.bytes]));
const close = (a: number, b: number) => Math.abs(a - b) < 1e-9;

/** A seed whose loss draws (one per transmission) start with `pattern` (true: lost) at `loss`. */
function seedFor(pattern: boolean[], loss: number): number {
  for (let seed = 1; seed < 1_000_000; seed++) {
    const r = mulberry32(seed);
    if (pattern.every((lost) => r() < loss === lost)) return seed;
  }
  throw new Error('no seed found');
}

t.test('defaults are the documented ones', async (t) => {
  const o = resolveShape({ rate: 9600, latencyMs: 20 });
  t.equal(o.mssBytes, DEFAULT_MSS_BYTES);
  t.equal(DEFAULT_MSS_BYTES, 536);
  t.equal(o.overheadBytes, DEFAULT_OVERHEAD_BYTES);
  t.equal(DEFAULT_OVERHEAD_BYTES, 40);
  // base RTT: 2 x 20 ms + 576 bytes and a 40-byte ACK at 9600 bit/s (480 + 33.3 ms).
  t.ok(close(o.baseRttMs, 40 + 480 + (40 * 8 * 1000) / 9600));
  t.ok(close(o.rtoMs, 2 * o.baseRttMs));
  t.equal(resolveShape({ rate: 10_000_000 }).rtoMs, MIN_RTO_MS, 'a fast, near link: the 200 ms floor');
});

t.test('serialisation time = (bytes + overhead) x 8 / rate, then latency', async (t) => {
  const s = new Shaper({ rate: 9600, latencyMs: 0 });
  s.write(bytes(100), 0);
  const [d] = drain(s);
  t.ok(close(d!.at, (140 * 8 * 1000) / 9600), `100 bytes at 9.6 kbit/s: ${d!.at} ms`);

  // Two full segments and a tail, written at once: back to back on the wire, then 20 ms each.
  const l = new Shaper({ rate: 9600, latencyMs: 20 });
  l.write(bytes(536 * 2 + 10), 1000);
  const ds = drain(l);
  const seg = wireMs(536, 40, 9600);
  t.same(ds.map((x) => x.bytes.length), [536, 536, 10]);
  t.ok(close(ds[0]!.at, 1000 + seg + 20));
  t.ok(close(ds[1]!.at, 1000 + 2 * seg + 20));
  t.ok(close(ds[2]!.at, 1000 + 2 * seg + wireMs(10, 40, 9600) + 20));
  t.same(concat(ds), bytes(536 * 2 + 10));
  t.same(l.stats, { bytesIn: 1082, bytesOut: 1082, segments: 3, lostSegments: 0, retransmissions: 0, queueDelayMs: { mean: (0 + seg + 2 * seg) / 3, max: 2 * seg }, pendingBytes: 0 });
});

t.test('each Table II rate class is a real constraint: 64 KiB takes its wire time, no less', async (t) => {
  for (const kbit of [9.6, 19.2, 38.4, 56.0, 64.0]) {
    const rate = kbit * 1000;
    const s = new Shaper({ rate, latencyMs: 10 });
    const n = 64 * 1024;
    s.write(bytes(n), 0);
    const ds = drain(s);
    const segments = Math.ceil(n / 536);
    const expected = ((n + segments * 40) * 8 * 1000) / rate + 10;
    t.ok(close(ds.at(-1)!.at, expected), `${kbit} kbit/s: ${ds.at(-1)!.at.toFixed(1)} ms, expected ${expected.toFixed(1)}`);
  }
});

t.test('a write to an idle link leaves at once; writes behind a busy link share a segment', async (t) => {
  const s = new Shaper({ rate: 8_000_000, overheadBytes: 0 }); // 1 byte per microsecond
  s.write(bytes(10), 0); // on the wire 0 .. 0.01 ms
  s.write(bytes(5), 0.001); // queued behind it
  s.write(bytes(5, 5), 0.002);
  const ds = drain(s);
  t.same(ds.map((d) => d.bytes.length), [10, 10], 'the two small writes went as one segment');
  t.same([...ds[1]!.bytes], [...bytes(5), ...bytes(5, 5)]);
  t.equal(s.stats.segments, 2);
});

t.test('jitter: order kept, never before the segment ahead, bytes intact', async (t) => {
  const s = new Shaper({ rate: 1_000_000, latencyMs: 30, jitterMs: 25, seed: 7 });
  const sent: number[] = [];
  let now = 0;
  const out: Delivery[] = [];
  for (let i = 0; i < 200; i++) {
    s.write(bytes(50, i), now);
    sent.push(...bytes(50, i));
    now += 0.5; // faster than the jitter spread: segments overtake on the wire, and must not at the reader
    out.push(...s.advance(now));
  }
  out.push(...drain(s));
  t.same([...concat(out)], sent, 'every byte, in order');
  let held = 0;
  for (let i = 1; i < out.length; i++) {
    t.ok(out[i]!.at >= out[i - 1]!.at, 'never before the one ahead');
    if (out[i]!.at === out[i - 1]!.at) held++;
  }
  t.ok(held > 0, `some segments were held behind a later one (${held})`);
  const wire = wireMs(50, 40, 1_000_000);
  t.ok(out[0]!.at >= wire + 5 - 1e-9 && out[0]!.at <= wire + 55 + 1e-9, 'first delay within latency +- jitter');
});

t.test('a lost segment arrives an RTO later, and the segments behind it wait for it', async (t) => {
  const loss = 0.3;
  const seed = seedFor([true, false, false, false], loss);
  const rate = 8_000_000; // 1 byte per microsecond: 576 bytes on the wire = 0.576 ms
  const s = new Shaper({ rate, loss, seed, rtoMs: 200, latencyMs: 5 });
  s.write(bytes(536 * 3), 0);
  const ds = drain(s);
  const seg = 0.576;
  // seg 0 lost on [0, .576]; 1 and 2 go on [.576, 1.728] and arrive, but wait;
  // seg 0 is resent 200 ms after its last bit: [200.576, 201.152], + 5 ms.
  const resentAt = seg + 200 + seg + 5;
  t.same(ds.map((d) => d.bytes.length), [536, 536, 536]);
  for (const d of ds) t.ok(close(d.at, resentAt), `delivered at ${d.at}, expected ${resentAt}`);
  t.same(concat(ds), bytes(536 * 3));
  t.match(s.stats, { segments: 3, lostSegments: 1, retransmissions: 1, bytesOut: 1608, pendingBytes: 0 });
});

t.test('the RTO doubles per consecutive loss of the same segment (RFC 6298 5.5); the link is busy for each resend', async (t) => {
  const loss = 0.3;
  // seg 0 lost, seg 1 through, first resend of 0 lost, second through.
  const seed = seedFor([true, false, true, false], loss);
  const s = new Shaper({ rate: 8_000_000, loss, seed, rtoMs: 100 });
  s.write(bytes(536 * 2), 0);
  const ds = drain(s);
  const seg = 0.576;
  const first = seg + 100; // first resend starts
  const second = first + seg + 200; // doubled
  t.ok(close(ds[0]!.at, second + seg), `${ds[0]!.at} vs ${second + seg}`);
  t.ok(close(ds[1]!.at, ds[0]!.at), 'segment 1 held behind it');
  t.match(s.stats, { segments: 2, lostSegments: 1, retransmissions: 2 });

  // A resend takes wire time: new data written while it is due waits behind it.
  const seed2 = seedFor([true, false, false], loss);
  const b = new Shaper({ rate: 8_000, loss, seed: seed2, rtoMs: 200, overheadBytes: 0 }); // 1 byte per ms
  b.write(bytes(100), 0); // lost on [0, 100], resend due at 300
  b.write(bytes(50, 1), 300); // written as the resend becomes due: it goes first, [300, 400]
  const bs = drain(b);
  t.ok(close(bs[0]!.at, 400), 'the resend at 300..400');
  t.ok(close(bs[1]!.at, 450), 'the new data after it, 400..450');
});

t.test('seeded runs are identical; another seed differs', async (t) => {
  const run = (seed: number) => {
    const o: ShapeOptions = { rate: 64_000, latencyMs: 20, jitterMs: 5, loss: 0.05, seed };
    const s = new Shaper(o);
    let now = 0;
    const out: Delivery[] = [];
    for (let i = 0; i < 100; i++) {
      s.write(bytes(300, i), now);
      now += 7;
      out.push(...s.advance(now));
    }
    out.push(...drain(s));
    return { times: out.map((d) => d.at), lens: out.map((d) => d.bytes.length), stats: s.stats };
  };
  t.same(run(42), run(42));
  t.notSame(run(42).times, run(43).times);
  t.ok(run(42).stats.lostSegments > 0, 'some loss at 5%');
});

t.test('nextEventAt: idle is undefined; advance before an event hands nothing on', async (t) => {
  const s = new Shaper({ rate: 9600, latencyMs: 50 });
  t.equal(s.nextEventAt(), undefined);
  s.write(bytes(10), 0);
  const at = s.nextEventAt()!;
  t.ok(close(at, wireMs(10, 40, 9600) + 50));
  t.same(s.advance(at - 1), []);
  t.equal(s.pendingBytes, 10);
  t.equal(s.advance(at).length, 1);
  t.equal(s.nextEventAt(), undefined);
});

t.test('bad options and inputs are refused at the entry, naming the parameter', async (t) => {
  t.throws(() => new Shaper({ rate: 0 }), /rate must be above 0/);
  t.throws(() => new Shaper({ rate: 9600, loss: 1 }), /loss must be below 1/);
  t.throws(() => new Shaper({ rate: 9600, jitterMs: -1 }), /jitterMs/);
  t.throws(() => new Shaper({ rate: 9600, mssBytes: 1.5 }), /whole numbers/);
  t.throws(() => new Shaper({ rate: Number.NaN }), TypeError);
  const s = new Shaper({ rate: 9600 });
  t.throws(() => s.write('x' as unknown as Uint8Array, 0), TypeError);
  s.write(bytes(1), 10);
  t.throws(() => s.advance(5), /time went backwards/);
});
