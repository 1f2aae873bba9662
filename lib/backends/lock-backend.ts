/**
 * The primitives one store offers. A backend knows nothing of policies (waiting, retries, extension,
 * reentrancy, events): the core builds all of them from these calls, the same way for every store.
 * How Redlock, a SQL lease row, a SQL row held FOR UPDATE and ZooKeeper's lock recipe map onto this
 * interface is written in backends/README.md.
 */
export interface LockBackend {
  /** Short name for errors and logs, e.g. "memory", "redlock". Set by the backend, not the user. */
  readonly kind: string;
  readonly capabilities: LockBackendCapabilities;

  /**
   * One attempt to take `key` for `owner`. Never waits for a holder to leave; the core decides whether and
   * how long to wait. Throws LockBackendError when the store cannot be asked.
   */
  acquire(request: AcquireRequest): Promise<AcquireOutcome>;

  /**
   * Frees `key` if, and only if, `owner` holds it (compare-and-delete, never a blind delete). Also withdraws
   * a queued claim left by an unsuccessful `acquire` (see AcquireOutcome.queued). Returns false when the
   * owner held nothing, e.g. because the lock had expired.
   */
  release(lease: LeaseRef): Promise<boolean>;

  /** Restarts the lock's ttl at `ttl` ms from now if `owner` still holds it; false if it does not. */
  extend(lease: LeaseRef, ttl: number): Promise<boolean>;

  /**
   * Resolves when `key` may have become free, at the latest after `timeoutMs`, or when `signal` aborts.
   * It never rejects for those reasons: the core simply tries again. It must resolve at once when the key is
   * already free on entry (check after subscribing), or a release between a failed attempt and this call
   * would be missed. Backends without notifications just wait `timeoutMs` (capabilities.nativeWait false).
   */
  waitForRelease(wait: WaitForRelease): Promise<void>;

  /** Whether anyone holds `key` right now. A snapshot: it may change before the caller acts on it. */
  isLocked(key: string): Promise<boolean>;

  /**
   * Frees what the backend itself created (connections it opened, timers). Clients the user passed in are
   * left open: their owner closes them. Idempotent.
   */
  close(): Promise<void>;
}

export interface LockBackendCapabilities {
  /**
   * A lock ends by itself `ttl` ms after it was taken or last extended (Redis, a SQL lease row, memory).
   * The core then runs a validity timer and, with autoExtend, a watchdog.
   */
  readonly expiring: boolean;
  /**
   * A lock lives as long as the client's session or connection (ZooKeeper, a SQL row held FOR UPDATE):
   * it ends when that ends, not after a ttl. The backend reports such a loss through AcquireRequest.onLost.
   * `extend` then only checks the lock is still held.
   */
  readonly sessionBound: boolean;
  /** `waitForRelease` wakes on a store notification (pub/sub, watch, in-process event), not only on timeout. */
  readonly nativeWait: boolean;
  /**
   * An unsuccessful `acquire` with `keepPlace` may leave a claim that keeps the caller's place in a FIFO
   * queue (ZooKeeper's sequential nodes); the core withdraws it with `release` when it stops waiting.
   */
  readonly queued: boolean;
}

export interface LeaseRef {
  /** The key as stored: keyPrefix included, already validated. */
  readonly key: string;
  /** 128-bit random token from node:crypto, hex; the only proof of ownership. */
  readonly owner: string;
}

export interface AcquireRequest extends LeaseRef {
  /** How long the lock lives without an extension, in ms (expiring backends). */
  readonly ttl: number;
  /** The caller will wait and try again if this attempt fails: a queueing backend may keep its place. */
  readonly keepPlace: boolean;
  /**
   * For losses only the backend can see (a session expired, a connection dropped): call once with the
   * reason. Expiring backends need not call it; the core's validity timer covers them.
   */
  readonly onLost: (reason: string) => void;
}

export type AcquireOutcome = AcquiredOutcome | BusyOutcome;

export interface AcquiredOutcome {
  readonly acquired: true;
  /**
   * Strictly greater than every token this key was granted before, by any owner, through this backend's
   * store: across releases, expiries and restarts of the app. How each backend keeps that is documented
   * beside it.
   */
  readonly fencingToken: bigint;
}

export interface BusyOutcome {
  readonly acquired: false;
  /** When known: ms until the current holder's lease runs out. A hint for waiting and for Retry-After. */
  readonly retryAfterMs?: number;
  /** A place in line is kept for this owner; the core must `release` it if it stops waiting. */
  readonly queued?: boolean;
}

export interface WaitForRelease extends LeaseRef {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}
