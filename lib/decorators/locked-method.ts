import { Logger } from '@nestjs/common';
import { catchError, isObservable, type Observable, throwError } from 'rxjs';
import { LockBackendError, LockConfigurationError, LockLostError } from '../core/errors';
import type { KeyPair } from '../core/key';
import type { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import type { LockedOptions, ResolvedLockOptions } from '../core/options';
import type { KeyResolver } from './key-template';
import { observeLocked } from './observe-locked';
import { type RequestLockOptions, validateRequestOptions } from './request-lock-options';
import { claimRequestPath, markClientFault, type RequestPath, trackWork } from './request-path';
import { holdWhileStreaming, streamDone } from './streamed-results';

/** What @Locked records about one method; the explorer completes it per LockService at bootstrap. */
export interface LockedMethod {
  /** "OrderService.pay", for messages. */
  readonly where: string;
  readonly keys: KeyResolver;
  readonly options: LockedOptions | undefined;
  /** How a request handler answers when the lock is busy, skipped or its store is down. */
  readonly request: RequestLockOptions | undefined;
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
 * only while exactly one running app has the class; otherwise the call fails, saying why. A request-scoped
 * class, whose every instance is made that way, is refused at the bootstrap of a second running app.
 */
const classApps = new WeakMap<object, Set<LockService>>();

/** Apps that finished bootstrap and have not shut down: an app whose bootstrap failed never counts. */
const runningApps = new WeakSet<LockService>();

export function markRunning(service: LockService, running: boolean): void {
  if (running) runningApps.add(service);
  else runningApps.delete(service);
}

/** Explorers that have not finished binding their app yet: a call that arrives first makes them bind now. */
const pendingBinders = new Set<{ bind(): void }>();

export function bindInstance(instance: object, service: LockService): void {
  boundInstances.set(instance, service);
}

/** Records that `service`'s app makes instances of `type` after bootstrap; `exclusive` refuses a second app. */
export function bindClass(type: object, service: LockService, where: string, exclusive: boolean): void {
  const apps = classApps.get(type) ?? new Set<LockService>();
  if (exclusive && [...apps].some((other) => other !== service && runningApps.has(other))) {
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
  validateRequestOptions(method.request, where);
  method.prepared.set(service, { options, constantKeys });
}

function serviceFor(instance: unknown): LockService | undefined {
  // A method called detached (`const pay = orders.pay; pay(1)`) has no instance to find its app by.
  if (typeof instance !== 'object' || instance === null) return undefined;
  const bound = boundInstances.get(instance);
  if (bound) return bound;
  const apps = [...(classApps.get(instance.constructor) ?? [])];
  if (apps.length === 1) return apps[0];
  const running = apps.filter((app) => runningApps.has(app));
  return running.length === 1 ? running[0] : undefined;
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
    if (!service) {
      const ambiguous =
        typeof instance === 'object' && instance !== null && (classApps.get(instance.constructor)?.size ?? 0) > 1;
      const message = ambiguous
        ? messages.decorator.ambiguousApp(method.where)
        : messages.decorator.notBound(method.where);
      throw new LockConfigurationError(method.where, message);
    }
    const prepared = method.prepared.get(service);
    if (!prepared) throw new LockConfigurationError(method.where, messages.decorator.notBound(method.where));
    const path = claimRequestPath(method);
    // The interceptor (or guard) took the lock from the request, before pipes: this call runs under it.
    if (path?.lockedByRequest) return runUnderRequestLock(method, instance, args, path);
    const keys = prepared.constantKeys ?? handlerKeys(method, service, args, path);
    const options = path ? reportingTo(path, prepared.options) : prepared.options;
    if (observable) {
      let started = false;
      const locked = observeLocked(
        service,
        keys,
        () => ((started = true), method.original.apply(instance, args) as Observable<unknown>),
        options,
        args,
      );
      if (!path?.failOpen) return locked;
      return locked.pipe(
        catchError((error: unknown) => {
          if (started || !(error instanceof LockBackendError)) return throwError(() => error);
          path.ranUnlocked = true;
          return method.original.apply(instance, args) as Observable<unknown>;
        }),
      );
    }
    const call: { result?: Promise<unknown>; started?: boolean } = {};
    if (path) path.inCall = true;
    call.result = service.runLocked(
      keys,
      async () => {
        call.started = true;
        if (path) path.lockedAt = Date.now();
        return holdWhileStreaming(await callExpectingNoObservable(method, instance, args, call));
      },
      options,
      args,
    );
    if (path?.failOpen) {
      call.result = call.result.catch((error: unknown) => {
        if (call.started || !(error instanceof LockBackendError)) throw error;
        path.ranUnlocked = true;
        return method.original.apply(instance, args);
      });
    }
    if (path) call.result = call.result.finally(() => (path.inCall = false));
    return call.result;
  } catch (error) {
    return observable ? throwError(() => error) : Promise.reject(error);
  }
}

/** On the request path a skipped call is reported, so the response can say so instead of an empty 200. */
function reportingTo(path: RequestPath, options: ResolvedLockOptions): ResolvedLockOptions {
  if (options.onLocked !== 'skip') return options;
  return {
    ...options,
    onLocked: ({ keys }) => {
      path.skipped = keys;
      return undefined;
    },
  };
}

/**
 * The handler of a request-keyed call: the interceptor holds its lock. It runs only while that lock is still
 * held for it, and reports its work (and a file it streams) so the lock outlives them.
 */
function runUnderRequestLock(method: LockedMethod, instance: object, args: unknown[], path: RequestPath): unknown {
  if (path.released) {
    // The request was given up, and its lock let go, while pipes ran: running now would run unlocked.
    throw new LockLostError(method.where, messages.decorator.requestGone(method.where));
  }
  path.inCall = true;
  let result: unknown;
  try {
    result = method.original.apply(instance, args);
  } catch (error) {
    path.inCall = false;
    throw error;
  }
  if (!(result instanceof Promise)) {
    path.inCall = false;
    const streaming = streamDone(result);
    if (streaming) trackWork(path, streaming);
    return result;
  }
  const settled = result.finally(() => (path.inCall = false));
  trackWork(
    path,
    settled.then((value: unknown) => streamDone(value)),
  );
  return settled;
}

/**
 * The keys of one call. On the request path, the handler's own key is built from what the request brought
 * (after pipes): a value it left out or made invalid is the client's fault.
 */
function handlerKeys(
  method: LockedMethod,
  service: LockService,
  args: readonly unknown[],
  path: RequestPath | undefined,
): KeyPair[] {
  try {
    return keysAt(method, () => service.normaliseKeys(method.keys({ args })));
  } catch (error) {
    if (path) markClientFault(error);
    throw error;
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
