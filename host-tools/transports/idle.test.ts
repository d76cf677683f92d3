// closeWhenIdle: valid frames keep a connection open; bytes alone do not; silence closes it, and a
// connection that sends no frame at all is closed after the shorter first deadline.
import t from 'tap';
import { createInProcessPair } from './inproc.js';
import { closeWhenIdle } from './idle.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const closedFlag = (tr: { onClose(l: () => void): void }) => {
  const s = { closed: false };
  tr.onClose(() => (s.closed = true));
  return s;
};

t.test('frames restart the timer; silence closes; our own writes and bare bytes do not count', async (t) => {
  const [host, device] = createInProcessPair();
  const why: string[] = [];
  const watch = closeWhenIdle(device, 150, { onIdle: (w) => why.push(w) });
  const got: number[] = [];
  device.onData((c) => {
    got.push(c.length);
    if (c[0] === 1) watch.frame(); // stands for "the link decoded a valid request"
  });
  const s = closedFlag(device);
  for (let i = 0; i < 6; i++) {
    await host.write(new Uint8Array([1, 2, 3])); // a frame every 50 ms: 300 ms, twice the timeout
    await sleep(50);
  }
  t.equal(s.closed, false, 'a peer sending frames is never closed');
  t.same(got, [3, 3, 3, 3, 3, 3], 'every chunk is passed on');
  t.ok(watch.idleFor() < 150, 'idleFor counts from the last frame');
  for (let i = 0; i < 8 && !s.closed; i++) {
    await host.write(new Uint8Array([0])).catch(() => undefined); // bytes, never a frame
    await device.write(new Uint8Array([9])).catch(() => undefined); // and we talk
    await sleep(40);
  }
  await sleep(100);
  t.equal(s.closed, true, 'a peer that sends bytes but no frame for the timeout is closed');
  t.same(why, ['idle'], 'onIdle told once, as idle');
});

t.test('a connection that never sends a valid frame is closed after the first deadline', async (t) => {
  const [host, device] = createInProcessPair();
  const why: string[] = [];
  closeWhenIdle(device, 60_000, { firstMs: 100, onIdle: (w) => why.push(w) });
  device.onData(() => undefined);
  const s = closedFlag(device);
  for (let i = 0; i < 6 && !s.closed; i++) {
    await host.write(new Uint8Array([0])).catch(() => undefined);
    await sleep(40);
  }
  await sleep(100);
  t.equal(s.closed, true, 'closed long before the idle timeout, bytes notwithstanding');
  t.same(why, ['no-frame']);
});

t.test('a bad timeout is a RangeError', async (t) => {
  const [, device] = createInProcessPair();
  t.throws(() => closeWhenIdle(device, 0), RangeError);
  t.throws(() => closeWhenIdle(device, Number.NaN), RangeError);
  t.throws(() => closeWhenIdle(device, 1000, { firstMs: -1 }), RangeError);
});
