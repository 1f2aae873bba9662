import type { LockBackend } from '../backends/lock-backend';
import { validityMs } from './backoff';
import type { ClockTimer, LockClock } from './clock';
import { LockBackendError, LockError, LockLostError } from './errors';
import type { LockEvent } from './events';
import type { KeyPair } from './key';
import { messages } from './messages';
import type { ResolvedLockOptions } from './options';

/** What a lease needs from the service that granted it. */
export interface LeaseHost {
  readonly clock: LockClock;
  emit(event: LockEvent): void;
  /** The lease no longer needs releasing at shutdown. */
  forget(lease: LockLease): void;
}

type LeaseState = 'held' | 'lost' | 'released';

const NO_CANCEL = { signal: new AbortController().signal };

/**
 * One grant from one backend: the keys taken together with one owner token, their fencing tokens, and the
 * timers that keep it honest — the validity timer (the lease is lost once its ttl may have run out without
 * an extension) and the watchdog (extends every ttl/3 until release).
 */
export class LockLease {
  /** Made on first use: most locks end without anyone reading their signal, and a signal is costly to make. */
  private controller: AbortController | undefined;
  private state: LeaseState = 'held';
  private validUntil: number;
  private validityTimer: ClockTimer | undefined;
  private watchdogTimer: ClockTimer | undefined;
  private releasing: Promise<void> | undefined;
  private lostError: LockLostError | undefined;
  /** Callbacks run at the moment of loss (onLost functions, Observable teardown). */
  private readonly lossListeners = new Set<(error: LockLostError) => void>();

