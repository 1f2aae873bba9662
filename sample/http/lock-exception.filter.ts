import { type ArgumentsHost, Catch, type ExceptionFilter, HttpStatus } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LockConfigurationError, LockLostError, LockUnavailableError } from '../../lib';

/**
 * Maps lock failures to HTTP: busy → 409 Conflict with Retry-After, lost mid-work → 503 (the outcome is
 * unknown, the client may retry), a key the request made invalid → 400. Goes through the HTTP adapter so it
 * works on Express and Fastify alike.
 */
@Catch(LockUnavailableError, LockLostError, LockConfigurationError)
export class LockExceptionFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(error: LockUnavailableError | LockLostError | LockConfigurationError, host: ArgumentsHost): void {
    const { httpAdapter } = this.adapterHost;
    const response: unknown = host.switchToHttp().getResponse();
    if (error instanceof LockConfigurationError) {
      // Only request input reaches here at run time (configuration errors stop the bootstrap): say what was wrong.
      const status = HttpStatus.BAD_REQUEST;
      httpAdapter.reply(response, { statusCode: status, code: error.code, message: error.message }, status);
      return;
    }
    const busy = error instanceof LockUnavailableError;
    const status = busy ? HttpStatus.CONFLICT : HttpStatus.SERVICE_UNAVAILABLE;
    if (busy && error.retryAfterMs !== undefined) {
      // retryAfterMs is what the holder's lease has left: the key is free by then unless the holder extends it.
      // Retry-After counts whole seconds; round up and never send 0, which would invite a tight retry loop.
      httpAdapter.setHeader(response, 'Retry-After', String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))));
    }
    // error.message is written for the developer (it suggests options); clients get a short, stable text.
    const message = busy ? `"${error.key}" is busy, retry later.` : `Lost the lock on "${error.key}" mid-work, retry.`;
    httpAdapter.reply(response, { statusCode: status, code: error.code, key: error.key, message }, status);
  }
}
