import type { LockBackend, StoreCall } from '../backends/lock-backend';
import { validityMs } from './backoff';
import type { ClockTimer, LockClock } from './clock';
import { LockBackendError, type LockError, LockLostError } from './errors';
import type { LockEvent } from './events';
import type { KeyPair } from './key';
import { messages } from './messages';
import type { ResolvedLockOptions } from './options';

/** What a lease needs from the service that granted it. */
export interface LeaseHost {
  readonly clock: LockClock;
  /** Whether anyone listens to events$: an event nobody receives is not worth building. */
  readonly observed: boolean;
  emit(event: LockEvent): void;
  /** The lease no longer needs releasing at shutdown. */
  forget(lease: LockLease): void;
  /** Runs a release later (minHold on a session-bound store), or at shutdown if that comes first. */
  deferRelease(release: () => Promise<void>, ms: number): void;
  /** Runs one store call bounded by the service's operationTimeout; failures come back as LockError. */
  callStore<T>(backendName: string, operation: string, start: (call: StoreCall) => Promise<T>): Promise<T>;
}

/** Everything one grant is made of. */
export interface LeaseGrant {
  readonly host: LeaseHost;
  readonly backendName: string;
  /** One LockService's view of one store: reentrancy borrows only within it. */
  readonly storeScope: string;
  readonly backend: LockBackend;
  readonly keys: readonly KeyPair[];
  readonly owner: string;
  readonly tokens: readonly bigint[];
  readonly options: ResolvedLockOptions;
  /** When the acquisition round that won started: validity counts from there, not from the reply. */
  readonly roundStartedAt: number;
  /** When the grant arrived. */
  readonly acquiredAt: number;
  readonly autoExtend: boolean;
  /** The store granted less than the ttl, trusted this long from roundStartedAt: confirmed at once (extend). */
  readonly provisionalForMs?: number | undefined;
}

type LeaseState = 'held' | 'lost' | 'released';

/**
 * One grant from one backend: the keys taken together with one owner token, their fencing tokens, and the
 * timers that keep it honest — the validity timer (the lease is lost once its ttl may have run out without
 * an extension, or once a suspended store can no longer vouch for it) and the watchdog (extends every
 * ttl/3 until release, following the latest ttl).
 */
export class LockLease {
  readonly backendName: string;
  readonly storeScope: string;
  readonly keys: readonly KeyPair[];
  readonly owner: string;
  readonly options: ResolvedLockOptions;
  readonly acquiredAt: number;
  readonly autoExtend: boolean;
  private readonly host: LeaseHost;
  private readonly backend: LockBackend;
  private readonly tokens: readonly bigint[];
  /** Made on first use: most locks end without anyone reading their signal, and a signal is costly to make. */
  private controller: AbortController | undefined;
  private state: LeaseState = 'held';
  /** The ttl of the last grant or extension: what the watchdog extends by, every third of it. */
  private ttl: number;
  /** How long the store vouches for the lock by its ttl. Infinity for session-bound stores. */
  private ttlValidUntil: number;
  /** While the store is suspended: how long it can still vouch for the lock. Infinity otherwise. */
  private suspendedUntil = Infinity;
  private validityTimer: ClockTimer | undefined;
  private watchdogTimer: ClockTimer | undefined;
  private releasing: Promise<void> | undefined;
  /** The release got past the reentrant work still running under the lease: nothing is left to protect. */
  private workEnded = false;
  private lostError: LockLostError | undefined;
  /** Set when shutdown told the work to stop: the signal aborts with it, and nobody may borrow the lease. */
  private stopReason: LockLostError | undefined;
  /** Callbacks run at the moment of loss (onLost functions, Observable teardown). */
  private lossListeners: Set<(error: LockLostError) => void> | undefined;
  /** Reentrant work running under this lease (using/@Locked in the same chain): release waits for it. */
  private scopedBorrowers = 0;
  private borrowersDone: (() => void) | undefined;
  /** Handles borrowed with acquire() in the chain and not released yet: their signal aborts at release. */
  private looseBorrowers = 0;
  /** Extensions sent and not answered, by sequence: a reply must not outlive what a later one may have set. */
  private extensions: Map<number, { readonly bound: number; readonly done: Promise<unknown> }> | undefined;
  private extensionSeq = 0;
  private appliedExtension = 0;

