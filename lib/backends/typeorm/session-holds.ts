import type { DataSource, QueryRunner } from 'typeorm';
import { BUSY_RETRY_MS, pause } from './abortable';
import { lockId, sessionLockId } from './lock-table';
import type { SqlRunner } from './sql-runner';
import { TokenConnection } from './token-connection';

/**
 * What a session lock is held by, on the connection that holds it. `free` and `abandon` leave the connection
 * ready to go back to the pool; a hold that cannot be undone makes them throw, and the caller then closes the
 * connection instead of pooling it.
 */
export interface SessionHold {
  /** Takes the key without waiting; false when another session holds it. */
  take(runner: QueryRunner, key: string): Promise<boolean>;
  /** Frees the key; `notify` runs at the point where waiters should hear of it. */
  free(runner: QueryRunner, key: string, notify: () => Promise<unknown>): Promise<void>;
  /** Gives the key up after a failure or a cancelled acquire. */
  abandon(runner: QueryRunner, key: string): Promise<void>;
  /** Held by any session, in any process. */
  isLocked(key: string, signal?: AbortSignal): Promise<boolean>;
  /** Raises the key's fencing counter in autocommit, outside whatever holds the lock; the new token. */
  nextToken(runner: QueryRunner, key: string, signal: AbortSignal): Promise<bigint>;
  /** Connects what the hold needs besides each lock's own connection (at init). */
  open(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/**
 * A row locked FOR UPDATE NOWAIT by a transaction that stays open while the lock is held. The holding
 * connection is inside that transaction, so counters are raised on the backend's TokenConnection.
 */
export class RowHold implements SessionHold {
  private readonly tokens: TokenConnection;

  constructor(
    dataSource: DataSource,
    private readonly sql: SqlRunner,
  ) {
    this.tokens = new TokenConnection(dataSource, sql);
  }

  nextToken(_runner: QueryRunner, key: string, signal: AbortSignal): Promise<bigint> {
    return this.tokens.run(this.sql.dialect.nextToken(this.sql.table, lockId(key), key), signal);
  }

  open(signal: AbortSignal): Promise<void> {
    return this.tokens.open(signal);
  }

  close(): Promise<void> {
    return this.tokens.close();
  }

  /** BEGIN and lock the key's row without waiting; creates the row the first time a key is used. */
  async take(runner: QueryRunner, key: string): Promise<boolean> {
    const { table, dialect } = this.sql;
    const id = sessionLockId(key);
    for (let attempt = 0; attempt < 2; attempt++) {
      await runner.startTransaction();
      try {
        if (await this.sql.run(dialect.lockRowNowait(table, id), runner)) return true;
      } catch (error) {
        await runner.rollbackTransaction();
        if (dialect.isBusyError(error)) return false;
        throw error;
      }
      await runner.rollbackTransaction();
      await this.sql.run(dialect.insertLockRow(table, id, key), runner);
    }
    throw new Error('the lock row was deleted as soon as it was created; is something purging the lock table?');
  }

  /** COMMIT frees the row; a NOTIFY sent inside the transaction is delivered at that very moment. */
  async free(runner: QueryRunner, _key: string, notify: () => Promise<unknown>): Promise<void> {
    await notify();
    await runner.commitTransaction();
  }

  async abandon(runner: QueryRunner): Promise<void> {
    if (runner.isTransactionActive) await runner.rollbackTransaction();
  }

  /** The row exists and cannot be locked without waiting (an autocommit SKIP LOCKED probe). */
  async isLocked(key: string, signal?: AbortSignal): Promise<boolean> {
    const { table, dialect } = this.sql;
    const id = sessionLockId(key);
    if (await this.sql.run(dialect.isRowFree(table, id), undefined, signal)) return false;
    return this.sql.run(dialect.rowExists(table, id), undefined, signal);
  }
}

/**
 * A PostgreSQL advisory lock / MySQL GET_LOCK held by the connection, named after the table and key (so
 * backends on different tables do not collide). No row and no open transaction; but the lock outlives the
 * connection's return to the pool, so it is always unlocked explicitly, and a connection that cannot unlock
 * is closed rather than pooled.
 */
export class AdvisoryHold implements SessionHold {
  constructor(
    private readonly sql: SqlRunner,
    private readonly tableName: string,
  ) {}

  take(runner: QueryRunner, key: string): Promise<boolean> {
    return this.sql.run(this.sql.dialect.tryAdvisoryLock(this.name(key)), runner);
  }

  /**
   * No transaction is open on the holding connection: the counter is raised right there, in autocommit. Its
   * row-lock wait is bounded and retried until `signal` aborts, so that a counter row held by a transaction
   * outside the backend cannot keep this acquire (and close(), which waits for it) beyond its caller's deadline.
   */
  async nextToken(runner: QueryRunner, key: string, signal: AbortSignal): Promise<bigint> {
    const statement = this.sql.dialect.nextToken(this.sql.table, lockId(key), key);
    for (;;) {
      signal.throwIfAborted();
      try {
        return await this.sql.runBoundedOn(runner, statement);
      } catch (error) {
        if (!this.sql.dialect.isBusyError(error)) throw error;
      }
      await pause(BUSY_RETRY_MS, signal);
    }
  }

  async open(): Promise<void> {}

  async close(): Promise<void> {}

  async free(runner: QueryRunner, key: string, notify: () => Promise<unknown>): Promise<void> {
    await this.abandon(runner, key);
    await notify();
  }

  async abandon(runner: QueryRunner, key: string): Promise<void> {
    if (!(await this.sql.run(this.sql.dialect.advisoryUnlock(this.name(key)), runner))) {
      throw new Error('the advisory lock was not held by its connection');
    }
  }

  isLocked(key: string, signal?: AbortSignal): Promise<boolean> {
    return this.sql.run(this.sql.dialect.isAdvisoryLocked(this.name(key)), undefined, signal);
  }

  private name(key: string): string {
    return lockId(`${this.tableName}\u0000${key}`);
  }
}
