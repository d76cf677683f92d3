// closeWhenIdle: received bytes keep a connection open, silence closes it; sent bytes do not count.
import t from 'tap';
import { createInProcessPair } from './inproc.js';
import { closeWhenIdle } from './idle.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('bytes from the peer restart the timer; silence closes; our own writes do not count', async (t) => {
  const [host, device] = createInProcessPair();
  let idle = 0;
  const watched = closeWhenIdle(device, 150, () => idle++);
  const got: number[] = [];
  watched.onData((c) => got.push(c.length));
  let closed = false;
  watched.onClose(() => (closed = true));
  for (let i = 0; i < 6; i++) {
    await host.write(new Uint8Array([1, 2, 3])); // the peer talks every 50 ms: 300 ms, twice the timeout
    await sleep(50);
  }
  t.equal(closed, false, 'a talking peer is never closed');
  t.same(got, [3, 3, 3, 3, 3, 3], 'every chunk is passed on');
  for (let i = 0; i < 4 && !closed; i++) {
    await watched.write(new Uint8Array([9])).catch(() => undefined); // only we talk
    await sleep(60);
  }
  await sleep(100);
  t.equal(closed, true, 'a peer silent for the timeout is closed, whatever we sent it');
  t.equal(idle, 1, 'onIdle told once');
});

t.test('a bad timeout is a RangeError', async (t) => {
  const [, device] = createInProcessPair();
  t.throws(() => closeWhenIdle(device, 0), RangeError);
  t.throws(() => closeWhenIdle(device, Number.NaN), RangeError);
});
