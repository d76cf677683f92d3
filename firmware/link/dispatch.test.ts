// The dispatcher: handler tables, typed errors, no internals on the wire, and the watchdog that
// answers a handler that never finishes with INTERNAL "watchdog reset" and resets the module.
import t from 'tap';
import { Dispatcher } from './dispatch.js';
import type { CommandGroup, RequestContext } from './dispatch.js';
import { LinkError, Rc } from './errors.js';

const ctx = (group: number, command: number, seq = 1): RequestContext => ({ group, command, seq });
const never = () => new Promise<never>(() => undefined);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function testGroup(calls: string[] = []): CommandGroup {
  return {
    id: 42,
    name: 'test',
    guard: (c) => {
      if (c.command === 9) throw new LinkError(Rc.DENIED, 'guarded');
    },
    commands: {
      0: (p) => ({ echo: p['x'] ?? null }),
      1: async () => {
        await sleep(5);
        return { late: true };
      },
      2: () => {
        throw new LinkError(Rc.OUT_OF_ORDER, 'go back', { committed: 12 });
      },
      3: () => {
        throw new Error('secret internals at /home/x/key.bin');
      },
      4: () => never(),
      5: async () => {
        await sleep(5);
        throw new LinkError(Rc.BUSY);
      },
      9: () => {
        calls.push('9');
        return {};
      },
    },
  };
}

t.test('handler tables: results, typed errors, NOT_SUPPORTED, guard', async (t) => {
  const d = new Dispatcher();
  const calls: string[] = [];
  d.register(testGroup(calls));
  t.throws(() => d.register(testGroup()), /already registered/);
  t.same(await d.dispatch({ x: 7 }, ctx(42, 0)), { ok: true, payload: { echo: 7 } });
  t.same(await d.dispatch({}, ctx(42, 1)), { ok: true, payload: { late: true } });
  const e2 = await d.dispatch({}, ctx(42, 2));
  t.match(e2, { ok: false, error: { rc: Rc.OUT_OF_ORDER, reason: 'go back', details: { committed: 12 } } });
  t.match(await d.dispatch({}, ctx(43, 0)), { ok: false, error: { rc: Rc.NOT_SUPPORTED } }, 'unknown group');
  t.match(await d.dispatch({}, ctx(42, 77)), { ok: false, error: { rc: Rc.NOT_SUPPORTED } }, 'unknown command');
  t.match(await d.dispatch({}, ctx(42, 9)), { ok: false, error: { rc: Rc.DENIED, reason: 'guarded' } });
  t.same(calls, [], 'a guard that refuses keeps the handler from running');
});

t.test('an unexpected exception is INTERNAL with no reason; the device log gets it', async (t) => {
  const d = new Dispatcher();
  d.register(testGroup());
  const seen: Array<[unknown, RequestContext]> = [];
  d.onInternalError = (e, c) => seen.push([e, c]);
  const out = await d.dispatch({}, ctx(42, 3, 99));
  t.match(out, { ok: false, error: { rc: Rc.INTERNAL, reason: undefined } });
  if (!out.ok) t.notMatch(out.error.message, /secret|home/, 'nothing of the exception goes on the wire');
  t.equal(seen.length, 1);
  t.match(seen[0], [{ message: /secret internals/ }, { group: 42, command: 3, seq: 99 }]);
});

t.test('watchdog: a handler that never resolves gets INTERNAL "watchdog reset" after watchdogMs', async (t) => {
  const d = new Dispatcher();
  d.register(testGroup());
  const expired: RequestContext[] = [];
  d.watchdog = { ms: 40, onExpire: (c) => expired.push(c) };
  const t0 = performance.now();
  const out = await d.dispatch({}, ctx(42, 4, 5));
  const took = performance.now() - t0;
  t.match(out, { ok: false, error: { rc: Rc.INTERNAL, reason: 'watchdog reset' } });
  t.ok(took >= 35 && took < 1000, `answered after ${Math.round(took)} ms`);
  t.same(expired, [{ group: 42, command: 4, seq: 5 }], 'onExpire called once, with the stuck request');

  // Handlers that finish in time are not disturbed, and their timers do not fire later.
  t.same(await d.dispatch({}, ctx(42, 1)), { ok: true, payload: { late: true } });
  t.match(await d.dispatch({}, ctx(42, 5)), { ok: false, error: { rc: Rc.BUSY } }, 'an async LinkError passes through');
  t.same(await d.dispatch({ x: 1 }, ctx(42, 0)), { ok: true, payload: { echo: 1 } }, 'sync handlers are not timed');
  await sleep(60);
  t.equal(expired.length, 1, 'no late expiry');
});

t.test('one writer: requests of several links run one at a time, in arrival order', async (t) => {
  const d = new Dispatcher();
  const log: string[] = [];
  d.register({
    id: 7,
    name: 'slow',
    commands: {
      0: async (p) => {
        log.push(`enter ${String(p['who'])}`);
        await sleep(5); // an async handler: another link's request must not run in its await
        log.push(`leave ${String(p['who'])}`);
        return {};
      },
    },
  });
  const linkA = { open: true, stats: {} };
  const linkB = { open: true, stats: {} };
  const dropped = d.exclusive(() => log.push('release'));
  await Promise.all([
    d.dispatch({ who: 'A1' }, { ...ctx(7, 0, 1), link: linkA }),
    d.dispatch({ who: 'B1' }, { ...ctx(7, 0, 1), link: linkB }),
    d.dispatch({ who: 'A2' }, { ...ctx(7, 0, 2), link: linkA }),
    dropped,
  ]);
  t.same(log, ['release', 'enter A1', 'leave A1', 'enter B1', 'leave B1', 'enter A2', 'leave A2']);
  // A failing exclusive job does not stop the queue.
  await t.rejects(d.exclusive(() => Promise.reject(new Error('x'))));
  t.same(await d.dispatch({ who: 'C' }, ctx(7, 0, 3)), { ok: true, payload: {} });
});
