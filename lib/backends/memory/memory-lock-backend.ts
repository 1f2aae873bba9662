import { type ClockTimer, type LockClock, systemClock } from '../../core/clock';
import { LockBackendClosedError } from '../../core/errors';
import type {
  AcquireOutcome,
  AcquireRequest,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  StoreCall,
  WaitForRelease,
} from '../lock-backend';
import { WaitQueue } from './wait-queue';

export interface MemoryLockBackendOptions {
  /** Time source for ttl expiry; share one ManualClock with the module to test expiry without sleeping. */
  readonly clock?: LockClock;
}

interface Entry {
  readonly owner: string;
  expiresAt: number;
  timer: ClockTimer;
}

/**
 * How long a free key waits for the first in line to take it when that waiter is not even listening (it gave
 * up without withdrawing, e.g. because the withdrawal itself failed). Then the next in line gets its turn.
 */
const HANDOFF_MS = 10;

/**
 * Fencing tokens start at the wall clock in ms times 2^11; see nextToken(). 11 bits keep tokens below
 * Number.MAX_SAFE_INTEGER until the year 2109, so `Number(token)` stays exact for code that stores numbers.
 */
const TOKEN_CLOCK_SHIFT = 11n;

/**
 * Locks held in this process's memory: full semantics (ttl expiry, owner-only release, fencing tokens,
 * wake-ups on release) for single-instance apps and for unit tests of code that takes locks. It does not
 * coordinate separate processes.
 *
 * Fair: callers that wait keep a place in a FIFO line per key (capabilities.queued), a release wakes only the
 * first in line, and nobody — not even the releaser coming straight back — takes a free key past the line.
 * In-process there is no network delay to give waiters a chance, so without this a holder looping on a key
 * would re-take it every time and starve everyone else.
 *
 * Fencing tokens: one counter for all keys, never below `now_ms × 2048`. Tokens therefore rise strictly per key
 * within the process and stay above those of an earlier run of the app as long as the wall clock does not go
 * back and no run took, on average since its start, more than 2048 locks per millisecond (the core manages
 * about 170 per millisecond on one key).
 */
export class MemoryLockBackend implements LockBackend {
  readonly kind = 'memory';
  readonly capabilities: LockBackendCapabilities = {
    expiring: true,
    sessionBound: false,
    nativeWait: true,
    queued: true,
  };
  private readonly clock: LockClock;
  private readonly entries = new Map<string, Entry>();
  private readonly lines = new Map<string, WaitQueue>();
  private readonly handoffs = new Map<string, ClockTimer>();
  private lastToken = 0n;
  private closed = false;

  constructor(options: MemoryLockBackendOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    this.assertOpen('acquire a lock');
    const now = this.clock.now();
    const held = this.live(request.key, now);
    const line = this.lines.get(request.key);
    if (held || (line && !line.isFirst(request.owner))) {
      const queued = request.keepPlace && this.line(request.key).join(request.owner);
      if (held) return { acquired: false, queued, retryAfterMs: held.expiresAt - now };
      return { acquired: false, queued, promised: true };
    }
    line?.leave(request.owner);
    this.dropLineIfEmpty(request.key);
    this.cancelHandoff(request.key);
    this.entries.set(request.key, {
      owner: request.owner,
      expiresAt: now + request.ttl,
      timer: this.expireAt(request.key, request.ttl),
    });
    return { acquired: true, fencingToken: this.nextToken(now) };
  }

  async release(lease: LeaseRef, _call?: StoreCall): Promise<boolean> {
    this.assertOpen('release a lock');
    const held = this.live(lease.key);
    if (held && held.owner === lease.owner) {
      this.remove(lease.key, held);
      return true;
    }
    // Not the holder: withdraw the owner's place in line, if it has one.
    const line = this.lines.get(lease.key);
    if (line?.leave(lease.owner)) {
      this.dropLineIfEmpty(lease.key);
      if (!held) this.offerToFirst(lease.key);
    }
    return false;
  }

  async extend(lease: LeaseRef, ttl: number, _call?: StoreCall): Promise<boolean> {
    this.assertOpen('extend a lock');
    const held = this.live(lease.key);
    if (!held || held.owner !== lease.owner) return false;
    this.clock.clearTimeout(held.timer);
    held.expiresAt = this.clock.now() + ttl;
    held.timer = this.expireAt(lease.key, ttl);
    return true;
  }

  waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.closed || wait.signal.aborted) return Promise.resolve();
    const line = this.lines.get(wait.key);
    const myTurn = !this.live(wait.key) && (!line || line.isFirst(wait.owner));
    if (myTurn) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.clock.clearTimeout(timer);
        wait.signal.removeEventListener('abort', done);
        this.lines.get(wait.key)?.stopListening(wait.owner, done);
        resolve();
      };
      const timer = this.clock.setTimeout(done, wait.timeoutMs);
      wait.signal.addEventListener('abort', done, { once: true });
      // A waiter without a place in line (it did not ask to keep one) is woken with the first.
      this.line(wait.key).listen(wait.owner, done);
    });
  }

  /** Held, or free but promised to the first in line: exactly when a newcomer's acquire would fail. */
  async isLocked(key: string, _call?: StoreCall): Promise<boolean> {
    this.assertOpen('read a lock');
    return this.live(key) !== undefined || this.lines.get(key)?.first !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) this.clock.clearTimeout(entry.timer);
    this.entries.clear();
    for (const key of [...this.handoffs.keys()]) this.cancelHandoff(key);
    const lines = [...this.lines.values()];
    this.lines.clear();
    for (const line of lines) line.wakeAll();
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
    this.offerToFirst(key);
  }

  /**
   * The key is free: wakes the first in line on the next turn of the event loop rather than at once, as a
   * store notification would arrive (the releasing caller finishes, and reports its release, first). If that
   * waiter is gone without a word, its place lapses after HANDOFF_MS and the next one is offered the key.
   */
  private offerToFirst(key: string): void {
    this.cancelHandoff(key);
    const line = this.lines.get(key);
    if (!line) return;
    setImmediate(() => line.wakeFirst());
    const head = line.first;
    if (head === undefined) return;
    const check = (): void => {
      this.handoffs.delete(key);
      if (this.closed || this.entries.has(key) || line.first !== head) return;
      if (line.isListening(head)) {
        // Alive and about to be woken (a busy event loop runs timers before the wake-up): give it more time.
        this.handoffs.set(key, this.clock.setTimeout(check, HANDOFF_MS));
        return;
      }
      line.leave(head);
      this.dropLineIfEmpty(key);
      this.offerToFirst(key);
    };
    this.handoffs.set(key, this.clock.setTimeout(check, HANDOFF_MS));
  }

  private cancelHandoff(key: string): void {
    const timer = this.handoffs.get(key);
    if (timer) this.clock.clearTimeout(timer);
    this.handoffs.delete(key);
  }

  private line(key: string): WaitQueue {
    let line = this.lines.get(key);
    if (!line) {
      line = new WaitQueue();
      this.lines.set(key, line);
    }
    return line;
  }

  private dropLineIfEmpty(key: string): void {
    if (!this.lines.get(key)?.isEmpty) return;
    this.lines.delete(key);
    this.cancelHandoff(key);
  }

  private nextToken(now: number): bigint {
    const floor = BigInt(Math.floor(now)) << TOKEN_CLOCK_SHIFT;
    this.lastToken = this.lastToken + 1n > floor ? this.lastToken + 1n : floor;
    return this.lastToken;
  }

  private assertOpen(operation: string): void {
    if (this.closed) {
      throw new LockBackendClosedError(this.kind, operation);
    }
  }
}
