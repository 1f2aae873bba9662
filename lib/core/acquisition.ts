import type {
  AcquireOutcome,
  AcquireRequest,
  BusyOutcome,
  ConnectionChange,
  LockBackend,
} from '../backends/lock-backend';
import { backoffDelay } from './backoff';
import type { LockClock } from './clock';
import { LockBackendClosedError, LockBackendError, LockError, LockUnavailableError } from './errors';
import type { LockEvent } from './events';
import type { KeyPair } from './key';
import { type LeaseHost, LockLease } from './lock-lease';
import { messages } from './messages';
import { MAX_DURATION_MS, type ResolvedLockOptions } from './options';
import { newOwnerToken } from './owner-token';
import { holdProcess } from './process-hold';
import { boundedCall, CallControl } from './store-call';

/** What an acquisition needs from its service and store. */
export interface AcquisitionContext {
  readonly backendName: string;
  readonly storeScope: string;
  readonly backend: LockBackend;
  readonly clock: LockClock;
  readonly operationTimeout: number;
  readonly host: LeaseHost;
  emit(event: LockEvent): void;
  /** A fresh lease is now held; the service releases it at shutdown if nobody else does. */
  track(lease: LockLease): void;
  /** Shutdown began: a grant arriving now is given straight back. */
  readonly closed: boolean;
}

/** Who keeps the acquisitions in flight: told when one is over, its `cleanup` set. */
export interface AcquisitionTracker {
  finished(acquisition: Acquisition): void;
  /** A give-back started after the acquisition was over (a late grant): shutdown waits for it too. */
  givingBack(giveBack: Promise<void>): void;
}

/** The longest random pause after a round that gave back a handed key (see run): a round takes ms, not more. */
const MAX_SWAP_PAUSE_MS = 100;

type RoundResult =
  | { readonly tokens: bigint[]; readonly provisionalForMs: number | undefined }
  | { readonly busy: KeyPair; readonly outcome: BusyOutcome; readonly gaveBackHanded: boolean };

/** One acquire attempt: the request the backend sees is also the call's cancellation. */
class AcquireCall extends CallControl implements AcquireRequest {
  constructor(
    readonly key: string,
    readonly owner: string,
    readonly ttl: number,
    readonly keepPlace: boolean,
    readonly onLost: (reason: string) => void,
  ) {
    super();
  }
}

/**
 * One call's way to a lock: rounds of one attempt per key in sorted order. A busy key ends the round: the keys
 * taken so far are given back (all or none, no holding while waiting) and the round is tried again once the
 * busy key may be free, until waitTimeout. A store error during a wait with time left is retried with backoff.
 * Places in line a queueing store kept are withdrawn for every key but the one waited on, and for all of them
 * however the wait ends without the lock. Cancellable at any point (caller signal, shutdown).
 */
export class Acquisition {
  private readonly owner = newOwnerToken();
  private readonly startedAt: number;
  private readonly deadline: number;
  private readonly lossRelay = new LossRelay();
  /** Places in line kept by a queueing store; made on the first one (most acquisitions never queue). */
  private queued: Map<string, KeyPair> | undefined;
  private cancelReason: unknown;
  private cancelled = false;
  /** The store call or wait in progress: what cancel() aborts. */
  private current: CallControl | undefined;
  /**
   * Keys whose acquire may have been applied by the store without our knowing it for sure: the call failed,
   * timed out, or was answered after we stopped waiting. Given back (by owner) if this acquisition ends
   * without its lease; never while it runs, since a later attempt with the same owner may hold them rightly.
   */
  private uncertain: Map<string, KeyPair> | undefined;
  private lease: LockLease | undefined;
  private settled = false;
  private tracker: AcquisitionTracker | undefined;
  /**
   * Settles once what the acquisition left in the store (places in line, uncertain grants) is given back;
   * undefined while it runs and when it left nothing.
   */
  cleanup: Promise<void> | undefined;
  /** The key the last round found busy: the next round asks for it first. */
  private awaited: KeyPair | undefined;
  /** A connection change made the grants of the current round untrustworthy. */
  private roundSpoiled: string | undefined;

  get backendName(): string {
    return this.context.backendName;
  }

  constructor(
    private readonly context: AcquisitionContext,
    private readonly keys: readonly KeyPair[],
    private readonly options: ResolvedLockOptions,
    private readonly autoExtend: boolean,
  ) {
    this.startedAt = context.clock.now();
    this.deadline = this.startedAt + options.waitTimeout;
  }

