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
import { type RequestPath, runOnRequestPath } from '../decorators/request-path';
import { claimFromGuard } from './guard-handles';
import { holdTimesOf, lockedHandler, REQUEST_LOCK_DEFAULTS, requestOptionsOf } from './locked-handler';
import { RequestFailures } from './request-failures';
import { requestPartsOf } from './request-parts';

/**
 * Holds a handler's @Locked lock around the whole request, on every transport (HTTP, RPC, GraphQL), and
 * answers for it when it cannot: busy → 409 (or 423, or your exception) with Retry-After, skipped → 202,
 * store down → 503 or fail-open, a bad key from the request → 400; RpcException and GraphQL errors likewise.
 *
 * The module registers it globally, so `@Locked` on a handler needs nothing else, and a handler is never
 * locked twice: with a key read from the request (`{params.id}`, requestKey(…)) this interceptor takes the lock
 * before pipes run and the method runs under it; with a key of the arguments (`{0}`) the method takes it
 * after pipes, and this interceptor maps what comes of it. The lock is released when the handler's result
 * completes, errors or is unsubscribed (an SSE client leaving), never before the handler is done.
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
    const path: RequestPath = {
      method,
      lockedByRequest: method.keys.fromRequest,
      failOpen: options.onBackendError === 'fail-open',
      claimed: false,
      skipped: false,
      ranUnlocked: false,
    };
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
    return defer(() => {
      const startedAt = Date.now();
      return runOnRequestPath(path, () => next.handle()).pipe(
        map((value) => {
          if (path.skipped) throw this.failures.skipped(context, options, skippedResource(method, context));
          if (path.ranUnlocked) this.logger.warn(`${method.where} ran without its lock (onBackendError: 'fail-open').`);
          else holds.record(Date.now() - startedAt);
          return value;
        }),
        catchError((error: unknown) =>
          throwError(() => this.failures.map(error, context, options, () => holds.retryAfterSeconds())),
        ),
      );
    });
  }

  /** Request keys: take the lock now, before pipes, and hold it until the handler's result is done. */
  private lockAroundHandler(
    context: ExecutionContext,
    next: CallHandler,
    method: LockedMethod,
    prepared: PreparedLockedMethod,
    options: RequestLockOptions,
    path: RequestPath,
  ): Observable<unknown> {
    const holds = holdTimesOf(method);
    const mapError = (error: unknown): unknown =>
      this.failures.map(error, context, options, () => holds.retryAfterSeconds());
    return new Observable<unknown>((subscriber) => {
      const cancel = new AbortController();
      let handle: LockHandle | undefined;
      let released: Promise<void> | undefined;
      let inner: { unsubscribe(): void } | undefined;
      const release = (): Promise<void> =>
        (released ??= handle ? this.locks.releaseQuietly(handle) : Promise.resolve());

      const run = (lock: LockHandle): void => {
        if (subscriber.closed) return void release();
        const acquiredAt = Date.now();
        const unwatch = watchLossPolicy(lock, prepared.options);
        const done = (emit: () => void, succeeded: boolean): void => {
          unwatch();
          // Only whole runs teach the estimate: a handler that refuses fast would make Retry-After too short.
          if (succeeded) holds.record(Date.now() - acquiredAt);
          void release().then(emit);
        };
        inner = runInScope(lock, () => runOnRequestPath(path, () => next.handle())).subscribe({
          next: (value) => subscriber.next(value),
          error: (error: unknown) => done(() => subscriber.error(mapError(error)), false),
          complete: () =>
            done(() => {
              const lost = prepared.options.onLost === 'abort' ? lock.lossError : undefined;
              if (lost) subscriber.error(mapError(lost));
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
          return void Promise.resolve(
            prepared.options.onLocked({ keys: [error.key], args: context.getArgs(), error }),
          ).then(
            (fallback) => (subscriber.next(fallback), subscriber.complete()),
            (failure: unknown) => subscriber.error(mapError(failure)),
          );
        }
        if (error instanceof LockBackendError && path.failOpen) {
          this.logger.warn(`${method.where} runs without its lock (onBackendError: 'fail-open'): ${error.message}`);
          path.ranUnlocked = true;
          inner = runOnRequestPath(path, () => next.handle()).subscribe(subscriber);
          return;
        }
        subscriber.error(mapError(error));
      };

      const fromGuard = claimFromGuard(requestOf(context), method);
      const taking = fromGuard
        ? Promise.resolve(fromGuard)
        : Promise.resolve().then(() => {
            const keys = this.locks.normaliseKeys(method.keys({ args: [], request: requestPartsOf(context) }));
            return this.locks.take(keys, prepared.options, prepared.options.autoExtend ?? true, cancel.signal, true);
          });
      taking.then((lock) => {
        handle = lock;
        run(lock);
      }, refused);

      return () => {
        cancel.abort();
        inner?.unsubscribe();
        // Unsubscribed (SSE client gone, a timeout operator): a stream ends with its subscription, but a
        // Promise handler runs on, and its lock must outlive it.
        void (path.work ?? Promise.resolve()).then(release);
      };
    });
  }
}

function requestOf(context: ExecutionContext): unknown {
  return context.getType() === 'http' ? context.switchToHttp().getRequest<unknown>() : undefined;
}

/** The resource named in a skip answer: the first key, when the key is known without the arguments. */
function skippedResource(method: LockedMethod, context: ExecutionContext): string {
  return method.keys.constant?.[0] ?? `${context.getClass().name}.${context.getHandler().name}`;
}
