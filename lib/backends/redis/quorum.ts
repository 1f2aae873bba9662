import type { RedisNode } from './redis-node';
import { NodeCallError } from './redis-node';

/** What the nodes of one call answered so far. */
export interface Tally<T> {
  readonly total: number;
  /** ⌊total/2⌋+1 */
  readonly quorum: number;
  /** Index by node; undefined while a node has not answered, or when it failed. */
  readonly answers: (T | undefined)[];
  readonly failures: { readonly node: string; readonly error: unknown }[];
  answered: number;
}

/** Returns the call's result once the tally decides it, undefined while more answers could change it. */
export type Judge<T, R> = (tally: Tally<T>, complete: boolean) => R | undefined;

export interface CallLimits {
  /** Rejects the call when it aborts; without one the call ends by its answers or its timeout. */
  readonly signal: AbortSignal | undefined;
  /** ms after which nodes that have not answered count as failed. */
  readonly timeoutMs: number;
}

export function quorumOf(nodes: number): number {
  return Math.floor(nodes / 2) + 1;
}

/**
 * Asks every node at once and settles as soon as `judge` can decide — the quorum is reached, or can no
 * longer be — without waiting for the slowest node. Nodes that do not answer within the timeout count as
 * failed; an aborted signal rejects. Answers arriving after the decision are ignored here (the caller undoes
 * what they may have done, e.g. a vote, by a call queued behind them on the same connection).
 */
export function onEveryNode<T, R>(
  nodes: readonly RedisNode[],
  ask: (node: RedisNode, index: number) => Promise<T>,
  judge: Judge<T, R>,
  limits: CallLimits,
): Promise<R> {
  const tally: Tally<T> = {
    total: nodes.length,
    quorum: quorumOf(nodes.length),
    answers: new Array<T | undefined>(nodes.length),
    failures: [],
    answered: 0,
  };
  const pending = new Array<boolean>(nodes.length).fill(true);
  return new Promise<R>((resolve, reject) => {
    let settled = false;
    const finish = (result: R | undefined, complete: boolean): void => {
      if (settled) return;
      const verdict = result !== undefined ? result : complete ? judge(tally, true) : undefined;
      if (verdict === undefined) return;
      settled = true;
      clearTimeout(timer);
      limits.signal?.removeEventListener('abort', onAbort);
      resolve(verdict);
    };
    const record = (index: number, answer: T | undefined, error?: unknown): void => {
      if (settled || !pending[index]) return;
      pending[index] = false;
      tally.answered++;
      if (error === undefined) tally.answers[index] = answer;
      else tally.failures.push({ node: nodes[index]!.label, error });
      const complete = tally.answered === tally.total;
      finish(judge(tally, complete), complete);
    };
    const onTimeout = (): void => {
      const error = new NodeCallError(`no answer within ${limits.timeoutMs} ms`);
      for (let i = 0; i < nodes.length; i++) if (pending[i]) record(i, undefined, error);
    };
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(limits.signal?.reason instanceof Error ? limits.signal.reason : new NodeCallError('cancelled'));
    };
    const timer = setTimeout(onTimeout, limits.timeoutMs);
    timer.unref();
    if (limits.signal?.aborted) return onAbort();
    limits.signal?.addEventListener('abort', onAbort, { once: true });
    nodes.forEach((node, i) => {
      ask(node, i).then(
        (answer) => record(i, answer),
        (error: unknown) => record(i, undefined, error ?? new NodeCallError('failed')),
      );
    });
  });
}
