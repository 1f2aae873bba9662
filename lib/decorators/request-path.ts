import { AsyncLocalStorage } from 'node:async_hooks';
import type { LockedMethod } from './locked-method';

/**
 * One handler call on the request path (HTTP, RPC, GraphQL), as the lock interceptor sees it. The method
 * wrapper reads it to know that the interceptor took the lock already (request keys), or to report back what
 * the HTTP answer should say (a skipped call, a call run without the lock).
 */
export interface RequestPath {
  readonly method: LockedMethod;
  /** The interceptor (or guard) holds the lock for this call: the method runs without taking it again. */
  readonly lockedByRequest: boolean;
  /** Fail open: run the handler without the lock when the store is unreachable. */
  readonly failOpen: boolean;
  /** The first call of `method` inside this path is the handler itself; nested calls are ordinary calls. */
  claimed: boolean;
  /** onLocked 'skip' skipped the handler. */
  skipped: boolean;
  /** The store was unreachable and the handler ran without the lock. */
  ranUnlocked: boolean;
  /** Settles when the handler's own work does (a Promise handler): its lock must outlive it. */
  work?: Promise<unknown>;
}

const storage = new AsyncLocalStorage<RequestPath>();

export function runOnRequestPath<T>(path: RequestPath, fn: () => T): T {
  return storage.run(path, fn);
}

/** The request path of this call, if `method` is the handler being served and this is its own call. */
export function claimRequestPath(method: LockedMethod): RequestPath | undefined {
  const path = storage.getStore();
  if (!path || path.method !== method || path.claimed) return undefined;
  path.claimed = true;
  return path;
}
