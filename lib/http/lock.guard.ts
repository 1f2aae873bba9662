import { type CanActivate, type ExecutionContext, Inject, Injectable, Optional } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LockBackendError, LockConfigurationError, LockUnavailableError } from '../core/errors';
import { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { claimFromGuard, leaveForHandler } from './guard-handles';
import { holdTimesOf, lockedHandler, REQUEST_LOCK_DEFAULTS, requestOptionsOf } from './locked-handler';
import { RequestFailures } from './request-failures';
import { requestKeys } from './request-parts';

interface ClosableResponse {
  once?(event: 'close', listener: () => void): unknown;
  readonly raw?: ClosableResponse;
}

/**
 * Takes a handler's @Locked lock as a guard — before interceptors, pipes and body validation — so a busy
 * resource is refused before any of that work (`@UseGuards(AuthGuard, LockGuard)`: put it after the guard
 * that sets `request.user` when the key reads it). The key must come from the request (`{params.id}`, …).
 * The global LockInterceptor then holds the lock around the handler and releases it when the handler is done;
 * if the client leaves or a later guard refuses the request, the lock goes with the response. HTTP only.
 */
@Injectable()
export class LockGuard implements CanActivate {
  private readonly failures: RequestFailures;

  constructor(
    private readonly locks: LockService,
    @Optional() adapterHost?: HttpAdapterHost,
    @Optional() @Inject(REQUEST_LOCK_DEFAULTS) private readonly defaults?: RequestLockOptions,
  ) {
    this.failures = new RequestFailures(adapterHost);
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const method = lockedHandler(context);
    const prepared = method?.prepared.get(this.locks);
    if (!method || !prepared) return true;
    if (context.getType() !== 'http' || !method.keys.fromRequest) {
      throw new LockConfigurationError(method.where, messages.decorator.guardNeedsRequestKey(method.where));
    }
    const options = requestOptionsOf(method, this.defaults);
    const request = context.switchToHttp().getRequest<object>();
    const response = context.switchToHttp().getResponse<ClosableResponse>();
    // Listen before waiting: a client that leaves during the wait must not leave the lock behind.
    let responseClosed = false;
    const cancel = new AbortController();
    (response.raw ?? response).once?.('close', () => {
      responseClosed = true;
      cancel.abort();
      // Unless the interceptor took it over for the handler, the lock goes with the response (a later guard
      // refused, the client left). Once taken over, it stays until the handler's work is done.
      const left = claimFromGuard(request, method);
      if (left && 'lock' in left) void this.locks.releaseQuietly(left.lock);
    });
    try {
      const keys = requestKeys(this.locks, method, context);
      const handle = await this.locks.take(
        keys,
        prepared.options,
        prepared.options.autoExtend ?? true,
        cancel.signal,
        true,
      );
      if (responseClosed) {
        await this.locks.releaseQuietly(handle);
        return false;
      }
      leaveForHandler(request, method, { lock: handle });
      return true;
    } catch (error) {
      if (responseClosed) return false;
      if (error instanceof LockUnavailableError && prepared.options.onLocked !== 'throw') {
        if (prepared.options.onLocked === 'skip') throw this.failures.skipped(context, options, error.key);
        // The handler does not run: the interceptor answers with the fallback instead.
        const fallback = await prepared.options.onLocked({ keys: [error.key], args: context.getArgs(), error });
        leaveForHandler(request, method, { fallback });
        return true;
      }
      // The interceptor, finding no lock left by the guard, runs the handler without one.
      if (error instanceof LockBackendError && options.onBackendError === 'fail-open') return true;
      throw this.failures.map(error, context, options, () => holdTimesOf(method).retryAfterSeconds(), method.where);
    }
  }
}
