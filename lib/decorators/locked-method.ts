import { Logger } from '@nestjs/common';
import { isObservable, type Observable, throwError } from 'rxjs';
import { LockConfigurationError } from '../core/errors';
import type { KeyPair } from '../core/key';
import type { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import type { LockedOptions, ResolvedLockOptions } from '../core/options';
import type { KeyResolver } from './key-template';
import { observeLocked } from './observe-locked';

/** What @Locked records about one method; the explorer completes it per LockService at bootstrap. */
export interface LockedMethod {
  /** "OrderService.pay", for messages. */
  readonly where: string;
  readonly keys: KeyResolver;
  readonly options: LockedOptions | undefined;
  /**
   * The lock is held until the returned stream ends: the method declares Observable as its return type, or
   * returned one at an earlier call (that call could only get a Promise).
   */
  observable: boolean;
  readonly original: (...args: unknown[]) => unknown;
  /** Options merged with each module's defaults and validated, and the prepared keys when they are constant. */
  readonly prepared: WeakMap<LockService, PreparedLockedMethod>;
}

export interface PreparedLockedMethod {
  readonly options: ResolvedLockOptions;
  readonly constantKeys: readonly KeyPair[] | undefined;
}

/**
 * Each instance's app, set by that app's explorer. Per instance, never per class: two apps in one process
 * (tests, hybrid apps) each have their own instances, and each must run on its own store.
 */
const boundInstances = new WeakMap<object, LockService>();

/**
 * For instances no explorer can see at bootstrap — request-scoped providers, transient ones made later with
 * moduleRef.resolve() — the apps whose container has their class. Such an instance runs on its app's store
 * only while exactly one app has the class; a second app registering it is refused at its bootstrap.
 */
const classApps = new WeakMap<object, Set<LockService>>();

/** Explorers that have not finished binding their app yet: a call that arrives first makes them bind now. */
const pendingBinders = new Set<{ bind(): void }>();

export function bindInstance(instance: object, service: LockService): void {
  boundInstances.set(instance, service);
}

/** Records that `service`'s app makes instances of `type` later; refuses a second live app. */
export function bindClass(type: object, service: LockService, where: string): void {
  const apps = classApps.get(type) ?? new Set<LockService>();
  if (apps.size > 0 && !apps.has(service)) {
    throw new LockConfigurationError(where, messages.decorator.scopedInTwoApps(where));
  }
  apps.add(service);
  classApps.set(type, apps);
}

/** The app is shutting down: its classes may be registered by another app. */
export function unbindClass(type: object, service: LockService): void {
  classApps.get(type)?.delete(service);
}

export function registerPendingBinder(binder: { bind(): void }): () => void {
  pendingBinders.add(binder);
  return () => pendingBinders.delete(binder);
}

/** Prepares `method` for `service`: resolves options (bootstrap errors surface here) and constant keys. */
export function prepareLockedMethod(method: LockedMethod, service: LockService): void {
  if (method.prepared.has(service)) return;
  const where = `@Locked() on ${method.where}`;
  let options: ResolvedLockOptions;
  try {
    options = service.resolveOptions(method.options, where);
  } catch (error) {
    if (!(error instanceof LockConfigurationError)) throw error;
    throw new LockConfigurationError(error.option, messages.decorator.badOptions(where, error.message));
  }
  const constantKeys = method.keys.constant
    ? keysAt(method, () => service.normaliseKeys(method.keys.constant!))
    : undefined;
  method.prepared.set(service, { options, constantKeys });
}

function serviceFor(instance: unknown): LockService | undefined {
  // A method called detached (`const pay = orders.pay; pay(1)`) has no instance to find its app by.
  if (typeof instance !== 'object' || instance === null) return undefined;
  const bound = boundInstances.get(instance);
  if (bound) return bound;
  const apps = classApps.get(instance.constructor);
  return apps?.size === 1 ? [...apps][0] : undefined;
}

/** The body every @Locked method is replaced by: find this app's LockService, build the keys, run locked. */
export function invokeLocked(method: LockedMethod, instance: object, args: unknown[]): unknown {
  const observable = method.observable;
  try {
    let service = serviceFor(instance);
    if (!service && pendingBinders.size > 0) {
      // Another app's binder failing (its bootstrap is failing too) must not fail this call.
      for (const binder of [...pendingBinders]) {
        try {
          binder.bind();
        } catch {
          // That app's own bootstrap reports it.
        }
      }
      service = serviceFor(instance);
    }
    if (!service) throw new LockConfigurationError(method.where, messages.decorator.notBound(method.where));
    const prepared = method.prepared.get(service);
    if (!prepared) throw new LockConfigurationError(method.where, messages.decorator.notBound(method.where));
    const keys = prepared.constantKeys ?? keysAt(method, () => service.normaliseKeys(method.keys(args)));
    if (observable) {
      return observeLocked(
        service,
        keys,
        () => method.original.apply(instance, args) as Observable<unknown>,
        prepared.options,
        args,
      );
    }
    const call: { result?: Promise<unknown> } = {};
    call.result = service.runLocked(
      keys,
      () => callExpectingNoObservable(method, instance, args, call),
      prepared.options,
      args,
    );
    return call.result;
  } catch (error) {
    return observable ? throwError(() => error) : Promise.reject(error);
  }
}

/** Key errors name the method: the key was built from its template or function. */
function keysAt(method: LockedMethod, build: () => KeyPair[]): KeyPair[] {
  try {
    return build();
  } catch (error) {
    if (!(error instanceof LockConfigurationError) || error.message.includes(method.where)) throw error;
    throw new LockConfigurationError(error.option, messages.decorator.badKeyAt(method.where, error.message));
  }
}

/**
 * A method whose Observable return type was not declared is only found out at its first call, which has
 * already returned a Promise: that call fails (and says how to fix it) without ever failing unhandled, and
 * every later call returns a locked Observable.
 */
function callExpectingNoObservable(
  method: LockedMethod,
  instance: object,
  args: unknown[],
  call: { readonly result?: Promise<unknown> },
): unknown {
  const result = method.original.apply(instance, args);
  if (isObservable(result)) {
    method.observable = true;
    const error = new LockConfigurationError(method.where, messages.decorator.undeclaredObservable(method.where));
    new Logger('DistributedLock').error(error.message);
    // The caller most likely called .subscribe() on the Promise and holds no handler: never crash the process.
    call.result?.catch(() => undefined);
    throw error;
  }
  return result;
}
