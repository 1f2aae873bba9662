import type { DataSource, QueryRunner } from 'typeorm';
import type { Statement } from './dialect';
import { isConnectionError } from './errors';
import { connectUnlessAborted, type SqlRunner } from './sql-runner';

/**
 * One connection the backend keeps for raising fencing counters in session row mode, where the counter must
 * be raised in autocommit outside the transaction that holds the lock. Taking a second pool connection per
 * acquire instead would deadlock as soon as every pool connection is a holder waiting for its second one
 * (ten concurrent locks on a pool of ten). Statements run one at a time, in order; they are short upserts
 * of rows nobody holds locked. A broken connection is replaced on the next call.
 */
export class TokenConnection {
  private runner?: QueryRunner;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dataSource: DataSource,
    private readonly sql: SqlRunner,
  ) {}

  /** Opens the connection now (at init), so that a later exhausted pool cannot keep it from opening. */
  async open(signal: AbortSignal): Promise<void> {
    await this.enqueue(() => this.connection(signal));
  }

  run<T>(statement: Statement<T>, signal: AbortSignal): Promise<T> {
    return this.enqueue(async () => {
      signal.throwIfAborted();
      const runner = await this.connection(signal);
      try {
        return await this.sql.run(statement, runner);
      } catch (error) {
        if (isConnectionError(error)) await this.drop();
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    await this.enqueue(() => this.drop());
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async connection(signal: AbortSignal): Promise<QueryRunner> {
    if (this.runner && !this.runner.isReleased) return this.runner;
    const runner = this.dataSource.createQueryRunner();
    await connectUnlessAborted(runner, signal);
    this.runner = runner;
    return runner;
  }

  private async drop(): Promise<void> {
    const runner = this.runner;
    this.runner = undefined;
    await runner?.release().catch(() => undefined);
  }
}
