/** Small waiting helpers for the ZooKeeper backend: each settles once and leaves no listener or timer behind. */

/**
 * `work`'s value for the caller, or a rejection with the signal's reason as soon as it aborts; the work goes on,
 * and a value it yields after the caller left goes to `orphan`. Exactly one of them gets it: deciding in one
 * place leaves no instant where a node is neither the caller's nor deleted.
 */
export function handOver<T>(work: Promise<T>, signal: AbortSignal, orphan: (value: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let left = false;
    const onAbort = (): void => {
      left = true;
      reject(signal.reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        if (left) orphan(value);
        else resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** Waits for `work`, but at most `ms` (unref'd): it goes on afterwards. */
export async function settleWithin(ms: number, work: Promise<void>): Promise<void> {
  const stop = new AbortController();
  await Promise.race([work, pause(ms, stop.signal)]);
  stop.abort();
}

/** Waits `ms` (unref'd) or until `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener('abort', done, { once: true });
  });
}
