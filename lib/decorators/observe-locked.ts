import { Observable } from 'rxjs';
import { LockUnavailableError } from '../core/errors';
import type { KeyPair } from '../core/key';
import type { LockHandle } from '../core/lock';
import { runInScope } from '../core/lock-context';
import { onFirstLoss, watchLossPolicy, whenLocked } from '../core/lock-policies';
import type { LockService } from '../core/lock-service';
import type { ResolvedLockOptions } from '../core/options';

/**
 * The Observable form of a locked call: the lock is taken on subscribe and held until the stream completes,
 * errors or is unsubscribed. An unsubscribe during the wait cancels it; a grant that lands after the
 * subscriber left is given straight back.
 */
export function observeLocked<T>(
  service: LockService,
  keys: readonly KeyPair[],
  source: () => Observable<T>,
  options: ResolvedLockOptions,
  args: readonly unknown[],
): Observable<T> {
  return new Observable<T>((subscriber) => {
    const cancelWait = new AbortController();
    let handle: LockHandle | undefined;
    let teardown: (() => void) | undefined;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      teardown?.();
      if (handle) void service.releaseQuietly(handle);
    };
    service.take(keys, options, options.autoExtend ?? true, cancelWait.signal).then(
      (taken) => {
        if (finished || subscriber.closed) return void service.releaseQuietly(taken);
        handle = taken;
        const unwatch = watchLossPolicy(taken, options);
        const stopOnLoss =
          options.onLost === 'abort' ? onFirstLoss(taken, (error) => subscriber.error(error)) : () => undefined;
        let inner: { unsubscribe(): void } | undefined;
        teardown = () => {
          unwatch();
          stopOnLoss();
          inner?.unsubscribe();
        };
        try {
          inner = runInScope(taken, () => source().subscribe(subscriber));
        } catch (error) {
          subscriber.error(error);
        }
        if (subscriber.closed) finish();
      },
      (error: unknown) => {
        if (finished || subscriber.closed) return;
        if (!(error instanceof LockUnavailableError)) return subscriber.error(error);
        whenLocked(options.onLocked, keys, args, error).then(
          (fallback) => {
            if (options.onLocked !== 'skip') subscriber.next(fallback as T);
            subscriber.complete();
          },
          (failure: unknown) => subscriber.error(failure),
        );
      },
    );
    return () => {
      cancelWait.abort();
      finish();
    };
  });
}
