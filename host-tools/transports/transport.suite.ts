// The Transport contract as one test suite, written once and run against every back end
// (in-process, mock serial, pty serial, TCP, fake WebUSB, paced and fault wrappers).
import type { Test } from 'tap';
import type { Transport } from '../../firmware/link/transport.js';

export interface TransportPair {
  a: Transport;
  b: Transport;
  /** Release anything the pair holds beyond the two transports (socat, servers). */
  cleanup?: () => Promise<void>;
}

export interface SuiteOptions {
  /**
   * The receive side splits on 0x00 and holds a trailing partial frame (serial): streams in
   * the suite then end with 0x00, which is all the link layer ever sends.
   */
  frameAligned?: boolean;
  /** close() on one end ends the other too (in-process, TCP, WebUSB fake). */
  closePropagates?: boolean;
  /** Bytes for the large-transfer test; 1 MiB by default. */
  largeBytes?: number;
  /** Simulate a cable pull on `a` (or the link under it); `a` must then end with an error. */
  pull?: (pair: TransportPair) => Promise<void> | void;
}

/** Deterministic xorshift32 PRNG so a failing case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}

/** Random bytes in random-sized chunks; with frameAligned the stream ends with 0x00. */
export function randomChunks(seed: number, total: number, maxChunk: number, frameAligned: boolean): Uint8Array[] {
  const rnd = prng(seed);
  const chunks: Uint8Array[] = [];
  let left = total;
  while (left > 0) {
    const n = Math.min(left, 1 + Math.floor(rnd() * maxChunk));
    const c = new Uint8Array(n);
    // About one byte in 64 is 0x00, like COBS frames of ~64 bytes.
    for (let i = 0; i < n; i++) c[i] = rnd() < 1 / 64 ? 0 : Math.floor(rnd() * 256);
    chunks.push(c);
    left -= n;
  }
  if (frameAligned) chunks.push(Uint8Array.of(0));
  return chunks;
}

export function concat(chunks: readonly Uint8Array[]): Buffer {
  return Buffer.concat(chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
}

/** Resolve with everything `t` receives once `expected` bytes have arrived (or reject on close). */
export function collect(tr: Transport, expected: number, timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Uint8Array[] = [];
    let n = 0;
    const timer = setTimeout(() => reject(new Error(`${tr.description}: got ${n} of ${expected} bytes`)), timeoutMs);
    tr.onData((chunk) => {
      got.push(Uint8Array.from(chunk));
      n += chunk.length;
      if (n >= expected) {
        clearTimeout(timer);
        resolve(concat(got));
      }
    });
    tr.onClose((error) => {
      if (n < expected) {
        clearTimeout(timer);
        reject(new Error(`${tr.description}: closed after ${n} of ${expected} bytes (${error?.message ?? 'no error'})`));
      }
    });
  });
}

/** Count onClose calls on `tr`, and wait for the first one. */
export function watchClose(tr: Transport): { calls: (Error | undefined)[]; closed: Promise<Error | undefined> } {
  const calls: (Error | undefined)[] = [];
  const closed = new Promise<Error | undefined>((resolve) =>
    tr.onClose((error) => {
      calls.push(error);
      resolve(error);
    }),
  );
  return { calls, closed };
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeAll(tr: Transport, chunks: readonly Uint8Array[]): Promise<void> {
  for (const c of chunks) await tr.write(c);
}

export function transportSuite(t: Test, makePair: () => Promise<TransportPair>, options: SuiteOptions = {}): void {
  const frameAligned = options.frameAligned ?? false;

  const withPair = async (body: (pair: TransportPair) => Promise<void>) => {
    const pair = await makePair();
    try {
      await body(pair);
    } finally {
      await Promise.allSettled([pair.a.close(), pair.b.close()]);
      await pair.cleanup?.();
    }
  };

  t.test('ordered delivery of random chunks, both directions at once', (t) =>
    withPair(async ({ a, b }) => {
      for (const seed of [1, 2, 3]) {
        const ab = randomChunks(seed, 20_000, 700, frameAligned);
        const ba = randomChunks(seed + 100, 20_000, 700, frameAligned);
        const atB = collect(b, concat(ab).length);
        const atA = collect(a, concat(ba).length);
        await Promise.all([writeAll(a, ab), writeAll(b, ba)]);
        t.ok((await atB).equals(concat(ab)), `a -> b in order (seed ${seed})`);
        t.ok((await atA).equals(concat(ba)), `b -> a in order (seed ${seed})`);
      }
    }),
  );

  t.test('writes issued without awaiting keep their order', (t) =>
    withPair(async ({ a, b }) => {
      const chunks = randomChunks(7, 30_000, 300, frameAligned);
      const atB = collect(b, concat(chunks).length);
      await Promise.all(chunks.map((c) => a.write(c)));
      t.ok((await atB).equals(concat(chunks)));
    }),
  );

  t.test('large transfer', (t) =>
    withPair(async ({ a, b }) => {
      const total = options.largeBytes ?? 1 << 20;
      const chunks = randomChunks(11, total, 64 * 1024, frameAligned);
      const atB = collect(b, concat(chunks).length, 120_000);
      await writeAll(a, chunks);
      t.ok((await atB).equals(concat(chunks)), `${total} bytes intact`);
    }),
  );

  t.test('close: onClose once, idempotent, write after close rejects', (t) =>
    withPair(async ({ a, b }) => {
      const wa = watchClose(a);
      const wb = watchClose(b);
      await Promise.all([a.close(), a.close()]);
      await a.close();
      t.equal(await wa.closed, undefined, 'local close() ends without an error');
      await t.rejects(a.write(Uint8Array.of(1, 2, 0)), 'write after close rejects');
      if (options.closePropagates) {
        const err = await wb.closed;
        t.type(err, Error, 'peer learns with an error');
        await t.rejects(b.write(Uint8Array.of(1, 0)), 'peer write rejects');
      }
      let late = 0;
      a.onClose(() => late++);
      await settle(50);
      t.equal(late, 1, 'a listener added after the end is still called once');
      t.equal(wa.calls.length, 1, 'onClose fired exactly once');
      t.ok(wb.calls.length <= 1, 'peer onClose at most once');
    }),
  );

  const pull = options.pull;
  if (pull) {
    t.test('cable pull: onClose(error) once, writes reject', (t) =>
      withPair(async (pair) => {
        const wa = watchClose(pair.a);
        await pull(pair);
        const err = await wa.closed;
        t.type(err, Error, `ended with an error: ${err?.message}`);
        await t.rejects(pair.a.write(Uint8Array.of(1, 0)));
        await pair.a.close(); // still fine after a pull
        await settle(50);
        t.equal(wa.calls.length, 1, 'onClose fired exactly once');
      }),
    );
  }
}
