import { Observable, Subject } from 'rxjs';
import type { ConnectionChange, LockBackend, StoreCall } from '../backends/lock-backend';
import { Acquisition, type AcquisitionContext } from './acquisition';
import { HeldLocks } from './held-locks';
import { HeldUntil } from './held-until';
import { BackendRegistry, type LockBackendProvider } from './backend-registry';
import { type LockClock, systemClock } from './clock';
import { LockBackendError, LockConfigurationError, type LockError, LockUnavailableError } from './errors';
import type { LockEvent } from './events';
import { type KeyPair, normaliseKeys, validateKeyPrefix } from './key';
import { LockHandle, type Lock } from './lock';
import { serviceClosed, serviceOpened } from './context-storage';
import { borrowableInScope, runInScope } from './lock-context';
import type { LeaseHost, LockLease } from './lock-lease';
import { watchLossPolicy, whenLocked } from './lock-policies';
import { messages } from './messages';
import {
  duration,
  type LockCallOptions,
  type LockedContext,
  type LockedOptions,
  type ResolvedLockOptions,
  resolveDefaults,
  resolveLockOptions,
} from './options';
import { holdProcess } from './process-hold';
import { boundedCall, CallControl } from './store-call';

export interface LockServiceConfig {
  /**
   * Named backends; a call without a `backend` option uses `defaults.backend` (default "default").
   * An instance stays yours (never closed for you); a factory `() => backend` (may be async) is called at
   * bootstrap, and the backend it makes is closed with the service.
   */
  readonly backends: Readonly<Record<string, LockBackendProvider>>;
  /** Module-wide option defaults, over the built-in ones. */
  readonly defaults?: LockedOptions;
  /** Put in front of every key in the store, e.g. "myapp:". Not part of `lock.key`. */
  readonly keyPrefix?: string;
  /** Time source for every timer; inject a ManualClock in tests. */
  readonly clock?: LockClock;
  /**
   * At shutdown, how long work still running under a lock may take to finish after its `signal` aborted,
   * before the lock is reported lost and released anyway, in ms. Default 10 000.
   */
  readonly shutdownTimeout?: number;
  /**
   * How long one store call (acquire, release, extend, a backend's init) may take before it counts as a
   * store failure, in ms. A call on a hung store returns at most this long after its waitTimeout. Default 5 000.
   */
  readonly operationTimeout?: number;
}

/** The defaults of the service-wide settings, in one place. The README's option table repeats these. */
export const DEFAULT_SHUTDOWN_TIMEOUT = 10_000;
export const DEFAULT_OPERATION_TIMEOUT = 5_000;

type UsingFn<T> = (lock: Lock) => T | Promise<T>;
type ScopedOptions = Omit<LockedOptions, 'onLocked'> & LockCallOptions;

/** One lock this service holds, as `heldLocks()` shows it: a snapshot for dashboards and debugging. */
export interface HeldLockInfo {
  /** The keys held together, without keyPrefix. */
  readonly keys: readonly string[];
  readonly backend: string;
  readonly fencingTokens: readonly bigint[];
  readonly acquiredAt: number;
  /** Until when it is trusted without a further extension (Infinity on session-bound stores). */
  readonly expiresAt: number;
}

/** The health of one registered backend, as `ping` saw it. */
export interface BackendHealth {
  readonly backend: string;
  readonly kind: string;
  readonly up: boolean;
  readonly error?: LockError;
}

/**
 * Takes, holds and releases locks on the registered backends. Owns every policy — waiting, retries with
 * backoff, auto-extension, loss detection, reentrancy, multi-key ordering, shutdown — so all backends behave
 * alike.
 */
export class LockService {
  /** Every acquisition, release, extension, loss, failure and store connection change, as it happens. */
  readonly events$: Observable<LockEvent>;
  /** @internal */
  readonly defaults: ResolvedLockOptions;
  private readonly registry: BackendRegistry;
  private readonly keyPrefix: string;
  private readonly clock: LockClock;
  private readonly shutdownTimeout: number;
  private readonly operationTimeout: number;
  private readonly events = new Subject<LockEvent>();
  private readonly held: HeldLocks;
  private readonly host: LeaseHost;
  private readonly contexts = new Map<string, AcquisitionContext>();
  private ready: Promise<void> | undefined;
  private initialised = false;
  private closed: Promise<void> | undefined;
  /** Set as close() begins, before any of the shutdown runs (an abort listener it triggers may call us). */
  private closing = false;