  constructor(grant: LeaseGrant) {
    this.host = grant.host;
    this.backendName = grant.backendName;
    this.storeScope = grant.storeScope;
    this.backend = grant.backend;
    this.keys = grant.keys;
    this.owner = grant.owner;
    this.tokens = grant.tokens;
    this.options = grant.options;
    this.acquiredAt = grant.acquiredAt;
    this.autoExtend = grant.autoExtend;
    this.ttl = grant.options.ttl;
    this.ttlValidUntil = this.expiring ? grant.roundStartedAt + validityMs(this.ttl) : Infinity;
    const provisional = this.expiring ? grant.provisionalForMs : undefined;
    if (provisional !== undefined) {
      this.ttlValidUntil = Math.min(this.ttlValidUntil, grant.roundStartedAt + provisional);
    }
    this.armValidityTimer();
    if (provisional !== undefined) this.confirm();
    else if (this.autoExtend) this.armWatchdog();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      const reason = this.lostError ?? this.stopReason;
      if (reason) this.controller.abort(reason);
    }
    return this.controller.signal;
  }

  get expiresAt(): number {
    return Math.min(this.ttlValidUntil, this.suspendedUntil);
  }

  /** Judged by the clock, not only by the validity timer, which a busy event loop can run late. */
  get isHeld(): boolean {
    return this.state === 'held' && this.host.clock.now() < this.expiresAt;
  }

  /** Whether reentrant work may share this lease: held, and nobody is letting it go. */
  get isBorrowable(): boolean {
    return this.isHeld && this.releasing === undefined && this.stopReason === undefined;
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
    const listeners = (this.lossListeners ??= new Set());
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  /**
   * Lends the lease to reentrant work in the same call chain. Scoped work (using, @Locked) is waited for before
   * the lease is released, even when it outlives the scope that took the lease (a promise nobody awaited);
   * a loose handle (acquire() in the chain) is told by its signal instead. Returns what gives the loan back.
   */
  lend(scoped: boolean): () => void {
    if (scoped) this.scopedBorrowers++;
    else this.looseBorrowers++;
    let returned = false;
    return () => {
      if (returned) return;
      returned = true;
      if (!scoped) return void this.looseBorrowers--;
      if (--this.scopedBorrowers === 0) this.borrowersDone?.();
    };
  }

  /** Frees the keys in the store (once; later calls share the first). */
  release(): Promise<void> {
    this.releasing ??= this.releaseInStore();
    return this.releasing;
  }

  async extend(ttl: number, automatic: boolean): Promise<void> {
    this.assertExtendable();
    const startedAt = this.host.clock.now();
    const seq = ++this.extensionSeq;
    const bound = startedAt + validityMs(ttl);
    // The store may apply this one after any earlier one: trust no more than it sets, from now on.
    if (this.expiring && bound < this.ttlValidUntil) {
      this.ttlValidUntil = bound;
      this.armValidityTimer();
    }
    const answering = this.onEveryKey('extend', 'extend a lock', (key, call) =>
      this.backend.extend({ key: key.stored, owner: this.owner }, ttl, call),
    );
    const extensions = (this.extensions ??= new Map());
    extensions.set(seq, { bound, done: answering.catch(() => undefined) });
    let allOurs: boolean;
    try {
      allOurs = await answering;
    } finally {
      extensions.delete(seq);
    }
    this.assertExtendable();
    if (!allOurs) throw this.lose(messages.lostExtendRejected(this.keys[0]!.key));
    // The watchdog extends by the ttl it read when it started, so only an explicit extension sets a new one.
    if (!automatic) this.ttl = ttl;
    // A reply to an older extension says nothing about what a newer one (answered or not) set.
    if (this.expiring && seq > this.appliedExtension) {
      this.appliedExtension = seq;
      let trusted = bound;
      for (const [other, pending] of extensions) if (other > seq) trusted = Math.min(trusted, pending.bound);
      this.ttlValidUntil = trusted;
      this.armValidityTimer();
    }
    // An explicit extension changes the cadence: the next automatic one comes a third of the new ttl later.
    if (!automatic && this.autoExtend && this.state === 'held') this.armWatchdog();
    if (this.host.observed) {
      this.host.emit({ type: 'extended', ...this.eventBase(this.host.clock.now()), ttl, automatic });
    }
  }

  /** Shutdown: tell the work to stop (the signal aborts) and let nobody borrow the lease any more. */
  stopForShutdown(): void {
    if (this.state !== 'held' || this.stopReason) return;
    this.stopReason = new LockLostError(this.keys[0]!.key, messages.shuttingDown(this.keys[0]!.key));
    this.controller?.abort(this.stopReason);
  }

  /** The store cannot be reached: keep the lease only as long as the store can vouch for it, if at all. */
  suspend(reason: string, validForMs: number | undefined): void {
    // Being released and past its reentrant work: nothing is left to protect (as in loseConnection).
    if (this.state !== 'held' || this.workEnded) return;
    const cannotVouch = validForMs === undefined && !this.expiring;
    if (this.options.onSuspended === 'abort' || cannotVouch) {
      this.lose(messages.lostSuspended(this.keys[0]!.key, reason));
      return;
    }
    if (validForMs === undefined) return; // the ttl bounds it already
    this.suspendedUntil = Math.min(this.suspendedUntil, this.host.clock.now() + Math.max(0, validForMs));
    this.armValidityTimer();
  }

  /** The store answers again and vouches for the locks it held. */
  resume(): void {
    if (this.state !== 'held' || this.suspendedUntil === Infinity) return;
    this.suspendedUntil = Infinity;
    this.armValidityTimer();
  }

  private assertExtendable(): void {
    if (this.lostError) throw this.lostError;
    if (this.state === 'released' || this.releasing) {
      throw new LockLostError(this.keys[0]!.key, messages.extendAfterRelease(this.keys[0]!.key));
    }
  }

  /**
   * The store ended the session or the connection: lost, unless the lease is being let go and the reentrant
   * work under it has ended (while the release waits for that work, the work must learn of the loss).
   */
  loseConnection(reason: string): void {
    if (!this.workEnded) this.lose(reason);
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
    if (this.host.observed) {
      const now = this.host.clock.now();
      this.host.emit({ type: 'lost', ...this.eventBase(now), heldMs: now - this.acquiredAt, error });
    }
    for (const listener of this.lossListeners ?? []) {
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
    // Always yields first, even with no borrower to wait for: `releasing` must be set before anything below
    // can run user code (the signal's abort listeners), or a listener calling release() or extend() would not
    // see the release under way.
    await this.borrowersToFinish();
    this.workEnded = true;
    const wasHeld = this.state === 'held';
    if (wasHeld && this.looseBorrowers > 0) {
      // Handles borrowed with acquire() and never released: their holders learn it from the signal.
      this.controller ??= new AbortController();
      this.controller.abort(new LockLostError(this.keys[0]!.key, messages.releasedUnderBorrower(this.keys[0]!.key)));
    }
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
    if (wasHeld && this.host.observed) this.host.emit({ type: 'released', ...this.eventBase(releasedAt), heldMs });
  }

  /**
   * minHold: an expiring store is told to let the key run out when minHold is reached; a session-bound store
   * cannot expire keys, so the release itself is put off until then.
   */
  private async keepUntilMinHold(keepFor: number): Promise<void> {
    if (this.expiring) {
      // An extension still on its way would land after this one and stretch minHold to a whole ttl. (A delete
      // needs no such wait: an extension arriving after it finds no key of ours.)
      if (this.extensions?.size) await Promise.all([...this.extensions.values()].map((e) => e.done));
      const stillOurs = await this.onEveryKey('release', 'release a lock', (key, call) =>
        this.backend.extend({ key: key.stored, owner: this.owner }, keepFor, call),
      );
      if (!stillOurs) this.lose(messages.lostReleaseRejected(this.keys[0]!.key));
      return;
    }
    this.host.deferRelease(() => this.deleteInStore(false), keepFor);
  }

  private async deleteInStore(wasHeld: boolean): Promise<void> {
    const allHeld = await this.onEveryKey(
      'release',
      'release a lock',
      (key, call) => this.backend.release({ key: key.stored, owner: this.owner }, call),
      true,
    );
    if (wasHeld && !allHeld) this.lose(messages.lostReleaseRejected(this.keys[0]!.key));
  }

  /**
   * One store call per key (in reverse order if asked), all at once. Waits for every one, so one failing key
   * does not leave the others held; then reports the first failure. Resolves whether every key answered true.
   */
  private async onEveryKey(
    operation: 'release' | 'extend',
    description: string,
    call: (key: KeyPair, control: StoreCall) => Promise<boolean>,
    reverse = false,
  ): Promise<boolean> {
    const keys = this.keys;
    const ask = (key: KeyPair): Promise<boolean> =>
      this.host.callStore(this.backendName, description, (control) => call(key, control));
    if (keys.length === 1) {
      // One call needs no allSettled: its own answer or failure is the result.
      try {
        return await ask(keys[0]!);
      } catch (error) {
        throw this.storeFailed(operation, error);
      }
    }
    const settled = await Promise.allSettled((reverse ? [...keys].reverse() : keys).map(ask));
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw this.storeFailed(operation, failure.reason);
    return settled.every((s) => (s as PromiseFulfilledResult<boolean>).value);
  }

  /** Reports a store failure of a release or extension; returns it, to be thrown. */
  private storeFailed(operation: 'release' | 'extend', reason: unknown): LockError {
    const error = reason as LockError;
    this.host.emit({ type: 'failed', ...this.eventBase(this.host.clock.now()), operation, waitedMs: 0, error });
    return error;
  }

  private armValidityTimer(): void {
    if (this.validityTimer) this.host.clock.clearTimeout(this.validityTimer);
    this.validityTimer = undefined;
    const until = this.expiresAt;
    if (!Number.isFinite(until)) return;
    const suspended = this.suspendedUntil <= this.ttlValidUntil;
    this.validityTimer = this.host.clock.setTimeout(
      () => {
        const key = this.keys[0]!.key;
        if (suspended) this.lose(messages.lostSuspended(key, 'it did not come back in time'));
        else this.lose(this.autoExtend ? messages.lostExtendFailed(key) : messages.lostExpired(key));
      },
      Math.max(0, until - this.host.clock.now()),
    );
  }

  /** Reentrant work still running under this lease: the key stays ours until it ends. */
  private borrowersToFinish(): Promise<void> {
    if (this.scopedBorrowers === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.borrowersDone = () => {
        this.borrowersDone = undefined;
        resolve();
      };
    });
  }

  /**
   * A provisional grant (see AcquiredOutcome.provisionalForMs) extended to the full ttl at once. Until that
   * answers, the validity timer runs on the short provisional bound: an extension that fails or comes too late
   * loses the lock, like any failed extension. Then the watchdog takes over, if the lock has one.
   */
  private confirm(): void {
    this.extend(this.ttl, true).then(
      () => {
        if (this.autoExtend && this.state === 'held' && !this.releasing && !this.watchdogTimer) this.armWatchdog();
      },
      // A refusal lost the lock already (extend); a store error leaves it to the validity timer.
      () => undefined,
    );
  }

  private armWatchdog(): void {
    if (this.watchdogTimer) this.host.clock.clearTimeout(this.watchdogTimer);
    this.watchdogTimer = undefined;
    if (!this.expiring) return;
    const ttl = this.ttl;
    this.watchdogTimer = this.host.clock.setTimeout(
      () => {
        this.watchdogTimer = undefined;
        this.extend(ttl, true).then(
          () => this.state === 'held' && !this.releasing && !this.watchdogTimer && this.armWatchdog(),
          (error: unknown) => {
            // A store error is retried at the next tick until the validity timer gives up; a refusal is final.
            if (this.state === 'held' && !this.watchdogTimer && error instanceof LockBackendError) this.armWatchdog();
          },
        );
      },
      Math.max(1, Math.floor(ttl / 3)),
    );
  }

  private stopTimers(): void {
    if (this.validityTimer) this.host.clock.clearTimeout(this.validityTimer);
    if (this.watchdogTimer) this.host.clock.clearTimeout(this.watchdogTimer);
    this.validityTimer = this.watchdogTimer = undefined;
  }

  private eventBase(at: number): { keys: readonly string[]; backend: string; at: number } {
    return { keys: this.keys.map((k) => k.key), backend: this.backendName, at };
  }
}