  constructor(
    private readonly host: LeaseHost,
    readonly backendName: string,
    private readonly backend: LockBackend,
    readonly keys: readonly KeyPair[],
    readonly owner: string,
    private readonly tokens: readonly bigint[],
    readonly options: ResolvedLockOptions,
    /** When the acquisition round that won started: validity counts from there, not from the reply. */
    roundStartedAt: number,
    /** When the grant arrived. */
    readonly acquiredAt: number,
    readonly autoExtend: boolean,
  ) {
    this.validUntil = this.expiring ? roundStartedAt + Math.max(0, validityMs(options.ttl)) : Infinity;
    this.armValidityTimer(acquiredAt);
    if (autoExtend) this.armWatchdog();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.lostError) this.controller.abort(this.lostError);
    }
    return this.controller.signal;
  }

  get expiresAt(): number {
    return this.validUntil;
  }

  /** Judged by the clock, not only by the validity timer, which a busy event loop can run late. */
  get isHeld(): boolean {
    return this.state === 'held' && this.host.clock.now() < this.validUntil;
  }

  get lossError(): LockLostError | undefined {
    return this.lostError;
  }

  tokenOf(storedKey: string): bigint | undefined {
    const index = this.keys.findIndex((k) => k.stored === storedKey);
    return index < 0 ? undefined : this.tokens[index];
  }

  get fencingTokens(): readonly bigint[] {
    return this.tokens;
  }

  onLoss(listener: (error: LockLostError) => void): () => void {
    this.lossListeners.add(listener);
    return () => this.lossListeners.delete(listener);
  }

  /** Frees the keys in the store (once; later calls share the first). */
  release(): Promise<void> {
    this.releasing ??= this.releaseInStore();
    return this.releasing;
  }

  async extend(ttl: number, automatic: boolean): Promise<void> {
    this.assertExtendable();
    const startedAt = this.host.clock.now();
    let stillOurs: boolean;
    try {
      stillOurs = (
        await Promise.all(
          this.keys.map((k) => this.backend.extend({ key: k.stored, owner: this.owner }, ttl, NO_CANCEL)),
        )
      ).every(Boolean);
    } catch (error) {
      const wrapped = this.backendError('extend', error);
      this.emitFailed('extend', wrapped);
      throw wrapped;
    }
    this.assertExtendable();
    if (!stillOurs) throw this.lose(messages.lostExtendRejected(this.keys[0]!.key));
    if (this.expiring) {
      this.validUntil = startedAt + Math.max(0, validityMs(ttl));
      this.armValidityTimer(this.host.clock.now());
    }
    this.host.emit({ type: 'extended', ...this.eventBase(this.host.clock.now()), ttl, automatic });
  }

  private assertExtendable(): void {
    if (this.lostError) throw this.lostError;
    if (this.state === 'released' || this.releasing) {
      throw new LockLostError(this.keys[0]!.key, messages.extendAfterRelease(this.keys[0]!.key));
    }
  }

  /** Marks the lease lost (once): aborts the signal, tells listeners and observers. Returns the error. */
  lose(reason: string, cause?: unknown): LockLostError {
    if (this.state !== 'held') return this.lostError ?? new LockLostError(this.keys[0]!.key, reason, { cause });
    this.state = 'lost';
    this.stopTimers();
    const error = new LockLostError(this.keys[0]!.key, reason, { cause });
    this.lostError = error;
    this.host.forget(this);
    this.controller?.abort(error);
    const now = this.host.clock.now();
    this.host.emit({ type: 'lost', ...this.eventBase(now), heldMs: now - this.acquiredAt, error });
    for (const listener of this.lossListeners) {
      try {
        listener(error);
      } catch {
        // A listener's failure must not stop the others, nor surface inside a timer where nothing can catch it.
      }
    }
    return error;
  }

  private get expiring(): boolean {
    return this.backend.capabilities.expiring;
  }

  private async releaseInStore(): Promise<void> {
    const wasHeld = this.state === 'held';
    this.stopTimers();
    const releasedAt = this.host.clock.now();
    const heldMs = releasedAt - this.acquiredAt;
    const keepFor = this.options.minHold - heldMs;
    try {
      if (wasHeld && keepFor > 0) {
        await this.keepUntilMinHold(keepFor);
      } else {
        await this.deleteInStore(wasHeld);
      }
    } finally {
      if (this.state === 'held') this.state = 'released';
      this.host.forget(this);
    }
    if (wasHeld) this.host.emit({ type: 'released', ...this.eventBase(releasedAt), heldMs });
  }

  /**
   * minHold: an expiring store is told to let the key run out when minHold is reached; a session-bound store
   * cannot expire keys, so the release itself is put off until then.
   */
  private async keepUntilMinHold(keepFor: number): Promise<void> {
    if (this.expiring) {
      const stillOurs = await this.settleAll(
        'release',
        this.keys.map((k) => this.backend.extend({ key: k.stored, owner: this.owner }, keepFor, NO_CANCEL)),
      );
      if (stillOurs.some((ours) => !ours)) this.lose(messages.lostReleaseRejected(this.keys[0]!.key));
      return;
    }
    this.host.clock.setTimeout(() => {
      this.deleteInStore(false).catch(() => undefined);
    }, keepFor);
  }

  private async deleteInStore(wasHeld: boolean): Promise<void> {
    const results = await this.settleAll(
      'release',
      [...this.keys].reverse().map((k) => this.backend.release({ key: k.stored, owner: this.owner }, NO_CANCEL)),
    );
    if (wasHeld && results.some((held) => !held)) this.lose(messages.lostReleaseRejected(this.keys[0]!.key));
  }

  /** Waits for every store call, so one failing key does not leave the others held; then reports failures. */
  private async settleAll(operation: 'release', calls: Promise<boolean>[]): Promise<boolean[]> {
    const settled = await Promise.allSettled(calls);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) {
      const error = this.backendError(operation, failure.reason);
      this.emitFailed(operation, error);
      throw error;
    }
    return settled.map((s) => (s as PromiseFulfilledResult<boolean>).value);
  }

  private armValidityTimer(now: number): void {
    if (this.validityTimer) this.host.clock.clearTimeout(this.validityTimer);
    if (!Number.isFinite(this.validUntil)) return;
    this.validityTimer = this.host.clock.setTimeout(
      () =>
        this.lose(
          this.autoExtend ? messages.lostExtendFailed(this.keys[0]!.key) : messages.lostExpired(this.keys[0]!.key),
        ),
      this.validUntil - now,
    );
  }

  private armWatchdog(): void {
    if (!this.expiring) return;
    const interval = Math.max(1, Math.floor(this.options.ttl / 3));
    this.watchdogTimer = this.host.clock.setTimeout(() => {
      this.watchdogTimer = undefined;
      this.extend(this.options.ttl, true).then(
        () => this.state === 'held' && this.armWatchdog(),
        (error: unknown) => {
          // A store error is retried at the next tick until the validity timer gives up; a refusal is final.
          if (this.state === 'held' && error instanceof LockBackendError) this.armWatchdog();
        },
      );
    }, interval);
  }

  private stopTimers(): void {
    if (this.validityTimer) this.host.clock.clearTimeout(this.validityTimer);
    if (this.watchdogTimer) this.host.clock.clearTimeout(this.watchdogTimer);
    this.validityTimer = this.watchdogTimer = undefined;
  }

  private backendError(operation: string, error: unknown): LockError {
    if (error instanceof LockError) return error;
    return new LockBackendError(this.backendName, messages.backendFailed(this.backendName, operation), [], {
      cause: error,
    });
  }

  private emitFailed(operation: 'release' | 'extend', error: LockError): void {
    this.host.emit({ type: 'failed', ...this.eventBase(this.host.clock.now()), operation, waitedMs: 0, error });
  }

  private eventBase(at: number): { keys: readonly string[]; backend: string; at: number } {
    return { keys: this.keys.map((k) => k.key), backend: this.backendName, at };
  }
}
