import type { ExecutionContext } from '@nestjs/common';
import { LOCKED_METHOD } from '../decorators/locked.decorator';
import type { LockedMethod } from '../decorators/locked-method';
import type { RequestLockOptions } from '../decorators/request-lock-options';
import { HoldTimes } from './hold-times';

/** The module-wide request options (DistributedLockModule's `request` option). */
export const REQUEST_LOCK_DEFAULTS = Symbol('nestjs-distributed-lock:request-defaults');

/** The @Locked record of the handler this context serves, if it has one. */
export function lockedHandler(context: ExecutionContext): LockedMethod | undefined {
  const handler: unknown = context.getHandler();
  return typeof handler === 'function'
    ? (Reflect.getMetadata(LOCKED_METHOD, handler) as LockedMethod | undefined)
    : undefined;
}

export function requestOptionsOf(method: LockedMethod, defaults: RequestLockOptions | undefined): RequestLockOptions {
  return { ...defaults, ...method.request };
}

const holdTimes = new WeakMap<LockedMethod, HoldTimes>();

/** The hold times observed for one handler (all apps of the process: the same code holds as long). */
export function holdTimesOf(method: LockedMethod): HoldTimes {
  let times = holdTimes.get(method);
  if (!times) holdTimes.set(method, (times = new HoldTimes()));
  return times;
}
