import type { ConnectionChange } from '../backends/lock-backend';
import type { Acquisition, AcquisitionTracker } from './acquisition';
import type { LockClock } from './clock';
import type { LockLease } from './lock-lease';
import { messages } from './messages';

/**
 * Everything one LockService has in the stores or on its way there: held leases, acquisitions in flight, the
 * give-backs they left running, and releases put off until minHold. It knows how to tell them of a store's
 * connection change, and how to let go of all of them safely at shutdown.
 */
export class HeldLocks implements AcquisitionTracker {
  private readonly leases = new Set<LockLease>();
  /** Acquisitions in flight. */
  private readonly acquisitions = new Set<Acquisition>();
  /** While shutdown waits for acquisitions in flight to end: what tells it one has. Made only then. */
  private endWaiters: Map<Acquisition, () => void> | undefined;
  /** Give-backs of finished acquisitions still on their way to the store. */
  private readonly cleanups = new Set<Promise<void>>();
  /** Releases put off until minHold (session-bound stores), by what runs them now. */
  private readonly deferredReleases = new Set<() => Promise<void>>();
  /** Called when the last held lease is let go, while shutdown waits for that. */
  private allReleased: (() => void) | undefined;

  constructor(private readonly clock: LockClock) {}

  get all(): readonly LockLease[] {
    return [...this.leases];
  }

  track(lease: LockLease): void {
    this.leases.add(lease);
  }

  /** The lease no longer needs releasing at shutdown (released or lost). */
  forget(lease: LockLease): void {
    this.leases.delete(lease);
    if (this.leases.size === 0) this.allReleased?.();
  }

  /** Runs an acquisition, cancelling it at shutdown, and keeps its give-backs until they reach the store. */
  run(acquisition: Acquisition): Promise<LockLease> {
    this.acquisitions.add(acquisition);
    return acquisition.run(this);
  }

  /**
   * @internal An acquisition is over: called by it once it is done with the store (a grant it could not hand
   * over is released by then) and has started giving back what it left there, just before its run settles.
   */
  finished(acquisition: Acquisition): void {
    this.acquisitions.delete(acquisition);
    const { cleanup } = acquisition;
    if (cleanup) this.givingBack(cleanup);
    this.endWaiters?.get(acquisition)?.();
  }

  /** @internal Keeps a give-back until it reaches the store: shutdown closes no backend before. */
  givingBack(giveBack: Promise<void>): void {
    const tracked = giveBack.then(() => void this.cleanups.delete(tracked));
    this.cleanups.add(tracked);
  }

  /** Runs `release` after `ms`, or at shutdown if that comes first; once either way. */
  deferRelease(release: () => Promise<void>, ms: number): void {
    let done = false;
    const run = (): Promise<void> => {
      this.deferredReleases.delete(run);
      this.clock.clearTimeout(timer);
      if (done) return Promise.resolve();
      done = true;
      return release().catch(() => undefined);
    };
    const timer = this.clock.setTimeout(() => void run(), ms);
    this.deferredReleases.add(run);
  }

  /**
   * A store's connection changed: acquisitions in flight distrust the round they are in, held leases follow
   * their onSuspended policy or are lost. Returns the leases it concerned.
   */
  connectionChanged(names: readonly string[], change: ConnectionChange): LockLease[] {
    for (const acquisition of this.acquisitions) {
      if (names.includes(acquisition.backendName)) acquisition.connectionChanged(change);
    }
    const affected = [...this.leases].filter((lease) => names.includes(lease.backendName));
    for (const lease of affected) {
      if (change.state === 'suspended') lease.suspend(change.reason, change.validForMs);
      else if (change.state === 'reconnected') lease.resume();
      else lease.loseConnection(messages.lostConnection(lease.keys[0]!.key, change.reason));
    }
    return affected;
  }

  /**
   * Lets go of everything without handing a key to someone else under running work: cancels acquisitions,
   * tells held leases' work to stop, waits up to `shutdownTimeout` for it to end and release, reports what is
   * still held as lost and releases it, then waits for every give-back and put-off release to reach the store.
   */
  async letGoOfAll(cancelReason: unknown, shutdownTimeout: number): Promise<void> {
    const acquisitions = [...this.acquisitions];
    const waiters = (this.endWaiters ??= new Map());
    const ended = acquisitions.map((acquisition) => new Promise<void>((resolve) => waiters.set(acquisition, resolve)));
    for (const acquisition of acquisitions) acquisition.cancel(cancelReason);
    for (const lease of this.leases) lease.stopForShutdown();
    await this.workToEnd(shutdownTimeout);
    const overdue = [...this.leases];
    for (const lease of overdue) lease.lose(messages.lostShutdownTimeout(lease.keys[0]!.key, shutdownTimeout));
    await Promise.allSettled(overdue.map((lease) => lease.release()));
    // A grant that lands meanwhile is given back by its acquisition before it ends; its give-backs join cleanups.
    await Promise.all(ended);
    await Promise.allSettled([...this.cleanups]);
    // Nobody will be here when put-off releases fall due: they happen now.
    await Promise.allSettled([...this.deferredReleases].map((release) => release()));
  }

  /** Until every held lease is released, or `ms`. */
  private workToEnd(ms: number): Promise<void> {
    if (this.leases.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.clock.clearTimeout(timer);
        this.allReleased = undefined;
        resolve();
      };
      const timer = this.clock.setTimeout(done, ms);
      this.allReleased = done;
    });
  }
}
