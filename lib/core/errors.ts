import { messages } from './messages';

/**
 * Every error this library throws extends LockError, so `instanceof LockError` catches them all and `code`
 * survives serialisation (logs, RPC) where the class does not.
 */
export abstract class LockError extends Error {
  abstract readonly code: string;

  protected constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The key was still held by another owner when `waitTimeout` ran out (or on the single try when it is 0). */
export class LockUnavailableError extends LockError {
  readonly code = 'LOCK_UNAVAILABLE';

  constructor(
    readonly key: string,
    /** How long this call waited before giving up, in ms. */
    readonly waitedMs: number,
    /**
     * When the store knows it: ms until the holder's lease runs out. With auto-extension a holder keeps
     * renewing it, so this is when the key frees at the latest if the holder dies, not when it will be free.
     */
    readonly retryAfterMs: number | undefined,
    message: string,
    /** `cause`: the last store error, when some attempts of the wait failed before the store answered busy. */
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The lock stopped being ours while we held it: it expired, an extension failed, or its session ended. */
export class LockLostError extends LockError {
  readonly code = 'LOCK_LOST';

  constructor(
    readonly key: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One store node's failure, kept so a quorum failure shows what each node said. */
export interface LockBackendNodeFailure {
  readonly node: string;
  readonly error: unknown;
}

/** The store could not be asked: unreachable, timed out, quorum not reached, or already closed. */
export class LockBackendError extends LockError {
  readonly code = 'LOCK_BACKEND';

  constructor(
    readonly backend: string,
    message: string,
    readonly nodeFailures: readonly LockBackendNodeFailure[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The backend was closed (by whoever owns it, or at shutdown) and will not answer again: a caller waiting for a
 * key through it stops at once instead of retrying until its waitTimeout, as it would for a store that blinks.
 */
export class LockBackendClosedError extends LockBackendError {
  constructor(backend: string, operation: string) {
    super(backend, `${messages.backendFailed(backend, operation)} It is closed.`);
  }
}

/**
 * Options, keys or key templates that can never work. Thrown at bootstrap for everything knowable then
 * (module options, decorator options, templates); at call time only for what depends on the call's arguments.
 */
export class LockConfigurationError extends LockError {
  readonly code = 'LOCK_CONFIGURATION';

  constructor(
    /** The option or input at fault, e.g. `ttl`, `key`, `backends.cache`, `@Locked(OrderService.pay)`. */
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}
