// Shared bookkeeping for every Transport: one data receiver, close listeners fired once,
// and the "closed" state that makes later writes reject. Each transport only moves bytes.
import type { Transport } from '../../firmware/link/transport.js';

/** The error a write() rejects with once its transport has closed. */
export class TransportClosedError extends Error {
  constructor(description: string) {
    super(`${description}: transport is closed`);
    this.name = 'TransportClosedError';
  }
}

type DataListener = (chunk: Uint8Array) => void;
type CloseListener = (error?: Error) => void;

/**
 * The receive and close half of a Transport. Bytes that arrive before onData() is called are
 * held and handed over on installation, so no transport loses its first bytes to a race
 * between "connected" and "listener installed".
 */
export class EndpointCore {
  #data: DataListener | undefined;
  #pending: Uint8Array[] = [];
  #closeListeners: CloseListener[] = [];
  #ended = false;
  #closeError: Error | undefined;

  constructor(readonly description: string) {}

  /** True once the transport has ended (locally or not); writes must reject from then on. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The reason the transport ended, undefined for a local close(). */
  get closeError(): Error | undefined {
    return this.#closeError;
  }

  /** Pass received bytes up. Ignored after the end: a closed transport delivers nothing. */
  deliver(chunk: Uint8Array): void {
    if (this.#ended || chunk.length === 0) return;
    if (this.#data) this.#data(chunk);
    else this.#pending.push(chunk);
  }

  setDataListener(listener: DataListener): void {
    this.#data = listener;
    const held = this.#pending;
    this.#pending = [];
    for (const chunk of held) listener(chunk);
  }

  /**
   * Several close listeners are allowed (a wrapper and its user may both watch); each is called
   * exactly once. One added after the end is still called, on a microtask, with the same error.
   */
  addCloseListener(listener: CloseListener): void {
    if (this.#ended) {
      const error = this.#closeError;
      queueMicrotask(() => listener(error));
      return;
    }
    this.#closeListeners.push(listener);
  }

  /** Mark the transport ended and tell the listeners; later calls are no-ops (first reason wins). */
  end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#closeError = error;
    this.#pending = [];
    const listeners = this.#closeListeners;
    this.#closeListeners = [];
    for (const listener of listeners) listener(error);
  }

  closedError(): TransportClosedError {
    return new TransportClosedError(this.description);
  }
}

/** A Transport's methods bound to a core; transports supply write() and close(). */
export function makeTransport(
  core: EndpointCore,
  write: (bytes: Uint8Array) => Promise<void>,
  close: () => Promise<void>,
): Transport {
  return {
    description: core.description,
    write,
    onData: (listener) => core.setDataListener(listener),
    onClose: (listener) => core.addCloseListener(listener),
    close,
  };
}

/** Validate write()'s argument once, at the public entry. */
export function checkBytes(bytes: unknown): asserts bytes is Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array');
}
