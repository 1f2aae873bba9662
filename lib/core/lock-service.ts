import { setMaxListeners } from 'node:events';
import { Observable, Subject } from 'rxjs';
import type { AcquireOutcome, BusyOutcome, LockBackend } from '../backends/lock-backend';
import { backoffDelay } from './backoff';
import { type LockClock, systemClock } from './clock';
import {
  LockBackendError,
  LockConfigurationError,
  LockError,
  type LockLostError,
  LockUnavailableError,
} from './errors';
import type { LockEvent } from './events';
import { type KeyPair, normaliseKeys, validateKeyPrefix } from './key';
import { LockHandle, type Lock } from './lock';
import { heldInScope, runInScope } from './lock-context';
import { type LeaseHost, LockLease } from './lock-lease';
import { messages } from './messages';
import {
  type LockCallOptions,
  type LockedContext,
  type LockedOptions,
  type OnLockedPolicy,
  type ResolvedLockOptions,
  resolveDefaults,
  resolveLockOptions,
} from './options';
import { newOwnerToken } from './owner-token';
import { type LockBackendProvider, registerBackends } from './backend-registry';

export interface LockServiceConfig {
  /**
   * Named backends; a call without a `backend` option uses `defaults.backend` (default "default").
   * An instance stays yours (never closed for you); a factory `() => backend` is created here and closed
   * with the service.
   */
  readonly backends: Readonly<Record<string, LockBackendProvider>>;
  /** Module-wide option defaults, over the built-in ones. */
  readonly defaults?: LockedOptions;
  /** Put in front of every key in the store, e.g. "myapp:". Not part of `lock.key`. */
  readonly keyPrefix?: string;
  /** Time source for every timer; inject a ManualClock in tests. */
  readonly clock?: LockClock;
}

type UsingFn<T> = (lock: Lock) => T | Promise<T>;
type ScopedOptions = Omit<LockedOptions, 'onLocked'> & LockCallOptions;

/**
 * Takes, holds and releases locks on the registered backends. Owns every policy — waiting, retries with
 * backoff, auto-extension, loss detection, reentrancy, multi-key ordering — so all backends behave alike.
 */
export class LockService {
  /** Every acquisition, release, extension, loss and failure, as it happens. */
  readonly events$: Observable<LockEvent>;
  /** @internal */
  readonly defaults: ResolvedLockOptions;
  private readonly backends: ReadonlyMap<string, LockBackend>;
  private readonly ownedBackends: readonly LockBackend[];
  private readonly keyPrefix: string;
  private readonly clock: LockClock;
  private readonly events = new Subject<LockEvent>();
  private readonly active = new Set<LockLease>();
  private readonly closing = unlimitedAbortController();
  private closed: Promise<void> | undefined;
  private readonly host: LeaseHost;

  /** Validates the whole configuration at once: a bad option fails here, at bootstrap, not on first use. */
  constructor(config: LockServiceConfig) {
    if (typeof config !== 'object' || config === null) {
      throw new LockConfigurationError('options', messages.option.notObject('DistributedLockModule options'));
    }
    this.keyPrefix = validateKeyPrefix(config.keyPrefix);
    this.clock = config.clock ?? systemClock;
    this.defaults = resolveDefaults(config.defaults);
    // Everything else is checked first, so no backend factory opens a connection for a service that fails.
    const registered = registerBackends(config.backends, this.defaults.backend);
    this.backends = registered.byName;
    this.ownedBackends = registered.owned;
    this.events$ = this.events.asObservable();
    this.host = {
      clock: this.clock,
      emit: (event) => this.events.next(event),
      forget: (lease) => this.active.delete(lease),
    };
  }

  /** Waits up to `waitTimeout` for the keys; rejects with LockUnavailableError if they stay busy. */
  async acquire(keys: string | readonly string[], options?: LockCallOptions): Promise<Lock> {
    const resolved = this.resolveOptions(options, 'acquire');
    return this.take(this.normaliseKeys(keys), resolved, resolved.autoExtend ?? false, options?.signal);
  }

