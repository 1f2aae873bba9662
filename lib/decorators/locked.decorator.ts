import 'reflect-metadata';
import { Observable } from 'rxjs';
import { LockConfigurationError } from '../core/errors';
import { messages } from '../core/messages';
import type { LockedOptions } from '../core/options';
import type { RequestLockOptions } from './request-lock-options';

/** @Locked options: the lock's policies, and how a request handler answers when it cannot run under it. */
export interface LockedMethodOptions extends LockedOptions {
  readonly request?: RequestLockOptions;
}
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
 * On a controller or resolver class it locks every handler of the class (one with its own @Locked keeps it).
 */
export function Locked(key: LockKey, options?: LockedMethodOptions): MethodDecorator & ClassDecorator {
  const { request, ...lockOptions } = options ?? {};
  const decorateMethod = (target: object, propertyKey: string | symbol, descriptor: PropertyDescriptor | undefined) => {
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
      options: options === undefined ? undefined : lockOptions,
      request,
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
  return ((target: object, propertyKey?: string | symbol, descriptor?: PropertyDescriptor) => {
    if (propertyKey === undefined) return lockHandlersOf(target as { prototype: object }, decorateMethod);
    return decorateMethod(target, propertyKey, descriptor);
  }) as MethodDecorator & ClassDecorator;
}

/** What marks a method as a handler: an HTTP route, a message or event pattern, a GraphQL query or mutation. */
const HANDLER_METADATA = ['path', 'microservices:pattern', 'graphql:resolver_name'] as const;

/**
 * @Locked on a controller or resolver class: every handler of the class is locked as if it carried the
 * decorator itself (keys per handler, e.g. 'tenant:{headers.x-tenant}'). A handler with its own @Locked keeps
 * its own; plain helper methods are left alone.
 */
function lockHandlersOf(
  type: { prototype: object },
  decorateMethod: (target: object, name: string, descriptor: PropertyDescriptor) => unknown,
): void {
  const prototype = type.prototype;
  for (const name of Object.getOwnPropertyNames(prototype)) {
    const descriptor = Object.getOwnPropertyDescriptor(prototype, name);
    const handler: unknown = descriptor?.value;
    if (name === 'constructor' || typeof handler !== 'function') continue;
    if (Reflect.hasOwnMetadata(LOCKED_METHOD, handler)) continue;
    if (!HANDLER_METADATA.some((metadataKey) => Reflect.hasOwnMetadata(metadataKey, handler))) continue;
    decorateMethod(prototype, name, descriptor!);
    Object.defineProperty(prototype, name, descriptor!);
  }
}
