import { contextStorage } from '../core/context-storage';
import type { LockedMethod } from './locked-method';

/**
 * One handler call on the request path (HTTP, RPC, GraphQL), as the lock interceptor sees it. The method
 * wrapper reads it to know that the interceptor took the lock already (request keys), or to report back what
 * the answer should say (a skipped call, a call run without the lock, how long the lock was held).
 */
export interface RequestPath {
  readonly method: LockedMethod;
  /** The interceptor (or guard) holds the lock for this call: the method runs without taking it again. */
  readonly lockedByRequest: boolean;
  /** Fail open: run the handler without the lock when the store is unreachable. */
  readonly failOpen: boolean;
  /** A call of the handler is running now: a call of the same method inside it is an ordinary nested call. */
  inCall: boolean;
  /** The interceptor let the lock go (its subscriber left before the handler ran): the handler must not run. */
  released: boolean;
  /** onLocked 'skip' skipped the handler; the keys it would have locked. */
  skipped: readonly string[] | undefined;
  /** The store was unreachable and the handler ran without the lock. */
  ranUnlocked: boolean;
  /** When the handler got its lock (argument keys: after pipes and the wait): hold times count from here. */
  lockedAt: number | undefined;
  /** The handler's own work (a Promise handler, a streamed file): its lock must outlive it. */
  work: Promise<unknown> | undefined;
  /** Whether `work` has settled. */
  workDone: boolean;
}

export function newRequestPath(method: LockedMethod, lockedByRequest: boolean, failOpen: boolean): RequestPath {
  return {
    method,
    lockedByRequest,
    failOpen,
    inCall: false,
    released: false,
    skipped: undefined,
    ranUnlocked: false,
    lockedAt: undefined,
    work: undefined,
    workDone: false,
  };
}

const storage = contextStorage<RequestPath>();

export function runOnRequestPath<T>(path: RequestPath, fn: () => T): T {
  return storage.run(path, fn);
}

/**
 * The request path of this call, if `method` is the handler being served and no call of it is running
 * already (a retry operator calling the handler again is the handler; the handler calling itself is not).
 */
export function claimRequestPath(method: LockedMethod): RequestPath | undefined {
  const path = storage.getStore();
  if (!path || path.method !== method || path.inCall) return undefined;
  return path;
}

/** Records the handler's work; the path's lock is let go only once it has settled. */
export function trackWork(path: RequestPath, work: Promise<unknown>): void {
  path.workDone = false;
  path.work = work.then(
    () => void (path.workDone = true),
    () => void (path.workDone = true),
  );
}

/** Errors the client caused (a value its request left out or made invalid), as opposed to the server's bugs. */
const clientFaults = new WeakSet<object>();

export function markClientFault(error: unknown): void {
  if (typeof error === 'object' && error !== null) clientFaults.add(error);
}

export function isClientFault(error: unknown): boolean {
  return typeof error === 'object' && error !== null && clientFaults.has(error);
}
