import { LockBackendClosedError, LockBackendError } from '../../core/errors';
import { messages } from '../../core/messages';

export const KIND = 'zookeeper';

/** A ZooKeeper reply with an error code (NO_NODE, NODE_EXISTS, CONNECTION_LOSS …), kept for the recipe to act on. */
export class ZooKeeperReplyError extends Error {
  constructor(
    readonly code: number,
    readonly codeName: string,
    operation: string,
  ) {
    super(`ZooKeeper answered ${codeName} (${code}) to ${operation}`);
    this.name = 'ZooKeeperReplyError';
  }
}

/** Wraps whatever failed into the LockBackendError the core expects, saying what to do about it. */
export function backendError(operation: string, cause: unknown, hint?: string): LockBackendError {
  if (cause instanceof LockBackendError) return cause;
  const what = cause instanceof Error ? cause.message : String(cause);
  const advice = hint ?? 'Check that the ZooKeeper ensemble is up and reachable from this process (connectionString).';
  return new LockBackendError(KIND, `${messages.backendFailed(KIND, operation)} ${what}. ${advice}`, [], { cause });
}

/** The error for a call made after close(). */
export function closedError(operation: string): LockBackendError {
  return new LockBackendClosedError(KIND, operation);
}
