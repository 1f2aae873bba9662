import type { ExecutionContext } from '@nestjs/common';
import type { RequestParts } from '../decorators/key-template';

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
