import { type CanActivate, type ExecutionContext, Inject, Injectable, Optional } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LockBackendError, LockConfigurationError, LockUnavailableError } from '../core/errors';
import { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { leaveForHandler, unclaimed } from './guard-handles';
import { holdTimesOf, lockedHandler, REQUEST_LOCK_DEFAULTS, requestOptionsOf } from './locked-handler';
import { RequestFailures } from './request-failures';
import { requestPartsOf } from './request-parts';

interface ClosableResponse {
  once?(event: 'close', listener: () => void): unknown;
  raw?: ClosableResponse;
}

/**
 * Takes a handler's @Locked lock as a guard — before interceptors, pipes and body validation — so a busy
 * resource is refused before any of that work (`@UseGuards(AuthGuard, LockGuard)`: put it after the guard
 * that sets `request.user` when the key reads it). The key must come from the request (`{params.id}`, …).
 * The global LockInterceptor then holds the lock around the handler and releases it when the handler is done;
 * if a later guard refuses the request, the lock is released when the response closes. HTTP only.
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
    try {
      const keys = this.locks.normaliseKeys(method.keys({ args: [], request: requestPartsOf(context) }));
      const handle = await this.locks.take(
        keys,
        prepared.options,
        prepared.options.autoExtend ?? true,
        undefined,
        true,
      );
      leaveForHandler(request, method, handle);
      // A later guard may refuse the request: then no handler runs, and the lock goes with the response.
      const response = context.switchToHttp().getResponse<ClosableResponse>();
      (response.raw ?? response).once?.('close', () => {
        const left = unclaimed(request, method);
        if (left) void this.locks.releaseQuietly(left);
      });
      return true;
    } catch (error) {
      if (error instanceof LockUnavailableError && prepared.options.onLocked === 'skip') {
        throw this.failures.skipped(context, options, error.key);
      }
      // The interceptor, finding no lock left by the guard, runs the handler without one.
      if (error instanceof LockBackendError && options.onBackendError === 'fail-open') return true;
      throw this.failures.map(error, context, options, () => holdTimesOf(method).retryAfterSeconds());
    }
  }
}
