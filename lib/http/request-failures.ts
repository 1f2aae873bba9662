import {
  type ArgumentsHost,
  type ExecutionContext,
  HttpException,
  HttpStatus,
  Logger,
  ServiceUnavailableException,
  BadRequestException,
  InternalServerErrorException,
} from '@nestjs/common';
import type { HttpAdapterHost } from '@nestjs/core';
import { LockBackendError, LockConfigurationError, LockLostError, LockUnavailableError } from '../core/errors';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { isClientFault } from '../decorators/request-path';

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
  map(
    error: unknown,
    context: ArgumentsHost,
    options: RequestLockOptions,
    retryAfter: () => number,
    /** The handler, "Class.method": stripped from messages clients see. */
    where?: string,
  ): unknown {
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
      if (!isClientFault(error)) {
        // A key a server-side call built wrongly, or a setup mistake: the server's fault, said in the logs only.
        this.logger.error(error.message);
        return this.toTransport(context, {
          status: HttpStatus.INTERNAL_SERVER_ERROR,
          code: 'INTERNAL_ERROR',
          message: 'Internal server error',
        });
      }
      return this.toTransport(context, {
        status: HttpStatus.BAD_REQUEST,
        code: REQUEST_ERROR_CODES.badKey,
        message: clientMessage(error.message, where),
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
    const response = context.switchToHttp().getResponse<{ headersSent?: boolean } | undefined>();
    // Headers already gone (a nested lock failing mid-stream): the status cannot change either; say it in the body.
    if (error.retryAfter !== undefined && this.adapterHost?.httpAdapter && response?.headersSent !== true) {
      this.adapterHost.httpAdapter.setHeader(response, 'Retry-After', String(error.retryAfter));
    }
    const body = {
      statusCode: error.status,
      code: error.code,
      message: error.message,
      ...(error.resource === undefined ? {} : { resource: error.resource }),
    };
    if (error.status === HttpStatus.SERVICE_UNAVAILABLE) return new ServiceUnavailableException(body);
    if (error.status === HttpStatus.INTERNAL_SERVER_ERROR) return new InternalServerErrorException(body);
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

/**
 * What a client reads of a key error: without the "@Locked() on Class.method" that names server code. The
 * placeholder and what was wrong stay: they are what the client must fix.
 */
function clientMessage(message: string, where: string | undefined): string {
  let text = message;
  if (where) {
    for (const prefix of [`@Locked() on ${where}: `, `@Locked() on ${where} `]) {
      if (text.startsWith(prefix)) text = text.slice(prefix.length);
    }
  }
  // The developer's advice ("Pass a value there, or use a key function…") is not the client's to follow.
  return text.replace(/ Pass a value there.*$/, '').replace(/^could not build its key from "[^"]*": /, 'The request ');
}
