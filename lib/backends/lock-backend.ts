/**
 * The primitives one store offers. A backend knows nothing of policies (waiting, retries, extension,
 * reentrancy, events, shutdown): the core builds all of them from these calls, the same way for every store.
 * How Redlock, a SQL lease row, a SQL row held FOR UPDATE and ZooKeeper's lock recipe map onto this
 * interface is written in backends/README.md.
 *
 * Cancellation: every store call gets a `signal`. The core also bounds each call by its own deadline and
 * walks away from a call that does not answer in time, so a backend that ignores the signal cannot hang the
 * caller — but it should honour it, to free its own resources. An acquire the core walked away from and
 * that later succeeds is released by the core; a backend need not handle that case.
 */
export interface LockBackend {
  /** Short name for errors and logs, e.g. "memory", "redlock". Set by the backend, not the user. */
  readonly kind: string;
  readonly capabilities: LockBackendCapabilities;

  /**
   * Connects and checks the store (reachable, schema present) — awaited at application bootstrap, so a wrong
   * address or a missing table stops the app from starting instead of failing its first request. Throws
   * LockBackendError saying what is wrong. May be called more than once (a backend instance can serve several
   * apps in turn, each initialising it): must be idempotent and cheap after the first success. `signal` may be
   * left out (a plain script calling `backend.init()`): the backend's own timeouts bound the call then.
   */
  init?(signal?: AbortSignal): Promise<void>;

  /** Resolves if the store answers right now; throws LockBackendError (per node where it has several) if not. */
  ping?(signal: AbortSignal): Promise<void>;

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
  release(lease: LeaseRef, call: StoreCall): Promise<boolean>;

  /** Restarts the lock's ttl at `ttl` ms from now if `owner` still holds it; false if it does not. */
  extend(lease: LeaseRef, ttl: number, call: StoreCall): Promise<boolean>;

  /**
   * Resolves when `key` may have become free, at the latest after `timeoutMs`, or when `signal` aborts.
   * It never rejects for those reasons: the core simply tries again. It must resolve at once when the key is
   * already free on entry (check after subscribing), or a release between a failed attempt and this call
   * would be missed. Backends without notifications just wait `timeoutMs` (capabilities.nativeWait false).
   * It must not keep the process alive on its own (unref its timers): the core does that while it waits.
   */
  waitForRelease(wait: WaitForRelease): Promise<void>;

  /**
   * Whether anyone holds `key` right now — or it is promised to a queued waiter, so that `acquire` by a
   * newcomer would fail. A snapshot: it may change before the caller acts on it.
   */
  isLocked(key: string, call: StoreCall): Promise<boolean>;

  /**
   * Tells the core about the store connection: every listener is called on each change. Returns what stops
   * listening. See ConnectionChange for what each state means for held locks.
   */
  watchConnection?(listener: (change: ConnectionChange) => void): () => void;

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
   * it ends when that ends, not after a ttl. The backend reports such a loss through AcquireRequest.onLost
   * or ConnectionChange 'lost'. `extend` then only checks the lock is still held.
   */
  readonly sessionBound: boolean;
  /** `waitForRelease` wakes on a store notification (pub/sub, watch, in-process event), not only on timeout. */
  readonly nativeWait: boolean;
  /**
   * An unsuccessful `acquire` with `keepPlace` may leave a claim that keeps the caller's place in a FIFO
   * queue (ZooKeeper's sequential nodes); the core withdraws it with `release` when it stops waiting for that
   * key — also when a multi-key acquisition moves on to wait for another key.
   */
  readonly queued: boolean;
}

/** What every store call carries. */
export interface StoreCall {
  /** Aborts when the core stops waiting for the answer (its deadline passed, the caller cancelled, shutdown). */
  readonly signal: AbortSignal;
}

export interface LeaseRef {
  /** The key as stored: keyPrefix included, already validated (non-empty, well-formed UTF-16, no NUL). */
  readonly key: string;
  /** 128-bit random token from node:crypto, hex: the only proof of ownership. */
  readonly owner: string;
}

export interface AcquireRequest extends LeaseRef, StoreCall {
  /** How long the lock lives without an extension, in ms (expiring backends). */
  readonly ttl: number;
  /** The caller will wait and try again if this attempt fails: a queueing backend may keep its place. */
  readonly keepPlace: boolean;
  /**
   * For losses only the backend can see for this one lock (its node was deleted, its connection dropped):
   * call once with the reason. Expiring backends need not call it; the core's validity timer covers them.
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
  /**
   * Set when the store granted the lock for less than the requested ttl: a fair store's release may hand the
   * key straight to the first waiter in line, for a short while (so that a waiter that died does not hold the
   * line up for a whole ttl), before that waiter asks again. The lock is trusted for at most this many ms from
   * the moment `acquire` was called (time already elapsed since the grant and clock drift deducted); the core
   * confirms it at once with `extend(ttl)` and reports it lost if that does not answer in time. An expiring
   * backend only.
   */
  readonly provisionalForMs?: number;
}

export interface BusyOutcome {
  readonly acquired: false;
  /** When known: ms until the current holder's lease runs out. A hint for waiting, never for Retry-After. */
  readonly retryAfterMs?: number;
  /** A place in line is kept for this owner; the core must `release` it if it stops waiting. */
  readonly queued?: boolean;
  /** Nobody holds the key, but it is promised to a waiter ahead in line (a fair store's hand-off). */
  readonly promised?: boolean;
}

export interface WaitForRelease extends LeaseRef, StoreCall {
  readonly timeoutMs: number;
}

/**
 * A change in the backend's link to its store, for every lock held through it:
 * - `suspended`: the store cannot be reached (ZooKeeper disconnected, Redis quorum unreachable). Held locks
 *   may still be ours; `validForMs` says for how long at most that can be trusted (ZooKeeper: what is left of
 *   the session timeout). The core applies the lock's `onSuspended` policy: 'abort' loses it now, 'wait' keeps
 *   it at most `validForMs` (and never past its ttl) unless `reconnected` comes first. A session-bound backend
 *   that cannot give `validForMs` makes 'wait' behave as 'abort'.
 * - `reconnected`: the store answers again and the locks held before are still ours (same session).
 * - `lost`: every lock held through this backend is gone (ZooKeeper session expired). Later acquisitions
 *   work on a new session.
 */
export type ConnectionChange =
  | { readonly state: 'suspended'; readonly reason: string; readonly validForMs?: number }
  | { readonly state: 'reconnected' }
  | { readonly state: 'lost'; readonly reason: string };
