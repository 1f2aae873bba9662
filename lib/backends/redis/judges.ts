import type { AcquireOutcome } from '../lock-backend';
import type { Tally } from './quorum';

/**
 * How each call's answers from the nodes add up to one result. A judge returns undefined while more answers
 * could change the result, and `{ failed: true }` when node failures leave too few answers to decide.
 */
export type Verdict<R> = { readonly failed: false; readonly value: R } | { readonly failed: true };

const decided = <R>(value: R): Verdict<R> => ({ failed: false, value });
const FAILED: Verdict<never> = { failed: true };

/** What the acquire script answers: [1, token] granted, [0, pttl] held, [2, ms] promised to a waiter ahead. */
export type AcquireAnswer = readonly [0 | 1 | 2, number];

export function judgeAcquire(tally: Tally<AcquireAnswer>): Verdict<AcquireOutcome> | undefined {
  let granted = 0;
  let busy = 0;
  let held = false;
  let token = 0;
  let retryAfterMs = Infinity;
  for (const answer of tally.answers) {
    if (answer === undefined) continue;
    if (answer[0] === 1) {
      granted++;
      if (answer[1] > token) token = answer[1];
      continue;
    }
    busy++;
    if (answer[0] === 0) held = true;
    if (answer[1] > 0) retryAfterMs = Math.min(retryAfterMs, answer[1]);
  }
  // The fencing token is the highest counter among the granting nodes (see README: fencing across nodes).
  if (granted >= tally.quorum) return decided({ acquired: true, fencingToken: BigInt(token) });
  const spare = tally.total - tally.quorum;
  if (tally.failures.length > spare) return FAILED;
  if (busy + tally.failures.length > spare) {
    return decided({
      acquired: false,
      ...(Number.isFinite(retryAfterMs) ? { retryAfterMs } : {}),
      ...(held ? {} : { promised: true }),
    });
  }
  return undefined;
}

/** Release and extend answer 1 (done for the owner) or 0 (the owner held nothing there). */
export function judgeConfirmed(tally: Tally<number>, complete: boolean): Verdict<boolean> | undefined {
  let yes = 0;
  let no = 0;
  for (const answer of tally.answers) {
    if (answer === 1) yes++;
    else if (answer === 0) no++;
  }
  if (yes >= tally.quorum) return decided(true);
  if (no > tally.total - tally.quorum) return decided(false);
  if (!complete) return undefined;
  return tally.failures.length > 0 ? FAILED : decided(false);
}

/** What the probe script answers: [0, 0] free for the asker, [1, pttl] held, [2, ms] promised to another. */
export type ProbeAnswer = readonly [0 | 1 | 2, number];

/** Locked when a newcomer could not gather a quorum: more than N − quorum nodes refuse. */
export function judgeLocked(tally: Tally<ProbeAnswer>, complete: boolean): Verdict<boolean> | undefined {
  let locked = 0;
  let free = 0;
  for (const answer of tally.answers) {
    if (answer === undefined) continue;
    if (answer[0] === 0) free++;
    else locked++;
  }
  if (locked > tally.total - tally.quorum) return decided(true);
  if (free >= tally.quorum) return decided(false);
  return complete ? FAILED : undefined;
}

/** A waiter may go and try when a quorum of nodes would let it take the key. */
export function judgeTakeable(tally: Tally<ProbeAnswer>, complete: boolean): Verdict<boolean> | undefined {
  let takeable = 0;
  for (const answer of tally.answers) if (answer !== undefined && answer[0] === 0) takeable++;
  if (takeable >= tally.quorum) return decided(true);
  return complete ? decided(false) : undefined;
}

/** Ping and init: enough nodes answer to reach a quorum. */
export function judgeReachable(tally: Tally<true>, complete: boolean): Verdict<true> | undefined {
  const ok = tally.answers.filter((a) => a === true).length;
  if (ok >= tally.quorum) return decided(true);
  if (tally.failures.length > tally.total - tally.quorum) return FAILED;
  return complete ? FAILED : undefined;
}
