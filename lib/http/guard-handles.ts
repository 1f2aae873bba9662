import type { LockHandle } from '../core/lock';
import type { LockedMethod } from '../decorators/locked-method';

/** What LockGuard left for the interceptor: the lock it took, or the fallback onLocked gave for a busy key. */
export type GuardOutcome = { readonly lock: LockHandle } | { readonly fallback: unknown };

/** Per request, per handler: until the interceptor claims it to hold the lock around the handler. */
const left = new WeakMap<object, Map<LockedMethod, GuardOutcome>>();

export function leaveForHandler(request: object, method: LockedMethod, outcome: GuardOutcome): void {
  let byMethod = left.get(request);
  if (!byMethod) left.set(request, (byMethod = new Map()));
  byMethod.set(method, outcome);
}

/** Takes over what the guard left for this request and handler, once. */
export function claimFromGuard(request: unknown, method: LockedMethod): GuardOutcome | undefined {
  if (typeof request !== 'object' || request === null) return undefined;
  const byMethod = left.get(request);
  const outcome = byMethod?.get(method);
  byMethod?.delete(method);
  return outcome;
}