  /**
   * Validates the whole configuration at once: a bad option fails here, at bootstrap, not on first use.
   * Connecting to the stores happens in init(), which the module awaits at bootstrap (and the first call
   * awaits when a script skips it).
   */
  constructor(config: LockServiceConfig) {
    if (typeof config !== 'object' || config === null) {
      throw new LockConfigurationError('options', messages.option.notObject('DistributedLockModule options'));
    }
    this.keyPrefix = validateKeyPrefix(config.keyPrefix);
    this.clock = config.clock ?? systemClock;
    this.defaults = resolveDefaults(config.defaults);
    this.shutdownTimeout =
      config.shutdownTimeout === undefined
        ? DEFAULT_SHUTDOWN_TIMEOUT
        : duration('shutdownTimeout', config.shutdownTimeout, 0);
    this.operationTimeout =
      config.operationTimeout === undefined
        ? DEFAULT_OPERATION_TIMEOUT
        : duration('operationTimeout', config.operationTimeout, 1);
    this.registry = new BackendRegistry(config.backends, this.defaults.backend);
    this.events$ = this.events.asObservable();
    this.held = new HeldLocks(this.clock);
    const events = this.events;
    this.host = {
      clock: this.clock,
      get observed() {
        return events.observed;
      },
      emit: (event) => this.events.next(event),
      forget: (lease) => this.held.forget(lease),
      deferRelease: (release, ms) => this.held.deferRelease(release, ms),
      callStore: (backend, operation, start) => this.callStore(backend, operation, start),
    };
    serviceOpened();
  }

  /**
   * Makes the backends of factories, connects and checks every backend, and listens to their connection
   * state. Throws LockBackendError naming the backend that cannot start. Idempotent; a failed init is tried
   * again by the next call.
   */
  init(): Promise<void> {
    if (this.closing) return Promise.reject(new LockBackendError(this.defaults.backend, messages.serviceClosed()));
    this.ready ??= this.registry
      .init(this.clock, this.operationTimeout, (names, change) => this.onConnection(names, change))
      .then(
        () => void (this.initialised = true),
        (error: unknown) => {
          this.ready = undefined;
          throw error;
        },
      );
    return this.ready;
  }

  /** Waits up to `waitTimeout` for the keys; rejects with LockUnavailableError if they stay busy. */
  async acquire(keys: string | readonly string[], options?: LockCallOptions): Promise<Lock> {
    const resolved = this.resolveOptions(options, 'acquire()');
    return this.take(this.normaliseKeys(keys), resolved, resolved.autoExtend ?? false, options?.signal, false);
  }

  /** One attempt, no waiting: the lock, or null if any key is busy. */
  async tryAcquire(
    keys: string | readonly string[],
    options?: Omit<LockCallOptions, 'waitTimeout'>,
  ): Promise<Lock | null> {
    const resolved = { ...this.resolveOptions(options, 'tryAcquire()'), waitTimeout: 0 };
    try {
      return await this.take(this.normaliseKeys(keys), resolved, resolved.autoExtend ?? false, options?.signal, false);
    } catch (error) {
      if (error instanceof LockUnavailableError) return null;
      throw error;
    }
  }

  /**
   * Runs `fn` under the lock and releases it however `fn` ends. The lock is extended while `fn` runs
   * (autoExtend defaults on here). Busy keys reject with LockUnavailableError unless `onLocked` says otherwise.
   */
  using<T>(
    keys: string | readonly string[],
    fn: UsingFn<T>,
    options?: ScopedOptions & { onLocked?: 'throw' },
  ): Promise<T>;
  using<T>(
    keys: string | readonly string[],
    fn: UsingFn<T>,
    options: ScopedOptions & { onLocked: 'skip' },
  ): Promise<T | undefined>;
  using<T, F>(
    keys: string | readonly string[],
    fn: UsingFn<T>,
    options: ScopedOptions & { onLocked: (context: LockedContext) => F | Promise<F> },
  ): Promise<T | F>;
  async using<T>(
    keys: string | readonly string[],
    fn: UsingFn<T>,
    options?: LockedOptions & LockCallOptions,
  ): Promise<unknown> {
    const resolved = this.resolveOptions(options, 'using()');
    const onLocked = options?.onLocked ?? 'throw';
    return this.runLocked(this.normaliseKeys(keys), fn, { ...resolved, onLocked }, [], options?.signal);
  }

  /** Whether anyone holds `key` right now (or it is promised to a waiter), on the given or default backend. */
  async isLocked(key: string, options?: { readonly backend?: string }): Promise<boolean> {
    const [pair] = this.normaliseKeys(key);
    const name = options?.backend ?? this.defaults.backend;
    if (this.closing) throw new LockBackendError(name, messages.serviceClosed());
    if (!this.initialised) await this.init();
    const backend = this.backendNamed(name);
    return this.callStore(name, 'read a lock', (call) => backend.isLocked(pair!.stored, call));
  }

