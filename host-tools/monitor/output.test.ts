// The monitor's output (output.ts): a reader that does not keep up costs bounded memory, and the
// lines left out are counted and reported where the gap is.
import t from 'tap';
import { Writable } from 'node:stream';
import { FrameOutput } from './output.js';

/** A stdout nobody reads until `drain()`: writes queue, as on a full pipe. */
function stalledStream() {
  const held: Array<{ chunk: Buffer; cb: (e?: Error | null) => void }> = [];
  const text: string[] = [];
  const s = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      held.push({ chunk, cb });
    },
  });
  return {
    s,
    text,
    drain() {
      while (held.length) {
        const h = held.shift()!;
        text.push(h.chunk.toString());
        h.cb();
      }
    },
  };
}

t.test('a reader that does not read holds at most the bound, and the gap is reported', async (t) => {
  const { s, text, drain } = stalledStream();
  const out = new FrameOutput(s, (n) => `... ${n} frames not shown`, 64 * 1024);
  const line = 'x'.repeat(120);
  for (let i = 0; i < 100_000; i++) out.line(line);
  t.ok(s.writableLength <= 64 * 1024 + 200, `queued ${s.writableLength} bytes for 100,000 lines`);
  t.ok(out.skipped > 90_000, `${out.skipped} left out`);
  drain();
  await new Promise((r) => setImmediate(r));
  out.line('after');
  drain();
  const all = text.join('');
  t.match(all, new RegExp(`\\.\\.\\. ${out.skipped} frames not shown\\nafter\\n$`));
});

t.test('a reader that keeps up sees every line', async (t) => {
  const chunks: string[] = [];
  const s = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const out = new FrameOutput(s, (n) => `skipped ${n}`, 1024);
  for (let i = 0; i < 1000; i++) out.line(`l${i}`);
  out.flush();
  t.equal(out.skipped, 0);
  t.equal(chunks.join(''), Array.from({ length: 1000 }, (_, i) => `l${i}\n`).join(''));
});
