import type { ExecutionContext } from '@nestjs/common';
import { LockConfigurationError } from '../core/errors';
import type { KeyPair } from '../core/key';
import type { LockService } from '../core/lock-service';
import { type RequestParts, USER_MISSING } from '../decorators/key-template';
import type { LockedMethod } from '../decorators/locked-method';
import { markClientFault } from '../decorators/request-path';

/**
 * A handler's keys from its request. A value the request left out or made invalid is the client's fault (a
 * 400); a {user…} key on a request nobody authenticated yet is the server's setup (a 500, logged).
 */
export function requestKeys(locks: LockService, method: LockedMethod, context: ExecutionContext): KeyPair[] {
  try {
    return locks.normaliseKeys(method.keys({ args: [], request: requestPartsOf(context) }));
  } catch (error) {
    if (!(error instanceof LockConfigurationError && error.option === USER_MISSING)) markClientFault(error);
    throw error;
  }
}

interface HttpRequestLike {
  readonly params?: unknown;
  readonly query?: unknown;
  readonly body?: unknown;
  readonly headers?: unknown;
  readonly user?: unknown;
}

/**
 * What key templates may read from a request, by transport: HTTP params, query, body, headers and the
 * authenticated user (set by a guard before); an RPC message's data; a GraphQL resolver's args (and the user
 * of its HTTP request). Read before pipes run: raw values, not transformed ones.
 */
export function requestPartsOf(context: ExecutionContext): RequestParts {
  const type = context.getType<string>();
  if (type === 'http') {
    const request = context.switchToHttp().getRequest<HttpRequestLike>();
    return { ...pick(request), context };
  }
  if (type === 'rpc') return { data: context.switchToRpc().getData<unknown>(), context };
  if (type === 'graphql') {
    // (root, args, context, info): the GraphQL context usually carries the HTTP request as `req`.
    const gqlContext = context.getArgByIndex<{ req?: HttpRequestLike } | undefined>(2);
    return { args: context.getArgByIndex<unknown>(1), user: gqlContext?.req?.user, context };
  }
  return { context };
}

function pick(request: HttpRequestLike): Omit<RequestParts, 'context'> {
  return {
    params: request.params,
    query: request.query,
    body: request.body,
    headers: request.headers,
    user: request.user,
  };
}
