import { type ClockTimer, type LockClock, systemClock } from '../../core/clock';
import { LockBackendError } from '../../core/errors';
import { messages } from '../../core/messages';
import type {
  AcquireOutcome,
  AcquireRequest,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  WaitForRelease,
} from '../lock-backend';

export interface MemoryLockBackendOptions {
  /** Time source for ttl expiry; share one ManualClock with the module to test expiry without sleeping. */
  readonly clock?: LockClock;
}

interface Entry {
  readonly owner: string;
  expiresAt: number;
  timer: ClockTimer;
}

/** Fencing tokens start at the wall clock in ms shifted left 20 bits; see nextToken(). */
const TOKEN_CLOCK_SHIFT = 20n;

/**
 * Locks held in this process's memory: full semantics (ttl expiry, owner-only release, fencing tokens,
 * wake-ups on release) for single-instance apps and for unit tests of code that takes locks. It does not
 * coordinate separate processes.
 *
 * Fencing tokens: one counter for all keys, never below `now_ms << 20`. Tokens therefore rise strictly per key
 * within the process and stay above those of an earlier run of the app as long as the wall clock does not go
 * back and no run took more than about a million locks per millisecond.
 */
export class MemoryLockBackend implements LockBackend {
  readonly kind = 'memory';
  readonly capabilities: LockBackendCapabilities = {
    expiring: true,
    sessionBound: false,
    nativeWait: true,
    queued: false,
  };
  private readonly clock: LockClock;
  private readonly entries = new Map<string, Entry>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private lastToken = 0n;
  private closed = false;

  constructor(options: MemoryLockBackendOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    this.assertOpen('acquire a lock');
    const now = this.clock.now();
    const held = this.live(request.key, now);
    if (held) return { acquired: false, retryAfterMs: held.expiresAt - now };
    this.entries.set(request.key, {
      owner: request.owner,
      expiresAt: now + request.ttl,
      timer: this.expireAt(request.key, request.ttl),
    });
    return { acquired: true, fencingToken: this.nextToken(now) };
  }

  async release(lease: LeaseRef): Promise<boolean> {
    this.assertOpen('release a lock');
    const held = this.live(lease.key);
    if (!held || held.owner !== lease.owner) return false;
    this.remove(lease.key, held);
    return true;
  }

  async extend(lease: LeaseRef, ttl: number): Promise<boolean> {
    this.assertOpen('extend a lock');
    const held = this.live(lease.key);
    if (!held || held.owner !== lease.owner) return false;
    this.clock.clearTimeout(held.timer);
    held.expiresAt = this.clock.now() + ttl;
    held.timer = this.expireAt(lease.key, ttl);
    return true;
  }

  waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.closed || !this.live(wait.key) || wait.signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiters = this.waiters.get(wait.key) ?? new Set<() => void>();
      this.waiters.set(wait.key, waiters);
      const done = (): void => {
        this.clock.clearTimeout(timer);
        wait.signal.removeEventListener('abort', done);
        waiters.delete(done);
        if (waiters.size === 0 && this.waiters.get(wait.key) === waiters) this.waiters.delete(wait.key);
        resolve();
      };
      const timer = this.clock.setTimeout(done, wait.timeoutMs);
      wait.signal.addEventListener('abort', done, { once: true });
      waiters.add(done);
    });
  }

  async isLocked(key: string): Promise<boolean> {
    this.assertOpen('read a lock');
    return this.live(key) !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) this.clock.clearTimeout(entry.timer);
    this.entries.clear();
    for (const key of [...this.waiters.keys()]) this.wake(key);
  }

  /** The entry for `key` if it has not expired. Expired entries are dropped here too, not only by their timer. */
  private live(key: string, now = this.clock.now()): Entry | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt > now) return entry;
    this.remove(key, entry);
    return undefined;
  }

  private expireAt(key: string, ttl: number): ClockTimer {
    return this.clock.setTimeout(() => {
      const entry = this.entries.get(key);
      if (entry && entry.expiresAt <= this.clock.now()) this.remove(key, entry);
    }, ttl);
  }

  private remove(key: string, entry: Entry): void {
    this.clock.clearTimeout(entry.timer);
    this.entries.delete(key);
    this.wake(key);
  }

  /**
   * Wakes waiters on the next turn of the event loop rather than at once, as a store notification would
   * arrive: the releasing caller finishes (and reports its release) before a waiter can take the key.
   */
  private wake(key: string): void {
    const waiters = this.waiters.get(key);
    if (!waiters) return;
    this.waiters.delete(key);
    setImmediate(() => {
      for (const wake of waiters) wake();
    });
  }

  private nextToken(now: number): bigint {
    const floor = BigInt(Math.floor(now)) << TOKEN_CLOCK_SHIFT;
    this.lastToken = this.lastToken + 1n > floor ? this.lastToken + 1n : floor;
    return this.lastToken;
  }

  private assertOpen(operation: string): void {
    if (this.closed)
      throw new LockBackendError(this.kind, `${messages.backendFailed(this.kind, operation)} It is closed.`);
  }
}
