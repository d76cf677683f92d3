// docs/protocol.md 4.5: "A host that never has more than `window` requests outstanding never sees
// BUSY." Found by `qkt traffic` keeping the station's window of uplinks in flight: the host read
// an answer before the device's transport said it was written (a slow TLS socket, a paced link),
// sent its next request at once, and the device still counted the answered request in its window:
// BUSY, the host sent that request again later, after the next one, and the station refused the
// reordered uplink. An answer being written no longer holds a window slot.
import t from 'tap';
import { DeviceLink } from './device-link.js';
import { Dispatcher } from './dispatch.js';
import type { Transport } from './transport.js';
import { Deframer } from './framer.js';
import { decodeMessage, encodeMessage } from './codec.js';
import type { Payload } from './codec.js';
import { Kind } from './frame.js';

t.test('a host at exactly the window never sees BUSY, though each answer reaches it before its write completes', async (t) => {
  const window = 4;
  let toDevice: ((b: Uint8Array) => void) | undefined;
  const host = new Deframer(4096);
  const answers: Array<{ seq: number; kind: number }> = [];
  let onAnswer: (() => void) | undefined;
  // The device's writes reach the host at once, but resolve only 20 ms later (a congested socket).
  const transport: Transport = {
    description: 'slow writer',
    write: async (b) => {
      for (const body of host.push(b)) {
        const d = decodeMessage(body);
        if (d.ok) answers.push({ seq: d.message.seq, kind: d.message.kind });
      }
      onAnswer?.();
      await new Promise((r) => setTimeout(r, 20));
    },
    onData: (l) => {
      toDevice = l;
    },
    onClose: () => undefined,
    close: async () => undefined,
  };
  const dispatcher = new Dispatcher();
  dispatcher.register({ id: 7, name: 'TEST', commands: { 1: (p: Payload) => ({ echo: p['n'] as number }) } });
  new DeviceLink(transport, dispatcher, { maxBody: 4096, window });
  const send = (seq: number) => toDevice!(encodeMessage({ kind: Kind.REQUEST, group: 7, command: 1, seq, payload: { n: seq } }));
  // Keep exactly `window` outstanding: a new request for each answer, 40 in all.
  let next = 1;
  let outstanding = 0;
  await new Promise<void>((resolve) => {
    onAnswer = () => {
      outstanding--;
      if (next <= 40) {
        outstanding++;
        send(next++);
      } else if (outstanding === 0) resolve();
    };
    for (; next <= window; next++, outstanding++) send(next);
  });
  t.equal(answers.length, 40, 'every request answered');
  t.equal(answers.filter((a) => a.kind === Kind.ERROR).length, 0, 'no BUSY (no error at all)');
  t.same(answers.map((a) => a.seq), Array.from({ length: 40 }, (_, i) => i + 1), 'in order');
});
