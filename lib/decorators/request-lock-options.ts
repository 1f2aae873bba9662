import type { ExecutionContext } from '@nestjs/common';
import { LockConfigurationError, type LockUnavailableError } from '../core/errors';
import { messages } from '../core/messages';

/**
 * How a locked request handler (HTTP, RPC, GraphQL) answers when it cannot run under its lock. Per handler in
 * `@Locked(key, { request: … })`, or for every handler in the module's `request` option.
 */
export interface RequestLockOptions {
  /** HTTP status when the resource is busy: 409 Conflict (default) or 423 Locked. */
  readonly busyStatus?: 409 | 423;
  /** Build your own exception for a busy resource instead (any transport). */
  readonly busyException?: (error: LockUnavailableError, context: ExecutionContext) => Error;
  /**
   * The `Retry-After` (seconds) sent with a busy answer: a number, or 'estimate' (default) — the median hold
   * time this handler showed lately, rounded up, 1 s before any was seen. Never the holder's remaining ttl,
   * which auto-extension keeps topping up. `false` sends none.
   */
  readonly retryAfter?: number | 'estimate' | false;
  /** HTTP status when onLocked 'skip' skipped the handler, with a JSON body naming the resource. Default 202. */
  readonly skipStatus?: number;
  /** The lock store is unreachable: 'fail' (default: 503 Service Unavailable) or 'fail-open' (run unlocked, logged). */
  readonly onBackendError?: 'fail' | 'fail-open';
}

const KNOWN = ['busyStatus', 'busyException', 'retryAfter', 'skipStatus', 'onBackendError'] as const;

/** Checks request options at bootstrap, so a typo or an impossible status cannot reach a client. */
export function validateRequestOptions(options: unknown, where: string): RequestLockOptions | undefined {
  if (options === undefined) return undefined;
  const bad = (name: string, rule: string, value: unknown): LockConfigurationError =>
    new LockConfigurationError(`request.${name}`, messages.decorator.badRequestOption(where, name, rule, value));
  if (typeof options !== 'object' || options === null) throw bad('request', 'an object', options);
  const o = options as Record<string, unknown>;
  for (const name of Object.keys(o)) {
    if (!(KNOWN as readonly string[]).includes(name)) throw bad(name, `one of ${KNOWN.join(', ')}`, o[name]);
  }
  if (o.busyStatus !== undefined && o.busyStatus !== 409 && o.busyStatus !== 423) {
    throw bad('busyStatus', '409 or 423', o.busyStatus);
  }
  if (o.busyException !== undefined && typeof o.busyException !== 'function') {
    throw bad('busyException', 'a function', o.busyException);
  }
  const retryAfter = o.retryAfter;
  const wholeSeconds = typeof retryAfter === 'number' && Number.isSafeInteger(retryAfter) && retryAfter >= 0;
  if (retryAfter !== undefined && retryAfter !== 'estimate' && retryAfter !== false && !wholeSeconds) {
    throw bad('retryAfter', "a whole number of seconds ≥ 0, 'estimate' or false", retryAfter);
  }
  const skip = o.skipStatus;
  if (skip !== undefined && !(typeof skip === 'number' && Number.isSafeInteger(skip) && skip >= 200 && skip <= 599)) {
    throw bad('skipStatus', 'an HTTP status from 200 to 599', skip);
  }
  if (o.onBackendError !== undefined && o.onBackendError !== 'fail' && o.onBackendError !== 'fail-open') {
    throw bad('onBackendError', "'fail' or 'fail-open'", o.onBackendError);
  }
  return options as RequestLockOptions;
}