  /** Asks every registered backend whether its store answers now (for health checks). Never throws. */
  async health(): Promise<BackendHealth[]> {
    if (this.closing) {
      const error = new LockBackendError(this.defaults.backend, messages.serviceClosed());
      return this.registry.names.map((name) => ({ backend: name, kind: 'closed', up: false, error }));
    }
    if (!this.initialised) await this.init().catch(() => undefined);
    return Promise.all(
      this.registry.names.map(async (name): Promise<BackendHealth> => {
        const backend = this.registry.get(name);
        if (!backend) {
          const error = new LockBackendError(name, messages.initFailed(name));
          return { backend: name, kind: 'unknown', up: false, error };
        }
        try {
          // A backend without ping proves it answers by reading a key nobody holds.
          await this.callStore<unknown>(name, 'answer a health check', (call) =>
            backend.ping ? backend.ping(call.signal) : backend.isLocked(`${this.keyPrefix}health-check`, call),
          );
          return { backend: name, kind: backend.kind, up: true };
        } catch (error) {
          return { backend: name, kind: backend.kind, up: false, error: error as LockError };
        }
      }),
    );
  }

  /** The locks this service holds right now (reentrant borrows appear once, under the scope that took them). */
  heldLocks(): HeldLockInfo[] {
    return this.held.all
      .filter((lease) => lease.isHeld)
      .map((lease) => ({
        keys: lease.keys.map((k) => k.key),
        backend: lease.backendName,
        fencingTokens: lease.fencingTokens,
        acquiredAt: lease.acquiredAt,
        expiresAt: lease.expiresAt,
      }));
  }

  /**
   * Gives up every lock this service holds now, reentrant scopes included (locks taken afterwards are not
   * affected): each is reported lost — its signal aborts and onLost runs, so the work under it knows — and
   * released. Store errors are reported as 'failed' events; the ttl frees what could not be released.
   */
  async releaseAll(): Promise<void> {
    const leases = this.held.all;
    for (const lease of leases) lease.lose(messages.lostReleasedByCaller(lease.keys[0]!.key));
    await Promise.allSettled(leases.map((lease) => lease.release()));
  }

  /**
   * Shuts down safely: cancels waiting callers and acquisitions in flight, tells the work under every held
   * lock to stop (its signal aborts), waits up to shutdownTimeout for that work to end and release, reports
   * what is still held then as lost and releases it, and finally closes the backends this service created
   * from factories (instances passed in stay open for their owner). Idempotent.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closing = true;
      this.closed = this.shutdown();
    }
    return this.closed;
  }

  /** @internal Merges per-call or per-decorator options over the module defaults, validating them. */
  resolveOptions(options: LockedOptions | LockCallOptions | undefined, where: string): ResolvedLockOptions {
    const resolved = resolveLockOptions(this.defaults, options, where);
    if (!this.registry.has(resolved.backend)) {
      throw new LockConfigurationError(
        'backend',
        messages.option.unknownBackend(resolved.backend, this.registry.names),
      );
    }
    return resolved;
  }

  /** @internal Validates keys and adds the prefix. */
  normaliseKeys(keys: string | readonly string[]): KeyPair[] {
    return normaliseKeys(keys, this.keyPrefix);
  }

  /** @internal The scoped form shared by using() and @Locked: take, run in scope, release, apply policies. */
  async runLocked<T>(
    keys: readonly KeyPair[],
    fn: UsingFn<T>,
    options: ResolvedLockOptions,
    args: readonly unknown[],
    signal?: AbortSignal,
  ): Promise<unknown> {
    let handle: LockHandle;
    try {
      handle = await this.take(keys, options, options.autoExtend ?? true, signal, true);
    } catch (error) {
      if (error instanceof LockUnavailableError) return whenLocked(options.onLocked, keys, args, error);
      throw error;
    }
    let unwatch = (): void => undefined;
    let result: T;
    let heldUntil: Promise<unknown> | undefined;
    try {
      unwatch = watchLossPolicy(handle, options);
      // Lost before the work began (the store reported it at grant): with 'abort' the work must not run.
      const lostAlready = handle.lossError;
      if (options.onLost === 'abort' && lostAlready) throw lostAlready;
      const outcome: T | HeldUntil<T> = await runInScope(handle, () => fn(handle));
      if (outcome instanceof HeldUntil) {
        heldUntil = outcome.until;
        result = outcome.value;
      } else {
        result = outcome;
      }
    } finally {
      if (heldUntil) {
        // The result is handed back now; its lock lasts until what it still does (a stream) is done.
        void heldUntil.then(() => {
          unwatch();
          return this.releaseQuietly(handle);
        });
      } else {
        unwatch();
        await this.releaseQuietly(handle);
      }
    }
    const lost = handle.lossError;
    if (options.onLost === 'abort' && lost) throw lost;
    return result;
  }

