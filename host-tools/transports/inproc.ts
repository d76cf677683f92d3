// In-process transport pair: two ends of a virtual cable inside one Node process, used to run
// the device and a host tool together (qkt demo, HIL "inproc" back end, unit tests).
import type { Transport } from '../../firmware/link/transport.js';
import { EndpointCore, checkBytes, makeTransport } from './_core.js';

export interface InProcessPairOptions {
  /** Descriptions of the two ends, for status lines. */
  names?: [string, string];
}

/**
 * Bytes written to one end arrive at the other on a later macrotask (setImmediate, which runs
 * in FIFO order, so order is kept and a receiver that writes back cannot recurse into the
 * sender). write() resolves when the bytes have been handed to the other end. close() on either
 * end ends both, after the bytes already written have been delivered, as a socket's FIN would;
 * the end that called close() gets onClose(), the other onClose(error "peer closed").
 */
export function createInProcessPair(options: InProcessPairOptions = {}): [Transport, Transport] {
  const [nameA, nameB] = options.names ?? ['inproc a', 'inproc b'];
  const cores = [new EndpointCore(nameA), new EndpointCore(nameB)] as const;
  // Set by the first close() of either end; both ends share it so close() is idempotent.
  let closing: Promise<void> | undefined;

  const end = (self: 0 | 1): Transport => {
    const me = cores[self];
    const peer = cores[self === 0 ? 1 : 0];
    const write = async (bytes: Uint8Array): Promise<void> => {
      checkBytes(bytes);
      if (closing || me.ended) throw me.closedError();
      // Copy: the caller may reuse its buffer as soon as write() returns.
      const copy = Uint8Array.from(bytes);
      await new Promise<void>((resolve) => setImmediate(resolve));
      peer.deliver(copy);
    };
    const close = (): Promise<void> => {
      closing ??= new Promise<void>((resolve) => {
        // Queued behind every setImmediate already scheduled by write(): in-flight bytes land first.
        setImmediate(() => {
          me.end();
          peer.end(new Error(`${peer.description}: peer closed`));
          resolve();
        });
      });
      return closing;
    };
    return makeTransport(me, write, close);
  };
  return [end(0), end(1)];
}
