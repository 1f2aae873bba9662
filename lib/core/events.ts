import type { LockError, LockLostError } from './errors';

interface LockEventBase {
  /** The keys as the caller wrote them (without keyPrefix), in the order they are taken. */
  readonly keys: readonly string[];
  /** The registered backend name, e.g. "default". */
  readonly backend: string;
  /** When it happened, by the lock clock (epoch ms). */
  readonly at: number;
}

export interface LockAcquiredEvent extends LockEventBase {
  readonly type: 'acquired';
  readonly fencingTokens: readonly bigint[];
  /** From the call to the grant, in ms. */
  readonly waitedMs: number;
}

export interface LockReleasedEvent extends LockEventBase {
  readonly type: 'released';
  /** From the grant to the release, in ms. */
  readonly heldMs: number;
}

export interface LockExtendedEvent extends LockEventBase {
  readonly type: 'extended';
  readonly ttl: number;
  /** True when the watchdog extended it, false for an explicit lock.extend(). */
  readonly automatic: boolean;
}

export interface LockLostEvent extends LockEventBase {
  readonly type: 'lost';
  readonly heldMs: number;
  readonly error: LockLostError;
}

export interface LockFailedEvent extends LockEventBase {
  readonly type: 'failed';
  /** 'acquire': the lock was not taken (busy or store error); 'release'/'extend': a store error. */
  readonly operation: 'acquire' | 'release' | 'extend';
  readonly waitedMs: number;
  readonly error: LockError;
}

/**
 * A backend's link to its store changed (see ConnectionChange). `keys` are the held locks it concerns; each
 * then follows its onSuspended policy, or is lost.
 */
export interface LockConnectionEvent extends LockEventBase {
  readonly type: 'connection';
  readonly state: 'suspended' | 'reconnected' | 'lost';
  readonly reason?: string;
}

export type LockEvent =
  LockAcquiredEvent | LockReleasedEvent | LockExtendedEvent | LockLostEvent | LockFailedEvent | LockConnectionEvent;
