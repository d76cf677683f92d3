// Stopping host work when the user asks (SIGINT/SIGTERM through an AbortSignal): the error a
// stopped operation throws, and the small helpers that make waits end at once on abort.
// Library code: the CLI maps StoppedError to exit 130 (SIGINT) or 143 (SIGTERM).

/** The operation stopped because its AbortSignal fired; `signal` names what asked ("SIGINT"). */
export class StoppedError extends Error {
  constructor(
    readonly signal: string | undefined,
    message?: string,
  ) {
    super(message ?? `stopped${signal ? ` (${signal})` : ''}`);
    this.name = 'StoppedError';
  }
}

/** The StoppedError an aborted signal stands for: its reason when that is one, else a new one. */
export function stoppedError(signal: AbortSignal): StoppedError {
  const r: unknown = signal.reason;
  if (r instanceof StoppedError) return r;
  return new StoppedError(typeof r === 'string' ? r : undefined);
}

export function throwIfStopped(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw stoppedError(signal);
}

/** `p`, or a StoppedError as soon as `signal` aborts (p goes on; its result is dropped). */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(stoppedError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stoppedError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Wait `ms`, or throw StoppedError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return abortable(t, signal).finally(() => clearTimeout(timer));
}
