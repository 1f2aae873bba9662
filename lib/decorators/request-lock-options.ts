import type { ExecutionContext } from '@nestjs/common';
import type { LockUnavailableError } from '../core/errors';

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
