import type { LockLostError, LockUnavailableError } from './errors';
import type { KeyPair } from './key';
import type { LockHandle } from './lock';
import type { OnLockedPolicy, ResolvedLockOptions } from './options';

/** onLocked: what a scoped call (using, @Locked, an Observable) gives back when its keys stayed busy. */
export async function whenLocked(
  policy: OnLockedPolicy,
  keys: readonly KeyPair[],
  args: readonly unknown[],
  error: LockUnavailableError,
): Promise<unknown> {
  if (policy === 'throw') throw error;
  if (policy === 'skip') return undefined;
  return policy({ keys: keys.map((k) => k.key), args, error });
}

/** onLost as a function: called at the moment of loss. Returns what stops watching. */
export function watchLossPolicy(handle: LockHandle, options: ResolvedLockOptions): () => void {
  const policy = options.onLost;
  if (typeof policy !== 'function') return () => undefined;
  return onFirstLoss(handle, (error) => policy({ lock: handle, error }));
}

/** Calls `listener` once, with the first loss among the handle's leases (at once if one is already lost). */
export function onFirstLoss(handle: LockHandle, listener: (error: LockLostError) => void): () => void {
  const lost = handle.lossError;
  if (lost) {
    listener(lost);
    return () => undefined;
  }
  let fired = false;
  const once = (error: LockLostError): void => {
    if (fired) return;
    fired = true;
    listener(error);
  };
  const stops = handle.leases.map((lease) => lease.onLoss(once));
  return () => stops.forEach((stop) => stop());
}