  /** One attempt, no waiting: the lock, or null if any key is busy. */
  async tryAcquire(
    keys: string | readonly string[],
    options?: Omit<LockCallOptions, 'waitTimeout'>,
  ): Promise<Lock | null> {
    const resolved = { ...this.resolveOptions(options, 'tryAcquire'), waitTimeout: 0 };
    try {
      return await this.take(this.normaliseKeys(keys), resolved, resolved.autoExtend ?? false, options?.signal);
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
    const resolved = this.resolveOptions(options, 'using');
    const onLocked = options?.onLocked ?? 'throw';
    return this.runLocked(this.normaliseKeys(keys), fn, { ...resolved, onLocked }, [], options?.signal);
  }

  /** Whether anyone holds `key` right now, on the given or default backend. A snapshot. */
  async isLocked(key: string, options?: { readonly backend?: string }): Promise<boolean> {
    const [pair] = this.normaliseKeys(key);
    const name = options?.backend ?? this.defaults.backend;
    const backend = this.backendNamed(name, 'backend');
    try {
      return await backend.isLocked(pair!.stored, { signal: this.closing.signal });
    } catch (error) {
      throw this.wrapBackendError(name, 'read a lock', error);
    }
  }

  /**
   * Releases every lock this service holds now, reentrant scopes included (locks taken afterwards are not affected).
   * Store errors are reported as 'failed' events; the ttl frees what could not be released.
   */
  async releaseAll(): Promise<void> {
    await Promise.allSettled([...this.active].map((lease) => lease.release()));
  }

  /**
   * Stops waiting callers, releases every lock still held, then closes the backends this service created
   * from factories (instances passed in stay open for their owner). Idempotent.
   */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  /** @internal Merges per-call or per-decorator options over the module defaults, validating them. */
  resolveOptions(options: LockedOptions | LockCallOptions | undefined, where: string): ResolvedLockOptions {
    const resolved = resolveLockOptions(this.defaults, options, where);
    if (resolved.backend !== this.defaults.backend) this.checkBackendName(resolved.backend, 'backend');
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
      handle = await this.take(keys, options, options.autoExtend ?? true, signal);
    } catch (error) {
      if (error instanceof LockUnavailableError) return this.whenLocked(options.onLocked, keys, args, error);
      throw error;
    }
    const unwatch = this.watchLoss(handle, options);
    let result: T;
    try {
      result = await runInScope(handle, () => fn(handle));
    } finally {
      unwatch();
      await this.releaseAfterWork(handle);
    }
    const lost = handle.lossError;
    if (options.onLost === 'abort' && lost) throw lost;
    return result;
  }

