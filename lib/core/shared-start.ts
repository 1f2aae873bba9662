import { untilAborted } from './until-aborted';

interface Run {
  readonly stop: AbortController;
  readonly promise: Promise<void>;
  waiters: number;
  settled: boolean;
}

/**
 * One start of a backend (connect, check the store) shared by every caller of its init(), each waiting with its
 * own signal: a caller that gives up gets its signal's reason at once, and the start runs on for the others. It
 * is stopped when its last waiter gives up, so no retry outlives every caller, or when the backend closes. A
 * start that failed or was stopped is made afresh by the next init(); one that succeeded makes init() resolve
 * at once from then on.
 */
export class SharedStart {
  private run: Run | undefined;
  private done = false;
  /** Set by stop(): the backend closed, and no start may begin again. */
  private stopReason: { readonly reason: unknown } | undefined;

  constructor(private readonly start: (signal: AbortSignal) => Promise<void>) {}

  /** The start succeeded: init() has nothing left to do. */
  get started(): boolean {
    return this.done;
  }

  join(signal: AbortSignal): Promise<void> {
    if (this.stopReason) return Promise.reject(this.stopReason.reason as Error);
    if (this.done) return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    const current = this.run;
    if (current && current.stop.signal.aborted) {
      // Stopped and still winding down: a new start must not overlap it (both would open the same connections).
      const over = current.promise.catch(() => undefined);
      return untilAborted(over, signal).then(() => this.join(signal));
    }
    const run = current ?? this.begin();
    run.waiters++;
    return untilAborted(run.promise, signal).finally(() => {
      run.waiters--;
      if (run.waiters === 0 && !run.settled) run.stop.abort(new Error('nobody waits for the start any more'));
    });
  }

  /** Stops the start under way, if any, and every later join fails with `reason` (the backend closes). */
  stop(reason: unknown): void {
    this.stopReason ??= { reason };
    this.run?.stop.abort(reason);
  }

  private begin(): Run {
    const stop = new AbortController();
    const run: Run = {
      stop,
      waiters: 0,
      settled: false,
      promise: this.startOn(stop.signal)
        .then(
          () => {
            // A start may finish its steps after it was stopped (a step that no longer looks at the signal): it
            // does not count then, or a caller would learn the backend started after close().
            if (stop.signal.aborted) throw stop.signal.reason;
            this.done = true;
          },
          (error: unknown) => {
            // Whatever step stop() interrupted, the callers learn why it was stopped (the backend closed), not
            // how that step failed.
            throw this.stopReason ? this.stopReason.reason : error;
          },
        )
        .finally(() => {
          run.settled = true;
          if (this.run === run) this.run = undefined;
        }),
    };
    // Its failure reaches every waiter; with none left (all gave up), it must not be reported as unhandled.
    run.promise.catch(() => undefined);
    this.run = run;
    return run;
  }

  /** The start function's promise; a synchronous throw becomes its rejection. */
  private startOn(signal: AbortSignal): Promise<void> {
    try {
      return this.start(signal);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }
}
