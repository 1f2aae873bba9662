import { LockConfigurationError, LockLostError, LockUnavailableError } from './errors';
import type { Lock } from './lock';
import { messages } from './messages';

/**
 * The longest duration any option accepts, in ms (about 24.8 days): Node runs a timer of 2^31 ms or more
 * after 1 ms instead, so a longer ttl, wait or retry delay would misbehave rather than wait.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;
/**
 * The shortest ttl: a lock is trusted for ttl − 1 % − 2 ms (the clock-drift margin), which must leave at
 * least 1 ms, or the lock would be handed out already lost.
 */
export const MIN_TTL_MS = 3;

export interface RetryOptions {
  /** First pause between attempts, in ms. Default 50. */
  readonly delay?: number;
  /** Cap on the pause as it grows, in ms. Default 1 000. */
  readonly maxDelay?: number;
  /** Each pause is this many times the last, up to maxDelay. Default 2. */
  readonly factor?: number;
  /** Each pause is shortened by a random share of up to this fraction, so waiters spread out. Default 0.5. */
  readonly jitter?: number;
}

export interface LockedContext {
  /** The keys as resolved for this call (without keyPrefix). */
  readonly keys: readonly string[];
  /** The arguments the locked method was called with (empty for LockService.using). */
  readonly args: readonly unknown[];
  readonly error: LockUnavailableError;
}

export interface LostContext {
  readonly lock: Lock;
  readonly error: LockLostError;
}

/** What to do when the key is still busy after waitTimeout: throw, skip the call, or return a fallback. */
export type OnLockedPolicy<R = unknown> = 'throw' | 'skip' | ((context: LockedContext) => R | Promise<R>);
/**
 * What the caller sees when the lock is lost mid-work. The lock's signal aborts in every case.
 * - 'abort': the work's result is replaced by a LockLostError (an Observable errors at once).
 * - 'ignore': the result is returned as if nothing happened.
 * - a function: it is called at the moment of loss; the result is then returned as with 'ignore'.
 */
export type OnLostPolicy = 'abort' | 'ignore' | ((context: LostContext) => void);
export type OnSuspendedPolicy = 'wait' | 'abort';

export interface LockOptions {
  /** How long the lock lives without an extension, in ms. Default 30 000. */
  readonly ttl?: number;
  /** How long to wait for a busy key, in ms; 0 tries once. Default 0. */
  readonly waitTimeout?: number;
  readonly retry?: RetryOptions;
  /** Extend the lock every ttl/3 while it is held. Default: on for using() and @Locked, off for acquire(). */
  readonly autoExtend?: boolean;
  /** Keep the key at least this long after acquisition, even if the work ends sooner, in ms. Default 0. */
  readonly minHold?: number;
  /** Default 'abort'. */
  readonly onLost?: OnLostPolicy;
  /**
   * What a held lock does while its store is unreachable (ConnectionChange 'suspended'): 'wait' keeps it as
   * long as the store can still vouch for it (its ttl, or what is left of a ZooKeeper session) and resumes on
   * reconnection; 'abort' counts it lost at once, as Curator's default does. Default 'wait'.
   */
  readonly onSuspended?: OnSuspendedPolicy;
  /** Which registered backend holds the lock. Default 'default'. */
  readonly backend?: string;
  /** A holder taking the same key again in the same async call chain gets it at once. Default true. */
  readonly reentrant?: boolean;
}

