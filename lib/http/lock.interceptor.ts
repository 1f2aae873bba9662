import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  Logger,
  type NestInterceptor,
  Optional,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { catchError, defer, map, Observable, throwError } from 'rxjs';
import { LockBackendError, LockUnavailableError } from '../core/errors';
import type { LockHandle } from '../core/lock';
import { runInScope } from '../core/lock-context';
import { watchLossPolicy } from '../core/lock-policies';
import { LockService } from '../core/lock-service';
import type { LockedMethod, PreparedLockedMethod } from '../decorators/locked-method';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { newRequestPath, type RequestPath, runOnRequestPath } from '../decorators/request-path';
import { claimFromGuard } from './guard-handles';
import { holdTimesOf, lockedHandler, REQUEST_LOCK_DEFAULTS, requestOptionsOf } from './locked-handler';
import { RequestFailures } from './request-failures';
import { requestKeys } from './request-parts';

/**
 * Holds a handler's @Locked lock around the whole request, on every transport (HTTP, RPC, GraphQL), and
 * answers for it when it cannot: busy → 409 (or 423, or your exception) with Retry-After, skipped → 202,
 * store down → 503 or fail-open, a bad key from the request → 400; RpcException and GraphQL errors likewise.
 *
 * The module registers it globally, so `@Locked` on a handler needs nothing else, and a handler is never
 * locked twice: with a key read from the request (`{params.id}`, requestKey(…)) this interceptor takes the lock
 * before pipes run and the method runs under it; with a key of the arguments (`{0}`) the method takes it
 * after pipes, and this interceptor answers for it. The lock outlives the handler's work (a Promise still
 * running after a timeout answered the client, a file still streaming), and a handler whose request was given
 * up before it started does not run at all.
 */
@Injectable()
export class LockInterceptor implements NestInterceptor {
  private readonly failures: RequestFailures;
  private readonly logger = new Logger('DistributedLock');

  constructor(
    private readonly locks: LockService,
    @Optional() adapterHost?: HttpAdapterHost,
    @Optional() @Inject(REQUEST_LOCK_DEFAULTS) private readonly defaults?: RequestLockOptions,
  ) {
    this.failures = new RequestFailures(adapterHost);
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const method = lockedHandler(context);
    const prepared = method?.prepared.get(this.locks);
    if (!method || !prepared) return next.handle();
    const options = requestOptionsOf(method, this.defaults);
    const path = newRequestPath(method, method.keys.fromRequest, options.onBackendError === 'fail-open');
    return method.keys.fromRequest
      ? this.lockAroundHandler(context, next, method, prepared, options, path)
      : this.answerForMethod(context, next, method, options, path);
  }

  /** Argument keys: the method takes the lock after pipes; say what came of it. */
  private answerForMethod(
    context: ExecutionContext,
    next: CallHandler,
    method: LockedMethod,
    options: RequestLockOptions,
    path: RequestPath,
  ): Observable<unknown> {
    const holds = holdTimesOf(method);
    return defer(() =>
      runOnRequestPath(path, () => next.handle()).pipe(
        map((value) => {
          if (path.skipped) throw this.failures.skipped(context, options, path.skipped[0] ?? method.where);
          if (path.ranUnlocked) this.logger.warn(`${method.where} ran without its lock (onBackendError: 'fail-open').`);
          // From the grant, not from the request: time spent waiting for the lock is not holding it.
          else if (path.lockedAt !== undefined) holds.record(Date.now() - path.lockedAt);
          return value;
        }),
        catchError((error: unknown) => throwError(() => this.answer(error, context, options, method))),
      ),
    );
  }

