import { LockConfigurationError, type LockLostError } from './errors';
import type { KeyPair } from './key';
import type { LockLease } from './lock-lease';
import { messages } from './messages';
import { positiveTtl } from './options';

/** A held lock. Release it exactly once (using() and @Locked do it for you); releasing again does nothing. */
export interface Lock {
  /** The first key (in the sorted order keys are taken), as the caller wrote it. */
  readonly key: string;
  /** Every key this lock holds, sorted, without keyPrefix. */
  readonly keys: readonly string[];
  /** The registered backend name that holds it. */
  readonly backend: string;
  /**
   * Strictly greater than every token granted for `key` before. Pass it to the resource you guard and let the
   * resource refuse writes carrying an older token. For several keys see fencingTokenFor().
   */
  readonly fencingToken: bigint;
  /** When the lock was granted, by the lock clock (epoch ms). */
  readonly acquiredAt: number;
  /**
   * Until when the lock may be trusted without a further extension (epoch ms): ttl less the acquisition's
   * round trip and a clock-drift margin. Infinity for session-bound backends, which hold until the session ends.
   */
  readonly expiresAt: number;
  /** Aborts, with a LockLostError as reason, when the lock is lost. Check it in long work. */
  readonly signal: AbortSignal;
  /** False once the lock is released or lost. */
  readonly isHeld: boolean;
  fencingTokenFor(key: string): bigint;
  /** Restarts the ttl (default: the lock's ttl) from now. Rejects with LockLostError if it is no longer ours. */
  extend(ttl?: number): Promise<void>;
  /** Frees the keys (or, with minHold, lets them run out then). Rejects with LockBackendError if the store fails. */
  release(): Promise<void>;
}

/**
 * One holder's view of one or more leases. A fresh acquisition owns its lease and releases it; a reentrant
 * one borrows the leases its call chain already holds (releasing it gives nothing back: the scope that took
 * them releases them when it ends, so a forgotten inner handle cannot keep a key) and may own a fresh lease
 * for keys the chain did not hold yet.
 */
export class LockHandle implements Lock {
  readonly keys: readonly string[];
  readonly leases: readonly LockLease[];
  private released: Promise<void> | undefined;
  private combinedSignal: AbortSignal | undefined;

  constructor(
    private readonly pairs: readonly KeyPair[],
    borrowed: readonly LockLease[],
    private readonly owned: LockLease | undefined,
  ) {
    this.keys = pairs.map((p) => p.key);
    this.leases = owned ? [...borrowed, owned] : borrowed;
  }

  get signal(): AbortSignal {
    if (this.leases.length === 1) return this.leases[0]!.signal;
    this.combinedSignal ??= firstAbortOf(this.leases.map((l) => l.signal));
    return this.combinedSignal;
  }

  /** @internal The first loss among the leases, if any: what onLost 'abort' rethrows. */
  get lossError(): LockLostError | undefined {
    for (const lease of this.leases) if (lease.lossError) return lease.lossError;
    return undefined;
  }

  get key(): string {
    return this.keys[0]!;
  }

  get backend(): string {
    return this.leases[0]!.backendName;
  }

  get fencingToken(): bigint {
    return this.fencingTokenFor(this.key);
  }

  get acquiredAt(): number {
    return Math.max(...this.leases.map((l) => l.acquiredAt));
  }

  get expiresAt(): number {
    return Math.min(...this.leases.map((l) => l.expiresAt));
  }

  get isHeld(): boolean {
    return this.released === undefined && this.leases.every((l) => l.isHeld);
  }

  fencingTokenFor(key: string): bigint {
    const pair = this.pairs.find((p) => p.key === key);
    for (const lease of this.leases) {
      const token = pair && lease.tokenOf(pair.stored);
      if (token !== undefined) return token;
    }
    throw new LockConfigurationError('key', messages.key.notHeld(key, this.keys));
  }

  async extend(ttl?: number): Promise<void> {
    const checked = ttl === undefined ? undefined : positiveTtl(ttl);
    await Promise.all(this.leases.map((l) => l.extend(checked ?? l.options.ttl, false)));
  }

  release(): Promise<void> {
    this.released ??= this.owned ? this.owned.release() : Promise.resolve();
    return this.released;
  }
}

/**
 * Aborts with the first of `signals` to abort. Not AbortSignal.any: on Node 20 every signal it makes stays
 * referenced from its sources until they are collected, a leak when a source lives long.
 */
function firstAbortOf(signals: readonly AbortSignal[]): AbortSignal {
  const controller = new AbortController();
  const aborted = signals.find((s) => s.aborted);
  if (aborted) {
    controller.abort(aborted.reason);
    return controller.signal;
  }
  const onAbort = (event: Event): void => {
    controller.abort((event.target as AbortSignal).reason);
    for (const signal of signals) signal.removeEventListener('abort', onAbort);
  };
  for (const signal of signals) signal.addEventListener('abort', onAbort, { once: true });
  return controller.signal;
}