  /** @internal The Observable form of runLocked: the lock is taken on subscribe and held until the stream ends. */
  observeLocked<T>(
    keys: readonly KeyPair[],
    source: () => Observable<T>,
    options: ResolvedLockOptions,
    args: readonly unknown[],
  ): Observable<T> {
    return new Observable<T>((subscriber) => {
      const cancelWait = new AbortController();
      let handle: LockHandle | undefined;
      let teardown: (() => void) | undefined;
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        teardown?.();
        if (handle) void this.releaseAfterWork(handle);
      };
      this.take(keys, options, options.autoExtend ?? true, cancelWait.signal).then(
        (taken) => {
          // Unsubscribed while the store was granting: nobody will use the lock, give it straight back.
          if (finished || subscriber.closed) return void this.releaseAfterWork(taken);
          handle = taken;
          const unwatch = this.watchLoss(taken, options);
          const stopOnLoss =
            options.onLost === 'abort' ? onLoss(taken, (error) => subscriber.error(error)) : () => undefined;
          teardown = () => {
            unwatch();
            stopOnLoss();
          };
          try {
            const inner = runInScope(taken, () => source().subscribe(subscriber));
            teardown = () => {
              unwatch();
              stopOnLoss();
              inner.unsubscribe();
            };
          } catch (error) {
            subscriber.error(error);
          }
          if (subscriber.closed) finish();
        },
        (error: unknown) => {
          if (finished || subscriber.closed) return;
          if (!(error instanceof LockUnavailableError)) return subscriber.error(error);
          this.whenLocked(options.onLocked, keys, args, error).then(
            (fallback) => {
              if (options.onLocked !== 'skip') subscriber.next(fallback as T);
              subscriber.complete();
            },
            (failure: unknown) => subscriber.error(failure),
          );
        },
      );
      return () => {
        cancelWait.abort();
        finish();
      };
    });
  }

  private async take(
    keys: readonly KeyPair[],
    options: ResolvedLockOptions,
    autoExtend: boolean,
    signal: AbortSignal | undefined,
  ): Promise<LockHandle> {
    if (this.closed) throw new LockBackendError(options.backend, messages.serviceClosed());
    signal?.throwIfAborted();
    const backend = this.backendNamed(options.backend, 'backend');
    const reused = new Set<LockLease>();
    const missing: KeyPair[] = [];
    for (const key of keys) {
      const lease = options.reentrant ? heldInScope(options.backend, key) : undefined;
      if (lease?.isHeld) reused.add(lease);
      else missing.push(key);
    }
    const owned = missing.length > 0 ? await this.grant(backend, missing, options, autoExtend, signal) : undefined;
    return new LockHandle(keys, [...reused], owned);
  }

  /**
   * Rounds of one attempt per key in sorted order. A busy key ends the round: the keys taken so far are given
   * back (all or none, and no holding while waiting) and the round is retried once the busy key may be free.
   * Places in line a queueing store kept for us are withdrawn however the wait ends without the lock.
   */
  private async grant(
    backend: LockBackend,
    keys: readonly KeyPair[],
    options: ResolvedLockOptions,
    autoExtend: boolean,
    signal: AbortSignal | undefined,
  ): Promise<LockLease> {
    const name = options.backend;
    const owner = newOwnerToken();
    const startedAt = this.clock.now();
    const deadline = startedAt + options.waitTimeout;
    const waitSignal = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
    const lossRelay = new LossRelay();
    const queued = new Map<string, KeyPair>();
    try {
      for (let attempt = 0; ; attempt++) {
        const roundStartedAt = attempt === 0 ? startedAt : this.clock.now();
        const round = await this.attemptRound(backend, name, keys, owner, options, lossRelay.report);
        if (round.tokens) {
          queued.clear();
          return await this.newLease(backend, keys, owner, round.tokens, options, roundStartedAt, startedAt, {
            autoExtend,
            lossRelay,
          });
        }
        if (round.outcome.queued) queued.set(round.busy.stored, round.busy);
        const remaining = deadline - this.clock.now();
        waitSignal.throwIfAborted();
        if (remaining <= 0) throw this.failAcquire(keys, name, startedAt, round.busy, round.outcome);
        const pause = Math.min(remaining, backoffDelay(options.retry, attempt), hint(round.outcome.retryAfterMs));
        try {
          await backend.waitForRelease({ key: round.busy.stored, owner, timeoutMs: pause, signal: waitSignal });
        } catch (error) {
          throw this.wrapBackendError(name, 'wait for a lock', error);
        }
        waitSignal.throwIfAborted();
      }
    } finally {
      if (queued.size > 0) await this.giveBack(backend, [...queued.values()], owner);
    }
  }

  /** Wraps a grant in a lease, announces it, and hands it back at once if shutdown began meanwhile. */
  private async newLease(
    backend: LockBackend,
    keys: readonly KeyPair[],
    owner: string,
    tokens: bigint[],
    options: ResolvedLockOptions,
    roundStartedAt: number,
    startedAt: number,
    { autoExtend, lossRelay }: { autoExtend: boolean; lossRelay: LossRelay },
  ): Promise<LockLease> {
    const name = options.backend;
    const now = this.clock.now();
    const lease = new LockLease(
      this.host,
      name,
      backend,
      keys,
      owner,
      tokens,
      options,
      roundStartedAt,
      now,
      autoExtend,
    );
    this.active.add(lease);
    this.events.next({
      type: 'acquired',
      keys: keys.map((k) => k.key),
      backend: name,
      at: now,
      fencingTokens: tokens,
      waitedMs: now - startedAt,
    });
    lossRelay.attach(lease);
    if (this.closed) {
      // Shutdown began while the store was granting: give the key straight back.
      await lease.release().catch(() => undefined);
      throw new LockBackendError(name, messages.serviceClosed());
    }
    return lease;
  }

  private async attemptRound(
    backend: LockBackend,
    name: string,
    keys: readonly KeyPair[],
    owner: string,
    options: ResolvedLockOptions,
    onLost: (reason: string) => void,
  ): Promise<{ tokens: bigint[] } | { tokens?: undefined; busy: KeyPair; outcome: BusyOutcome }> {
    const tokens: bigint[] = [];
    const keepPlace = options.waitTimeout > 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      let outcome: AcquireOutcome;
      try {
        outcome = await backend.acquire({
          key: key.stored,
          owner,
          ttl: options.ttl,
          keepPlace,
          onLost,
          signal: this.closing.signal,
        });
      } catch (error) {
        await this.giveBack(backend, keys.slice(0, i), owner);
        const wrapped = this.wrapBackendError(name, 'acquire a lock', error);
        this.events.next({
          type: 'failed',
          keys: keys.map((k) => k.key),
          backend: name,
          at: this.clock.now(),
          operation: 'acquire',
          waitedMs: 0,
          error: wrapped,
        });
        throw wrapped;
      }
      if (!outcome.acquired) {
        await this.giveBack(backend, keys.slice(0, i), owner);
        return { busy: key, outcome };
      }
      tokens.push(outcome.fencingToken);
    }
    return { tokens };
  }

  /** Gives back keys taken earlier in a round that could not complete. Best effort: their ttl is the backstop. */
  private async giveBack(backend: LockBackend, keys: readonly KeyPair[], owner: string): Promise<void> {
    await Promise.allSettled(
      keys.map((k) => backend.release({ key: k.stored, owner }, { signal: this.closing.signal })),
    );
  }

  private failAcquire(
    keys: readonly KeyPair[],
    backend: string,
    startedAt: number,
    busy: KeyPair,
    outcome: BusyOutcome,
  ): LockUnavailableError {
    const now = this.clock.now();
    const waitedMs = now - startedAt;
    const error = new LockUnavailableError(
      busy.key,
      waitedMs,
      outcome.retryAfterMs,
      messages.unavailable(busy.key, waitedMs),
    );
    this.events.next({
      type: 'failed',
      keys: keys.map((k) => k.key),
      backend,
      at: now,
      operation: 'acquire',
      waitedMs,
      error,
    });
    return error;
  }

  private async whenLocked(
    policy: OnLockedPolicy,
    keys: readonly KeyPair[],
    args: readonly unknown[],
    error: LockUnavailableError,
  ): Promise<unknown> {
    if (policy === 'throw') throw error;
    if (policy === 'skip') return undefined;
    return policy({ keys: keys.map((k) => k.key), args, error });
  }

  /** Calls an onLost function at the moment of loss; returns what stops watching. */
  private watchLoss(handle: LockHandle, options: ResolvedLockOptions): () => void {
    const policy = options.onLost;
    if (typeof policy !== 'function') return () => undefined;
    const stops = handle.leases.map((lease) => lease.onLoss((error) => policy({ lock: handle, error })));
    return () => stops.forEach((stop) => stop());
  }

  /** Releases after the work ended; a store error is already reported as a 'failed' event and the ttl frees the key. */
  private async releaseAfterWork(handle: LockHandle): Promise<void> {
    try {
      await handle.release();
    } catch {
      // Reported through events$ by the lease.
    }
  }

  private async shutdown(): Promise<void> {
    this.closing.abort(new LockBackendError(this.defaults.backend, messages.serviceClosed()));
    await this.releaseAll();
    await Promise.allSettled(this.ownedBackends.map((backend) => backend.close()));
    this.events.complete();
  }

  private backendNamed(name: string, option: string): LockBackend {
    const backend = this.backends.get(name);
    if (!backend)
      throw new LockConfigurationError(option, messages.option.unknownBackend(name, [...this.backends.keys()]));
    return backend;
  }

  private checkBackendName(name: string, option: string): void {
    this.backendNamed(name, option);
  }

  private wrapBackendError(name: string, operation: string, error: unknown): LockError {
    if (error instanceof LockError) return error;
    return new LockBackendError(name, messages.backendFailed(name, operation), [], { cause: error });
  }
}

/** Every waiting call listens to the shutdown signal; more than ten is normal, not a leak. */
function unlimitedAbortController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/**
 * Passes a loss the backend reports (session expired, connection dropped) to the lease — also when the report
 * arrives while the grant is still on its way, before the lease exists.
 */
class LossRelay {
  private lease: LockLease | undefined;
  private early: string | undefined;

  readonly report = (reason: string): void => {
    if (this.lease) this.lease.lose(messages.lostByBackend(this.lease.keys[0]!.key, reason));
    else this.early ??= reason;
  };

  attach(lease: LockLease): void {
    this.lease = lease;
    if (this.early !== undefined) lease.lose(messages.lostByBackend(lease.keys[0]!.key, this.early));
  }
}

function hint(retryAfterMs: number | undefined): number {
  return retryAfterMs === undefined ? Infinity : Math.max(1, retryAfterMs);
}

/** Calls `listener` with the first loss among the handle's leases (at once if one is already lost). */
function onLoss(handle: LockHandle, listener: (error: LockLostError) => void): () => void {
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