  /** Request keys: take the lock now, before pipes, and hold it until the handler's work is done. */
  private lockAroundHandler(
    context: ExecutionContext,
    next: CallHandler,
    method: LockedMethod,
    prepared: PreparedLockedMethod,
    options: RequestLockOptions,
    path: RequestPath,
  ): Observable<unknown> {
    const holds = holdTimesOf(method);
    return new Observable<unknown>((subscriber) => {
      const cancel = new AbortController();
      let handle: LockHandle | undefined;
      let released: Promise<void> | undefined;
      let inner: { unsubscribe(): void } | undefined;
      const release = (): Promise<void> =>
        (released ??= handle ? this.locks.releaseQuietly(handle) : Promise.resolve());
      /** Lets the lock go once the handler's own work is over; `now` runs at once either way. */
      const releaseAfterWork = (now: () => void): void => {
        if (path.work && !path.workDone) {
          // Answered (a timeout, a stream starting) while the handler's work goes on: the lock stays with it.
          now();
          void path.work.then(release);
        } else {
          void release().then(now);
        }
      };
      const fail = (error: unknown): void => {
        if (!subscriber.closed) subscriber.error(this.answer(error, context, options, method));
      };

      const run = (lock: LockHandle): void => {
        if (subscriber.closed) return void release();
        const acquiredAt = Date.now();
        const unwatch = watchLossPolicy(lock, prepared.options);
        const finish = (emit: () => void, whole: boolean): void => {
          unwatch();
          // Only whole runs teach the estimate: a handler that refuses fast would make Retry-After too short.
          if (whole) holds.record(Date.now() - acquiredAt);
          releaseAfterWork(emit);
        };
        inner = runInScope(lock, () => runOnRequestPath(path, () => next.handle())).subscribe({
          next: (value) => subscriber.next(value),
          error: (error: unknown) => finish(() => fail(error), false),
          complete: () =>
            finish(() => {
              const lost = prepared.options.onLost === 'abort' ? lock.lossError : undefined;
              if (lost) fail(lost);
              else subscriber.complete();
            }, true),
        });
      };

      const refused = (error: unknown): void => {
        if (subscriber.closed) return;
        if (error instanceof LockUnavailableError && prepared.options.onLocked !== 'throw') {
          if (prepared.options.onLocked === 'skip') {
            return subscriber.error(this.failures.skipped(context, options, error.key));
          }
          const onLocked = prepared.options.onLocked;
          // A fallback that throws is the answer it chose (its own exception), never a hang.
          return void Promise.resolve()
            .then(() => onLocked({ keys: [error.key], args: context.getArgs(), error }))
            .then((fallback) => {
              subscriber.next(fallback);
              subscriber.complete();
            }, fail);
        }
        if (error instanceof LockBackendError && path.failOpen) {
          this.logger.warn(`${method.where} runs without its lock (onBackendError: 'fail-open'): ${error.message}`);
          path.ranUnlocked = true;
          inner = runOnRequestPath(path, () => next.handle()).subscribe(subscriber);
          return;
        }
        fail(error);
      };

      const fromGuard = claimFromGuard(requestOf(context), method);
      if (fromGuard && 'fallback' in fromGuard) {
        subscriber.next(fromGuard.fallback);
        subscriber.complete();
        return undefined;
      }
      const taking = fromGuard
        ? Promise.resolve(fromGuard.lock)
        : Promise.resolve().then(() => {
            const keys = requestKeys(this.locks, method, context);
            return this.locks.take(keys, prepared.options, prepared.options.autoExtend ?? true, cancel.signal, true);
          });
      taking.then((lock) => {
        handle = lock;
        run(lock);
      }, refused);

      return () => {
        cancel.abort();
        inner?.unsubscribe();
        // Unsubscribed (an SSE client gone, a timeout operator): a stream ends with its subscription, but work
        // a Promise handler started runs on, and its lock with it. A handler that has not started yet (pipes
        // still running) must not start without its lock.
        if (path.work && !path.workDone) return void path.work.then(release);
        if (!path.inCall) path.released = true;
        void release();
      };
    });
  }

  private answer(
    error: unknown,
    context: ExecutionContext,
    options: RequestLockOptions,
    method: LockedMethod,
  ): unknown {
    try {
      return this.failures.map(error, context, options, () => holdTimesOf(method).retryAfterSeconds(), method.where);
    } catch (failure) {
      // A busyException factory that throws answers with what it threw.
      return failure;
    }
  }
}

function requestOf(context: ExecutionContext): unknown {
  return context.getType() === 'http' ? context.switchToHttp().getRequest<unknown>() : undefined;
}
