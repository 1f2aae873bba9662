import type { DataSource, QueryRunner } from 'typeorm';
import { untilAborted } from '../../core/until-aborted';
import { BUSY_RETRY_MS, pause } from './abortable';
import type { Statement } from './dialect';
import { isConnectionError } from './errors';
import { connectUnlessAborted, type SqlRunner } from './sql-runner';

/** The events a pg Client and a mysql2 connection emit when their socket dies. */
interface ConnectionEvents {
  on(event: 'error' | 'end', listener: () => void): unknown;
  removeListener(event: 'error' | 'end', listener: () => void): unknown;
}

interface Open {
  readonly runner: QueryRunner;
  /** Set when the driver reported the socket dead: the next statement opens a new connection. */
  broken: boolean;
  readonly unwatch: () => void;
}

/**
 * One connection the backend keeps for raising fencing counters in session row mode, where the counter must
 * be raised in autocommit outside the transaction that holds the lock. Taking a second pool connection per
 * acquire instead would deadlock as soon as every pool connection is a holder waiting for its second one
 * (ten concurrent locks on a pool of ten). Statements run one at a time, in order.
 *
 * One key's counter row may be held by a transaction outside the backend (a report, an admin's session). So
 * that it cannot stall every other key's acquire, a statement's row-lock wait is bounded (the dialect's
 * tokenLockWait, set on this connection) and a statement that met a held row goes back to the end of the
 * queue and tries again, until its caller's signal aborts. A caller whose signal aborts stops waiting at once,
 * queued or not. A dead connection is replaced, and the statement tried again once on the new one.
 */
export class TokenConnection {
  private held?: Open;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly closing = new AbortController();

  constructor(
    private readonly dataSource: DataSource,
    private readonly sql: SqlRunner,
  ) {}

  /** Opens the connection now (at init), so that a later exhausted pool cannot keep it from opening. */
  async open(signal: AbortSignal): Promise<void> {
    const stop = AbortSignal.any([signal, this.closing.signal]);
    await this.enqueue(stop, () => this.connection(stop));
  }

  async run<T>(statement: Statement<T>, signal: AbortSignal): Promise<T> {
    const stop = AbortSignal.any([signal, this.closing.signal]);
    let reconnected = false;
    for (;;) {
      try {
        return await this.enqueue(stop, () => this.once(statement, stop));
      } catch (error) {
        if (stop.aborted) throw error;
        // The server dropped the idle connection (restart, failover, idle timeout): once() replaced it.
        if (isConnectionError(error) && !reconnected) {
          reconnected = true;
          continue;
        }
        if (!this.sql.dialect.isBusyError(error)) throw error;
      }
      await pause(BUSY_RETRY_MS, stop);
    }
  }

  /** Stops every waiting statement, waits for the one running (its lock wait is bounded), gives the connection back. */
  async close(): Promise<void> {
    this.closing.abort(new Error('the lock backend is closing'));
    await this.tail;
    await this.drop();
  }

  private async once<T>(statement: Statement<T>, signal: AbortSignal): Promise<T> {
    const runner = await this.connection(signal);
    try {
      return await this.sql.run(statement, runner);
    } catch (error) {
      if (isConnectionError(error)) await this.drop();
      throw error;
    }
  }

  /** Runs `work` in its turn; rejects as soon as `signal` aborts (a queued `work` is then skipped). */
  private enqueue<T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(() => {
      signal.throwIfAborted();
      return work();
    });
    this.tail = result.catch(() => undefined);
    return untilAborted(result, signal);
  }

  private async connection(signal: AbortSignal): Promise<QueryRunner> {
    const current = this.held;
    if (current && !current.broken && !current.runner.isReleased) return current.runner;
    if (current) await this.drop();
    const runner = this.dataSource.createQueryRunner();
    const events = (await connectUnlessAborted(runner, signal)) as ConnectionEvents;
    const dead = (): void => {
      open.broken = true;
    };
    events.on('error', dead);
    events.on('end', dead);
    const open: Open = {
      runner,
      broken: false,
      unwatch: () => {
        events.removeListener('error', dead);
        events.removeListener('end', dead);
      },
    };
    this.held = open;
    const bound = this.sql.dialect.tokenLockWait?.bound;
    if (bound !== undefined) {
      try {
        await runner.query(bound);
      } catch (error) {
        await this.drop();
        throw error;
      }
    }
    return runner;
  }

  /** Gives the connection back, with the pool's lock wait restored (a dead one is released as it is). */
  private async drop(): Promise<void> {
    const open = this.held;
    this.held = undefined;
    if (!open) return;
    open.unwatch();
    const unbound = this.sql.dialect.tokenLockWait?.unbound;
    if (!open.broken && !open.runner.isReleased && unbound !== undefined) {
      await open.runner.query(unbound).catch(() => undefined);
    }
    await open.runner.release().catch(() => undefined);
  }
}
