import type { LockHandle } from '../core/lock';
import type { LockedMethod } from '../decorators/locked-method';

/** Locks LockGuard took for a request, until the interceptor claims them to hold them around the handler. */
const taken = new WeakMap<object, Map<LockedMethod, LockHandle>>();

export function leaveForHandler(request: object, method: LockedMethod, handle: LockHandle): void {
  let byMethod = taken.get(request);
  if (!byMethod) taken.set(request, (byMethod = new Map()));
  byMethod.set(method, handle);
}

/** Takes over the guard's lock for this request and handler, once. */
export function claimFromGuard(request: unknown, method: LockedMethod): LockHandle | undefined {
  if (typeof request !== 'object' || request === null) return undefined;
  const byMethod = taken.get(request);
  const handle = byMethod?.get(method);
  byMethod?.delete(method);
  return handle;
}

/** The guard's lock if the interceptor never claimed it (a later guard refused the request). */
export function unclaimed(request: object, method: LockedMethod): LockHandle | undefined {
  return claimFromGuard(request, method);
}
