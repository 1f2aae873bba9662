import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Inject, Optional } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LockConfigurationError, LockError } from '../core/errors';
import { markClientFault } from '../decorators/request-path';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { REQUEST_LOCK_DEFAULTS } from './locked-handler';
import { RequestFailures } from './request-failures';

/**
 * Answers lock errors from HTTP handlers that are not `@Locked` themselves — `LockService.using()` or
 * `isLocked()` called in a handler — the way a locked handler would: 409 + Retry-After, 503, 400 with the same
 * JSON body. Opt in: `{ provide: APP_FILTER, useClass: LockExceptionFilter }` or `@UseFilters(LockExceptionFilter)`.
 */
@Catch(LockError)
export class LockExceptionFilter implements ExceptionFilter<LockError> {
  private readonly failures: RequestFailures;

  constructor(
    private readonly adapterHost: HttpAdapterHost,
    @Optional() @Inject(REQUEST_LOCK_DEFAULTS) private readonly defaults?: RequestLockOptions,
  ) {
    this.failures = new RequestFailures(adapterHost);
  }

  catch(error: LockError, host: ArgumentsHost): void {
    // No hold times are known outside a locked handler: the module's retryAfter, else 1 s.
    // Here a bad key value came from what the handler built from its request; a bad option is still the server's.
    if (error instanceof LockConfigurationError && error.option === 'key') markClientFault(error);
    const mapped = this.failures.map(error, host, this.defaults ?? {}, () => 1);
    const answer =
      mapped instanceof HttpException ? mapped : new HttpException({ statusCode: 500, message: 'Internal error' }, 500);
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), answer.getResponse(), answer.getStatus());
  }
}