/** Options of one LockService call: the policies plus a way to cancel the wait. */
export interface LockCallOptions extends LockOptions {
  /** Cancels waiting for the lock; the call then rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

/** Options of @Locked() and of the module's defaults. */
export interface LockedOptions extends LockOptions {
  /** Default 'throw'. In module defaults it applies to @Locked methods only: using() takes it per call. */
  readonly onLocked?: OnLockedPolicy;
}

export interface ResolvedRetry {
  readonly delay: number;
  readonly maxDelay: number;
  readonly factor: number;
  readonly jitter: number;
}

export interface ResolvedLockOptions {
  readonly ttl: number;
  readonly waitTimeout: number;
  readonly retry: ResolvedRetry;
  /** Unset means the API's default: on for using() and @Locked, off for acquire(). */
  readonly autoExtend: boolean | undefined;
  readonly minHold: number;
  readonly onLost: OnLostPolicy;
  readonly onSuspended: OnSuspendedPolicy;
  readonly onLocked: OnLockedPolicy;
  readonly backend: string;
  readonly reentrant: boolean;
}

/** The defaults, in one place. The README's option table repeats these. */
export const DEFAULT_LOCK_OPTIONS = {
  ttl: 30_000,
  waitTimeout: 0,
  retry: { delay: 50, maxDelay: 1_000, factor: 2, jitter: 0.5 },
  minHold: 0,
  onLost: 'abort',
  onSuspended: 'wait',
  onLocked: 'throw',
  backend: 'default',
  reentrant: true,
  autoExtend: undefined,
} as const satisfies ResolvedLockOptions;

const OPTION_NAMES = [
  'ttl',
  'waitTimeout',
  'retry',
  'autoExtend',
  'minHold',
  'onLost',
  'onSuspended',
  'onLocked',
  'backend',
  'reentrant',
  'signal',
] as const;
const RETRY_NAMES = ['delay', 'maxDelay', 'factor', 'jitter'] as const;

/**
 * Merges `options` over `base` and checks every field, so a wrong value is reported by name before
 * anything is taken. `base` is already valid (the module defaults, resolved at bootstrap).
 */
export function resolveLockOptions(
  base: ResolvedLockOptions,
  options: LockedOptions | LockCallOptions | undefined,
  where: string,
): ResolvedLockOptions {
  if (options === undefined) return base;
  checkShape(options, 'options', where, OPTION_NAMES);
  const o = options as LockedOptions & LockCallOptions;
  const retry = o.retry === undefined ? base.retry : resolveRetry(base.retry, o.retry, where);
  const resolved: ResolvedLockOptions = {
    ttl: o.ttl === undefined ? base.ttl : positiveTtl(o.ttl),
    waitTimeout: o.waitTimeout === undefined ? base.waitTimeout : duration('waitTimeout', o.waitTimeout, 0),
    retry,
    autoExtend: o.autoExtend === undefined ? base.autoExtend : boolean('autoExtend', o.autoExtend),
    minHold: o.minHold === undefined ? base.minHold : duration('minHold', o.minHold, 0),
    onLost: o.onLost === undefined ? base.onLost : policy('onLost', o.onLost, ['abort', 'ignore']),
    onSuspended:
      o.onSuspended === undefined ? base.onSuspended : choice('onSuspended', o.onSuspended, ['wait', 'abort']),
    onLocked: o.onLocked === undefined ? base.onLocked : policy('onLocked', o.onLocked, ['throw', 'skip']),
    backend: o.backend === undefined ? base.backend : backendName(o.backend),
    reentrant: o.reentrant === undefined ? base.reentrant : boolean('reentrant', o.reentrant),
  };
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new LockConfigurationError('signal', messages.option.signal(o.signal));
  }
  if (resolved.minHold > resolved.ttl) {
    throw new LockConfigurationError('minHold', messages.option.minHoldOverTtl(resolved.minHold, resolved.ttl));
  }
  return resolved;
}

/** Builds the module-wide base from the user's `defaults`, on top of DEFAULT_LOCK_OPTIONS. */
export function resolveDefaults(defaults: LockedOptions | undefined): ResolvedLockOptions {
  return resolveLockOptions(DEFAULT_LOCK_OPTIONS, defaults, 'defaults');
}

function resolveRetry(base: ResolvedRetry, retry: RetryOptions, where: string): ResolvedRetry {
  checkShape(retry, 'retry', `${where}: retry`, RETRY_NAMES);
  const resolved = {
    delay: retry.delay === undefined ? base.delay : duration('retry.delay', retry.delay, 1),
    maxDelay: retry.maxDelay === undefined ? base.maxDelay : duration('retry.maxDelay', retry.maxDelay, 1),
    factor: retry.factor === undefined ? base.factor : factor('retry.factor', retry.factor),
    jitter: retry.jitter === undefined ? base.jitter : fraction('retry.jitter', retry.jitter),
  };
  if (resolved.maxDelay < resolved.delay) {
    throw new LockConfigurationError(
      'retry.maxDelay',
      messages.option.maxDelayUnderDelay(resolved.delay, resolved.maxDelay),
    );
  }
  return resolved;
}

function checkShape(value: unknown, option: string, where: string, known: readonly string[]): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new LockConfigurationError(option, messages.option.notObject(where));
  }
  for (const name of Object.keys(value)) {
    if (!known.includes(name)) throw new LockConfigurationError(name, messages.option.unknown(where, name, known));
  }
}

/** Validates a ttl, also one passed outside an options object, e.g. to lock.extend(ttl). */
export function positiveTtl(value: unknown): number {
  return duration('ttl', value, MIN_TTL_MS);
}

/** A whole number of ms from `min` to MAX_DURATION_MS. */
export function duration(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > MAX_DURATION_MS) {
    throw new LockConfigurationError(name, messages.option.duration(name, value, min, MAX_DURATION_MS));
  }
  return value;
}

function fraction(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new LockConfigurationError(name, messages.option.fraction(name, value));
  }
  return value;
}

function factor(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1) {
    throw new LockConfigurationError(name, messages.option.factor(name, value));
  }
  return value;
}

function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new LockConfigurationError(name, messages.option.boolean(name, value));
  return value;
}

function choice<P extends string>(name: string, value: unknown, allowed: readonly P[]): P {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as P;
  throw new LockConfigurationError(name, messages.option.choice(name, allowed, value));
}

function policy<P>(name: string, value: unknown, allowed: readonly string[]): P {
  if (typeof value === 'function' || (typeof value === 'string' && allowed.includes(value))) return value as P;
  throw new LockConfigurationError(name, messages.option.oneOf(name, allowed, value));
}

function backendName(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new LockConfigurationError('backend', messages.option.unknownBackend(String(value), []));
  }
  return value;
}