  /**
   * @internal Takes the keys: reentrant ones are borrowed from the call chain's leases in this store scope when
   * they can still be borrowed, the others are acquired as one fresh lease.
   */
  async take(
    keys: readonly KeyPair[],
    options: ResolvedLockOptions,
    autoExtend: boolean,
    signal: AbortSignal | undefined,
    scoped: boolean,
  ): Promise<LockHandle> {
    if (this.closing) throw new LockBackendError(options.backend, messages.serviceClosed());
    signal?.throwIfAborted();
    if (!this.initialised) {
      await this.init();
      signal?.throwIfAborted();
      if (this.closing) throw new LockBackendError(options.backend, messages.serviceClosed());
    }
    const context = this.contextOf(options.backend);
    // Most calls borrow nothing: the set and the list of missing keys are made only when one does.
    let borrowed: Set<LockLease> | undefined;
    let missing: KeyPair[] | undefined;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const lease = options.reentrant ? borrowableInScope(context.storeScope, key) : undefined;
      if (lease) {
        borrowed ??= new Set();
        borrowed.add(lease);
        missing ??= keys.slice(0, i);
      } else {
        missing?.push(key);
      }
    }
    const wanted = missing ?? keys;
    const owned = wanted.length > 0 ? await this.acquireFresh(context, wanted, options, autoExtend, signal) : undefined;
    return new LockHandle(keys, borrowed ? [...borrowed] : [], owned, scoped);
  }

  /** @internal Releases after the work ended; a store error is already reported as a 'failed' event. */
  async releaseQuietly(handle: LockHandle): Promise<void> {
    try {
      await handle.release();
    } catch {
      // Reported through events$ by the lease; the ttl frees the key.
    }
  }

  private acquireFresh(
    context: AcquisitionContext,
    keys: readonly KeyPair[],
    options: ResolvedLockOptions,
    autoExtend: boolean,
    signal: AbortSignal | undefined,
  ): Promise<LockLease> {
    const acquisition = new Acquisition(context, keys, options, autoExtend);
    if (!signal) return this.held.run(acquisition);
    const cancel = (): void => acquisition.cancel(signal.reason);
    signal.addEventListener('abort', cancel, { once: true });
    if (signal.aborted) cancel();
    const stopListening = (): void => signal.removeEventListener('abort', cancel);
    const running = this.held.run(acquisition);
    running.then(stopListening, stopListening);
    return running;
  }

  /** What an acquisition on `name` needs from this service: made once per backend, not per call. */
  private contextOf(name: string): AcquisitionContext {
    const backend = this.backendNamed(name);
    const known = this.contexts.get(name);
    if (known?.backend === backend) return known;
    const isClosed = (): boolean => this.closing;
    const context: AcquisitionContext = {
      backendName: name,
      storeScope: this.registry.scopeOf(name),
      backend,
      clock: this.clock,
      operationTimeout: this.operationTimeout,
      host: this.host,
      emit: (event) => this.events.next(event),
      track: (lease) => this.held.track(lease),
      get closed() {
        return isClosed();
      },
    };
    this.contexts.set(name, context);
    return context;
  }

  private callStore<T>(backend: string, operation: string, start: (call: StoreCall) => Promise<T>): Promise<T> {
    return boundedCall(
      { backend, operation, clock: this.clock, timeoutMs: this.operationTimeout, control: new CallControl() },
      start,
    );
  }

  private backendNamed(name: string): LockBackend {
    const backend = this.registry.get(name);
    if (!backend)
      throw new LockConfigurationError('backend', messages.option.unknownBackend(name, this.registry.names));
    return backend;
  }

  /** A store's connection changed: held locks on it follow their onSuspended policy, or are lost. */
  private onConnection(names: readonly string[], change: ConnectionChange): void {
    const affected = this.held.connectionChanged(names, change);
    for (const name of names) {
      this.events.next({
        type: 'connection',
        keys: affected.filter((l) => l.backendName === name).flatMap((l) => l.keys.map((k) => k.key)),
        backend: name,
        at: this.clock.now(),
        state: change.state,
        ...(change.state === 'reconnected' ? {} : { reason: change.reason }),
      });
    }
  }

  private async shutdown(): Promise<void> {
    // `await locks.close()` in a plain script must not end the process while work is given time to end.
    const letGo = holdProcess();
    try {
      await this.shutDownInOrder();
    } finally {
      serviceClosed();
      letGo();
    }
  }

  private async shutDownInOrder(): Promise<void> {
    await this.held.letGoOfAll(
      new LockBackendError(this.defaults.backend, messages.serviceClosed()),
      this.shutdownTimeout,
    );
    // A backend factory still running makes its backend after this: the registry closes it on arrival.
    await this.registry.close();
    this.events.complete();
  }
}
