import {
  type ArgumentsHost,
  type ExecutionContext,
  HttpException,
  HttpStatus,
  Logger,
  ServiceUnavailableException,
  BadRequestException,
} from '@nestjs/common';
import type { HttpAdapterHost } from '@nestjs/core';
import { LockBackendError, LockConfigurationError, LockLostError, LockUnavailableError } from '../core/errors';
import type { RequestLockOptions } from '../decorators/request-lock-options';

/** The codes clients see (HTTP bodies, RPC errors, GraphQL extensions): stable, documented. */
export const REQUEST_ERROR_CODES = {
  busy: 'LOCK_UNAVAILABLE',
  skipped: 'LOCK_SKIPPED',
  lost: 'LOCK_LOST',
  storeDown: 'LOCK_BACKEND',
  badKey: 'LOCK_BAD_KEY',
} as const;

interface ClientError {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly resource?: string;
  readonly retryAfter?: number;
}

/**
 * Turns a lock failure on the request path into what the transport's client understands: an HttpException
 * (status, JSON body naming the resource, Retry-After), an RpcException, or a GraphQLError with an extension
 * code. Messages are short and stable; the developer-facing detail stays in the logs.
 */
export class RequestFailures {
  private readonly logger = new Logger('DistributedLock');

  constructor(private readonly adapterHost: HttpAdapterHost | undefined) {}

  /** Maps lock errors; anything else passes through untouched. */
  map(error: unknown, context: ArgumentsHost, options: RequestLockOptions, retryAfter: () => number): unknown {
    if (error instanceof LockUnavailableError) {
      if (options.busyException && isExecutionContext(context)) return options.busyException(error, context);
      const seconds =
        options.retryAfter === false
          ? undefined
          : typeof options.retryAfter === 'number'
            ? options.retryAfter
            : retryAfter();
      return this.toTransport(context, {
        status: options.busyStatus ?? HttpStatus.CONFLICT,
        code: REQUEST_ERROR_CODES.busy,
        message: `"${error.key}" is being changed by another request; retry later.`,
        resource: error.key,
        ...(seconds === undefined ? {} : { retryAfter: seconds }),
      });
    }
    if (error instanceof LockBackendError) {
      this.logger.error(error.message);
      return this.toTransport(context, {
        status: HttpStatus.SERVICE_UNAVAILABLE,
        code: REQUEST_ERROR_CODES.storeDown,
        message: 'The lock store is unavailable; retry later.',
      });
    }
    if (error instanceof LockLostError) {
      return this.toTransport(context, {
        status: HttpStatus.SERVICE_UNAVAILABLE,
        code: REQUEST_ERROR_CODES.lost,
        message: `The lock on "${error.key}" was lost while the request ran; its outcome is unknown, retry.`,
        resource: error.key,
      });
    }
    if (error instanceof LockConfigurationError) {
      // At request time only the request can be at fault (configuration errors stop the bootstrap).
      return this.toTransport(context, {
        status: HttpStatus.BAD_REQUEST,
        code: REQUEST_ERROR_CODES.badKey,
        message: error.message.replace(/^@Locked\(\) on [^:]+: /, ''),
      });
    }
    return error;
  }

  /** onLocked 'skip' on the request path: say so, with the configured status. */
  skipped(context: ArgumentsHost, options: RequestLockOptions, resource: string): unknown {
    return this.toTransport(context, {
      status: options.skipStatus ?? HttpStatus.ACCEPTED,
      code: REQUEST_ERROR_CODES.skipped,
      message: `"${resource}" is already being handled by another request; this one was skipped.`,
      resource,
    });
  }

  private toTransport(context: ArgumentsHost, error: ClientError): unknown {
    const type = context.getType<string>();
    if (type === 'rpc') return rpcException(error);
    if (type === 'graphql') return graphQLError(error);
    if (error.retryAfter !== undefined && this.adapterHost?.httpAdapter) {
      const response: unknown = context.switchToHttp().getResponse();
      this.adapterHost.httpAdapter.setHeader(response, 'Retry-After', String(error.retryAfter));
    }
    const body = {
      statusCode: error.status,
      code: error.code,
      message: error.message,
      ...(error.resource === undefined ? {} : { resource: error.resource }),
    };
    if (error.status === HttpStatus.SERVICE_UNAVAILABLE) return new ServiceUnavailableException(body);
    if (error.status === HttpStatus.BAD_REQUEST) return new BadRequestException(body);
    return new HttpException(body, error.status);
  }
}

/** @nestjs/microservices is there whenever an RPC handler runs; loaded only then. */
function rpcException(error: ClientError): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- an optional peer, loaded only on the RPC path
  const { RpcException } = require('@nestjs/microservices') as {
    RpcException: new (error: object) => Error;
  };
  return new RpcException({ code: error.code, message: error.message, resource: error.resource, status: error.status });
}

/** graphql is there whenever a resolver runs; loaded only then. */
function graphQLError(error: ClientError): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- an optional peer, loaded only for resolvers
  const { GraphQLError } = require('graphql') as {
    GraphQLError: new (message: string, options: { extensions: Record<string, unknown> }) => Error;
  };
  return new GraphQLError(error.message, {
    extensions: { code: error.code, resource: error.resource, retryAfter: error.retryAfter, status: error.status },
  });
}

function isExecutionContext(host: ArgumentsHost): host is ExecutionContext {
  return typeof (host as Partial<ExecutionContext>).getHandler === 'function';
}
