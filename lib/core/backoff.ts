import type { ResolvedRetry } from './options';

/**
 * The pause before attempt `attempt + 1`: exponential from `delay`, capped at `maxDelay`, shortened by a
 * random share of up to `jitter` so that waiters released together do not retry together.
 */
export function backoffDelay(retry: ResolvedRetry, attempt: number, random: () => number = Math.random): number {
  const grown = Math.min(retry.maxDelay, retry.delay * retry.factor ** attempt);
  return Math.max(1, Math.round(grown * (1 - retry.jitter * random())));
}

/**
 * How long a lock may be trusted after its acquisition started: the ttl less the time the request may have
 * spent in flight and a margin for clock drift between this process and the store (1 % of ttl + 2 ms).
 */
export function validityMs(ttl: number): number {
  return ttl - Math.floor(ttl * 0.01) - 2;
}