  /** Stops the acquisition: the pending store call or wait ends at once and `run` rejects with `reason`. */
  cancel(reason: unknown): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.cancelReason = reason;
    this.current?.abort(reason);
  }

  /**
   * The store's connection changed while this acquisition runs: a grant of the round in flight may come from
   * a session that is gone (lost) or that cannot vouch for it (suspended). That round does not count.
   */
  connectionChanged(change: ConnectionChange): void {
    if (change.state !== 'reconnected') this.roundSpoiled = change.reason;
  }

  async run(tracker: AcquisitionTracker): Promise<LockLease> {
    let busy: { key: KeyPair; outcome: BusyOutcome } | undefined;
    let lastError: LockError | undefined;
    this.tracker = tracker;
    // A hung store call's timer is unref'd like every lock-clock timer: hold the process while we run.
    const letGo = holdProcess();
    try {
      for (let attempt = 0; ; attempt++) {
        this.throwIfCancelled();
        const roundStartedAt = this.context.clock.now();
        this.roundSpoiled = undefined;
        let round: RoundResult | undefined;
        try {
          round = await this.attemptRound();
        } catch (error) {
          this.throwIfCancelled();
          // A closed backend never comes back: retrying it would only turn its answer into a late "busy".
          if (!(error instanceof LockBackendError) || error instanceof LockBackendClosedError) throw error;
          lastError = error;
        }
        if (round && 'tokens' in round && this.roundSpoiled !== undefined) {
          // Granted by a session that was lost or suspended meanwhile: give it back and ask again.
          await this.giveBack(this.keys);
          lastError = new LockBackendError(this.context.backendName, messages.grantSpoiled(this.roundSpoiled));
          round = undefined;
        }
        if (round && 'tokens' in round) {
          const lease = this.newLease(round, roundStartedAt);
          if (this.cancelled || this.context.closed) {
            // Shutdown or the caller's signal came while the grant was on its way: nobody takes it, so it goes back.
            await lease.release().catch(() => undefined);
            throw this.cancelReason ?? new LockBackendError(this.context.backendName, messages.serviceClosed());
          }
          return lease;
        }
        if (round) {
          busy = { key: round.busy, outcome: round.outcome };
          lastError = undefined;
          await this.withdrawPlacesBut(round.busy, round.outcome);
        }
        if (round?.gaveBackHanded) {
          // Two callers that each were handed one key of a set the other needs give them back to each other, and
          // a store that hands a released key straight to the first waiter hands each to the other: they would
          // swap them round after round, in step, for as long as they wait. A random pause as long as a round
          // breaks the step: one of them then finds both keys. Capped: a round slowed by a hung store must not
          // turn into seconds of pause. (On a clock that does not move, as in tests, a round takes no time and
          // nothing changes.)
          const now = this.context.clock.now();
          const longest = Math.min(this.deadline - now, MAX_SWAP_PAUSE_MS, 2 * (now - roundStartedAt));
          const jitter = Math.random() * longest;
          if (jitter > 0) await this.sleep(jitter);
        }
        const remaining = this.deadline - this.context.clock.now();
        if (remaining <= 0) throw this.fail(busy, lastError);
        const pause = Math.min(remaining, backoffDelay(this.options.retry, attempt), hint(round));
        if (round) await this.waitForRelease(round.busy, pause);
        else await this.sleep(pause);
      }
    } finally {
      this.settled = true;
      // Given back without keeping the caller waiting: a hung store must not add its timeout to the answer.
      const leftover = this.leftover();
      if (leftover.length > 0) this.cleanup = this.giveBack(leftover).finally(letGo);
      else letGo();
      tracker.finished(this);
    }
  }

  /** What may still be ours in the store once the acquisition is over: places in line, and uncertain grants. */
  private leftover(): KeyPair[] {
    const uncertain = this.lease ? undefined : this.uncertain;
    if (!this.queued?.size && !uncertain?.size) return [];
    return [...new Map([...(this.queued ?? []), ...(uncertain ?? [])]).values()];
  }

  private throwIfCancelled(): void {
    if (this.cancelled) throw this.cancelReason;
  }

  /**
   * One attempt per key: first the key the last round waited for, then the others in sorted order. Nothing is
   * held while waiting, so the order cannot deadlock; starting with the awaited key means a round that still
   * finds it busy touches no other key, which other callers may be using meanwhile.
   */
  private async attemptRound(): Promise<RoundResult> {
    const keys = this.keys;
    const tokens: bigint[] = new Array<bigint>(keys.length);
    const keepPlace = this.options.waitTimeout > 0;
    const first = this.awaited === undefined ? -1 : keys.indexOf(this.awaited);
    let provisionalForMs: number | undefined;
    for (let step = 0; step < keys.length; step++) {
      const index = roundIndex(step, first);
      const key = keys[index]!;
      let outcome: AcquireOutcome;
      try {
        outcome = await this.acquireOnce(key, keepPlace);
      } catch (error) {
        await this.giveBack(this.takenBefore(step, first));
        throw error;
      }
      if (!outcome.acquired) {
        await this.giveBack(this.takenBefore(step, first));
        this.awaited = key;
        // A key handed over by a release (provisional) went back with the others: see run().
        return { busy: key, outcome, gaveBackHanded: step > 0 && provisionalForMs !== undefined };
      }
      // The place in line (if any) became the hold: giving the key back withdraws both.
      this.queued?.delete(key.stored);
      tokens[index] = outcome.fencingToken;
      // Counted from its own call, which came after the round started: from the round start it is on the safe side.
      // A value that is not a number of ms ≥ 0 (NaN from a faulty backend) trusts the grant for nothing.
      const provisional = outcome.provisionalForMs;
      if (provisional !== undefined) {
        provisionalForMs = Math.min(provisionalForMs ?? Infinity, provisional >= 0 ? provisional : 0);
      }
    }
    return { tokens, provisionalForMs };
  }

  /** The keys a round that began with key `first` took before its step `step`. */
  private takenBefore(step: number, first: number): KeyPair[] {
    const taken: KeyPair[] = [];
    for (let s = 0; s < step; s++) taken.push(this.keys[roundIndex(s, first)]!);
    return taken;
  }

  private acquireOnce(key: KeyPair, keepPlace: boolean): Promise<AcquireOutcome> {
    const { backend, backendName, clock, operationTimeout } = this.context;
    const call = new AcquireCall(key.stored, this.owner, this.options.ttl, keepPlace, this.lossRelay.report);
    this.current = call;
    if (this.cancelled) call.abort(this.cancelReason);
    return boundedCall<AcquireOutcome>(
      {
        backend: backendName,
        operation: 'acquire a lock',
        clock,
        timeoutMs: operationTimeout,
        control: call,
        // Nobody waits for this answer any more: a grant (or a place in line) may stay in the store.
        onLateAnswer: (outcome) => {
          if (outcome.acquired || outcome.queued) this.maybeTaken(key);
        },
      },
      () => backend.acquire(call),
    ).then(
      (outcome) => {
        if (this.current === call) this.current = undefined;
        return outcome;
      },
      (error: unknown) => {
        if (this.current === call) this.current = undefined;
        // Failed, timed out or cancelled: the store may have applied it all the same.
        this.maybeTaken(key);
        throw error;
      },
    );
  }

  /** The store may hold `key` for our owner: give it back if this acquisition ends (or has ended) without it. */
  private maybeTaken(key: KeyPair): void {
    if (!this.settled) (this.uncertain ??= new Map()).set(key.stored, key);
    else if (!this.lease) this.tracker?.givingBack(this.giveBack([key]));
  }

  /**
   * A multi-key acquisition waits for one key at a time: a place it kept on another key would turn into a
   * hold when it reaches the head of that line (a queueing store does not let it lapse), so it goes.
   */
  private async withdrawPlacesBut(busy: KeyPair, outcome: BusyOutcome): Promise<void> {
    const queued = (this.queued ??= new Map());
    const stale = [...queued.values()].filter((k) => k.stored !== busy.stored);
    for (const key of stale) queued.delete(key.stored);
    if (outcome.queued) queued.set(busy.stored, busy);
    if (stale.length > 0) await this.giveBack(stale);
  }

  private async waitForRelease(key: KeyPair, timeoutMs: number): Promise<void> {
    const control = new CallControl();
    this.current = control;
    if (this.cancelled) control.abort(this.cancelReason);
    try {
      await boundedCall<void>(
        {
          backend: this.context.backendName,
          operation: 'wait for a lock',
          clock: this.context.clock,
          // The backend resolves by timeoutMs itself; the bound only catches one that never does.
          timeoutMs: Math.min(MAX_DURATION_MS, timeoutMs + this.context.operationTimeout),
          control,
        },
        () =>
          this.context.backend.waitForRelease({
            key: key.stored,
            owner: this.owner,
            timeoutMs,
            signal: control.signal,
          }),
      );
    } catch (error) {
      // A wait that failed is no reason to give up: the next attempt asks the store again.
      if (this.cancelled || !(error instanceof LockBackendError) || error instanceof LockBackendClosedError) {
        throw error;
      }
    } finally {
      if (this.current === control) this.current = undefined;
    }
  }

  /** The pause after a store error: a plain timer, cancellable like a store call. */
  private sleep(ms: number): Promise<void> {
    const control = new CallControl();
    this.current = control;
    if (this.cancelled) control.abort(this.cancelReason);
    const { clock } = this.context;
    return new Promise<void>((resolve, reject) => {
      const timer = clock.setTimeout(resolve, ms);
      control.listen((reason) => {
        clock.clearTimeout(timer);
        reject(reason);
      });
    }).finally(() => {
      if (this.current === control) this.current = undefined;
    });
  }

  /** Wraps a grant in a lease and announces it. */
  private newLease(
    { tokens, provisionalForMs }: { readonly tokens: bigint[]; readonly provisionalForMs: number | undefined },
    roundStartedAt: number,
  ): LockLease {
    this.queued?.clear();
    const { backendName, host } = this.context;
    const now = this.context.clock.now();
    const lease = new LockLease({
      host,
      backendName,
      storeScope: this.context.storeScope,
      backend: this.context.backend,
      keys: this.keys,
      owner: this.owner,
      tokens,
      options: this.options,
      roundStartedAt,
      acquiredAt: now,
      autoExtend: this.autoExtend,
      provisionalForMs,
    });
    this.lease = lease;
    this.context.track(lease);
    if (this.context.host.observed) {
      this.context.emit({
        type: 'acquired',
        keys: this.keys.map((k) => k.key),
        backend: backendName,
        at: now,
        fencingTokens: tokens,
        waitedMs: now - this.startedAt,
      });
    }
    this.lossRelay.attach(lease);
    return lease;
  }

  /** Gives back keys or places taken in a round that could not complete. Best effort: ttl is the backstop. */
  private async giveBack(keys: readonly KeyPair[]): Promise<void> {
    const { backend, backendName } = this.context;
    await Promise.allSettled(
      keys.map((k) =>
        this.context.host.callStore(backendName, 'release a lock', (call) =>
          backend.release({ key: k.stored, owner: this.owner }, call),
        ),
      ),
    );
  }

  /** The wait is over without the lock: busy if the store ever said so, else the store's own failure. */
  private fail(busy: { key: KeyPair; outcome: BusyOutcome } | undefined, lastError: LockError | undefined): LockError {
    const now = this.context.clock.now();
    const waitedMs = now - this.startedAt;
    const error = busy
      ? new LockUnavailableError(
          busy.key.key,
          waitedMs,
          busy.outcome.retryAfterMs,
          messages.unavailable(busy.key.key, this.options.waitTimeout, busy.outcome.promised === true),
          lastError ? { cause: lastError } : undefined,
        )
      : lastError!;
    this.context.emit({
      type: 'failed',
      keys: this.keys.map((k) => k.key),
      backend: this.context.backendName,
      at: now,
      operation: 'acquire',
      waitedMs,
      error,
    });
    return error;
  }
}

/** The index of the key a round asks for at `step`: the awaited key `first` (if any) first, then sorted order. */
function roundIndex(step: number, first: number): number {
  if (first <= 0) return step;
  if (step === 0) return first;
  return step <= first ? step - 1 : step;
}

function hint(round: RoundResult | undefined): number {
  const retryAfterMs = round && 'outcome' in round ? round.outcome.retryAfterMs : undefined;
  return retryAfterMs === undefined ? Infinity : Math.max(1, retryAfterMs);
}

/**
 * Passes a loss the backend reports (session expired, connection dropped) to the lease — also when the report
 * arrives while the grant is still on its way, before the lease exists.
 */
class LossRelay {
  private lease: LockLease | undefined;
  private early: string | undefined;

  readonly report = (reason: string): void => {
    // Like a lost connection: no loss once the lease is being let go and its work has ended.
    if (this.lease) this.lease.loseConnection(messages.lostByBackend(this.lease.keys[0]!.key, reason));
    else this.early ??= reason;
  };

  attach(lease: LockLease): void {
    this.lease = lease;
    if (this.early !== undefined) lease.lose(messages.lostByBackend(lease.keys[0]!.key, this.early));
  }
}
