import { isObservable, Observable, throwError } from 'rxjs';
import { LockConfigurationError } from '../core/errors';
import type { KeyPair } from '../core/key';
import type { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import type { LockedOptions, ResolvedLockOptions } from '../core/options';
import type { KeyResolver } from './key-template';

/** What @Locked records about one method; the explorer completes it per LockService at bootstrap. */
export interface LockedMethod {
  /** "OrderService.pay", for messages. */
  readonly where: string;
  readonly keys: KeyResolver;
  readonly options: LockedOptions | undefined;
  /** The method declares Observable as its return type: the lock is held until the stream ends. */
  readonly observable: boolean;
  readonly original: (...args: unknown[]) => unknown;
  /** Options merged with each module's defaults and validated, and the prepared keys when they are constant. */
  readonly prepared: WeakMap<LockService, PreparedLockedMethod>;
}

export interface PreparedLockedMethod {
  readonly options: ResolvedLockOptions;
  readonly constantKeys: readonly KeyPair[] | undefined;
}

/** Instances (or, for request-scoped and transient providers, classes) a module's explorer has bound. */
const boundInstances = new WeakMap<object, LockService>();
const boundClasses = new WeakMap<object, LockService>();

/** Explorers that have not bound their app yet: a call that arrives first makes them bind at once. */
const pendingBinders = new Set<{ bind(): void }>();

export function bindInstance(instance: object, service: LockService): void {
  boundInstances.set(instance, service);
}

export function bindClass(type: object, service: LockService): void {
  boundClasses.set(type, service);
}

export function registerPendingBinder(binder: { bind(): void }): () => void {
  pendingBinders.add(binder);
  return () => pendingBinders.delete(binder);
}

/** Prepares `method` for `service`: resolves options (bootstrap errors surface here) and constant keys. */
export function prepareLockedMethod(method: LockedMethod, service: LockService): void {
  if (method.prepared.has(service)) return;
  const options = service.resolveOptions(method.options, `@Locked() on ${method.where}`);
  const constantKeys = method.keys.constant ? service.normaliseKeys(method.keys.constant) : undefined;
  method.prepared.set(service, { options, constantKeys });
}

function serviceFor(instance: unknown): LockService | undefined {
  // A method called detached (`const pay = orders.pay; pay(1)`) has no instance to find its app by.
  if (typeof instance !== 'object' || instance === null) return undefined;
  return boundInstances.get(instance) ?? boundClasses.get(instance.constructor);
}

/** The body every @Locked method is replaced by: find this app's LockService, build the keys, run locked. */
export function invokeLocked(method: LockedMethod, instance: object, args: unknown[]): unknown {
  try {
    let service = serviceFor(instance);
    if (!service && pendingBinders.size > 0) {
      for (const binder of [...pendingBinders]) binder.bind();
      service = serviceFor(instance);
    }
    if (!service) throw new LockConfigurationError(method.where, messages.decorator.notBound(method.where));
    const prepared = method.prepared.get(service);
    if (!prepared) throw new LockConfigurationError(method.where, messages.decorator.notBound(method.where));
    const keys = prepared.constantKeys ?? service.normaliseKeys(method.keys(args));
    if (method.observable) {
      return service.observeLocked(
        keys,
        () => method.original.apply(instance, args) as Observable<unknown>,
        prepared.options,
        args,
      );
    }
    return service.runLocked(keys, () => callExpectingNoObservable(method, instance, args), prepared.options, args);
  } catch (error) {
    return method.observable ? throwError(() => error) : Promise.reject(error);
  }
}

function callExpectingNoObservable(method: LockedMethod, instance: object, args: unknown[]): unknown {
  const result = method.original.apply(instance, args);
  if (isObservable(result)) {
    throw new LockConfigurationError(method.where, messages.decorator.undeclaredObservable(method.where));
  }
  return result;
}
