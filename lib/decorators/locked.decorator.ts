import 'reflect-metadata';
import { Observable } from 'rxjs';
import { LockConfigurationError } from '../core/errors';
import { messages } from '../core/messages';
import type { LockedOptions } from '../core/options';
import { compileLockKey, type LockKey } from './key-template';
import { invokeLocked, type LockedMethod } from './locked-method';

/** Metadata key under which the replaced method carries its LockedMethod record. */
export const LOCKED_METHOD = Symbol('nestjs-distributed-lock:locked-method');

/**
 * Runs the method under a distributed lock. Works on any provider or controller method — services, cron
 * jobs, event listeners, queue processors — returning a value, a Promise or an Observable (declare the
 * `Observable<T>` return type: the lock is then held until the stream completes, errors or is unsubscribed).
 * The method becomes async: a sync method returns a Promise of its result.
 *
 * Keys, templates and options are checked when the class is defined and at bootstrap, never on first call.
 */
export function Locked(key: LockKey, options?: LockedOptions): MethodDecorator {
  return (target, propertyKey, descriptor) => {
    const owner = typeof target === 'function' ? (target as { name: string }).name : target.constructor.name;
    const where = `${owner}.${String(propertyKey)}`;
    const original: unknown = descriptor?.value;
    if (typeof original !== 'function') throw new LockConfigurationError(where, messages.decorator.notAMethod(where));
    if (typeof target === 'function') throw new LockConfigurationError(where, messages.decorator.staticMethod(where));
    if (Reflect.hasOwnMetadata(LOCKED_METHOD, original)) {
      throw new LockConfigurationError(where, messages.decorator.stacked(where));
    }
    const parameterTypes = Reflect.getMetadata('design:paramtypes', target, propertyKey) as unknown[] | undefined;
    const parameterCount = Math.max(parameterTypes?.length ?? 0, original.length);
    const returnType: unknown = Reflect.getMetadata('design:returntype', target, propertyKey);
    const method: LockedMethod = {
      where,
      keys: compileLockKey(key, where, parameterCount),
      options,
      observable:
        returnType === Observable || (typeof returnType === 'function' && returnType.prototype instanceof Observable),
      original: original as (...args: unknown[]) => unknown,
      prepared: new WeakMap(),
    };
    const locked = function (this: object, ...args: unknown[]): unknown {
      return invokeLocked(method, this, args);
    };
    Object.defineProperty(locked, 'name', { value: original.name });
    // Decorators applied before this one (@Cron, @OnEvent, @Get below @Locked) put their metadata on the original.
    for (const metadataKey of Reflect.getOwnMetadataKeys(original)) {
      Reflect.defineMetadata(metadataKey, Reflect.getOwnMetadata(metadataKey, original), locked);
    }
    Reflect.defineMetadata(LOCKED_METHOD, method, locked);
    (descriptor as TypedPropertyDescriptor<unknown>).value = locked;
    return descriptor;
  };
}
