import type { StoreCall } from '../backends/lock-backend';
import type { LockClock } from './clock';
import { LockBackendError, LockError } from './errors';
import { messages } from './messages';

/**
 * The cancellation of one store call. Its AbortSignal is made only when the backend reads it: making one
 * costs more than a whole in-memory acquisition, and most backends answer before anyone needs to cancel.
 */
export class CallControl implements StoreCall {
  private controller: AbortController | undefined;
  private reason: unknown;
  private aborted = false;
  /** boundedCall's way to stop waiting when the call is aborted, without making the signal. */
  private onAbort: ((reason: unknown) => void) | undefined;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get isAborted(): boolean {
    return this.aborted;
  }

  /** Cancels the call: the backend sees its signal abort, and a boundedCall waiting on it rejects with `reason`. */
  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
    this.onAbort?.(reason);
  }

  /** @internal */
  listen(onAbort: (reason: unknown) => void): void {
    this.onAbort = onAbort;
    if (this.aborted) onAbort(this.reason);
  }
}

/** Wraps anything a store threw in a LockBackendError naming the backend and the operation, once. */
export function backendError(backend: string, operation: string, error: unknown): LockError {
  if (error instanceof LockError) return error;
  return new LockBackendError(backend, messages.backendFailed(backend, operation), [], { cause: error });
}

export interface BoundedCall<T> {
  readonly backend: string;
  /** For messages: "acquire a lock", "release a lock", … */
  readonly operation: string;
  readonly clock: LockClock;
  /** The call fails with LockBackendError if the store has not answered by then. */
  readonly timeoutMs: number;
  readonly control: CallControl;
  /**
   * Called with the store's answer when it arrives after the caller stopped waiting (timeout or abort): an
   * acquisition nobody waits for any more must be given back, or it stays in the store.
   */
  readonly onLateAnswer?: (value: T) => void;
}

/**
 * Runs one store call and stops waiting for it after `timeoutMs` or when `control` is aborted, whichever
 * comes first, so a hung store can delay a caller by at most the timeout. The backend sees both through
 * the call's signal. Store failures come back as LockBackendError.
 */
export function boundedCall<T>(call: BoundedCall<T>, start: (control: CallControl) => Promise<T>): Promise<T> {
  let pending: Promise<T>;
  try {
    pending = start(call.control);
  } catch (error) {
    return Promise.reject(backendError(call.backend, call.operation, error));
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = call.clock.setTimeout(() => {
      if (settled) return;
      settled = true;
      const error = new LockBackendError(
        call.backend,
        messages.storeTimeout(call.backend, call.operation, call.timeoutMs),
      );
      call.control.abort(error);
      reject(error);
    }, call.timeoutMs);
    call.control.listen((reason) => {
      if (settled) return;
      settled = true;
      call.clock.clearTimeout(timer);
      reject(reason);
    });
    pending.then(
      (value) => {
        if (settled) return call.onLateAnswer?.(value);
        settled = true;
        call.clock.clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        call.clock.clearTimeout(timer);
        reject(backendError(call.backend, call.operation, error));
      },
    );
  });
}
