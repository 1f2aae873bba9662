import type { QueryRunner } from 'typeorm';
import { lockId, sessionLockId } from './lock-table';
import type { SqlRunner } from './sql-runner';

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
  isLocked(key: string): Promise<boolean>;
}

/** A row locked FOR UPDATE NOWAIT by a transaction that stays open while the lock is held. */
export class RowHold implements SessionHold {
  constructor(private readonly sql: SqlRunner) {}

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
  async isLocked(key: string): Promise<boolean> {
    const { table, dialect } = this.sql;
    const id = sessionLockId(key);
    if (await this.sql.run(dialect.isRowFree(table, id))) return false;
    return this.sql.run(dialect.rowExists(table, id));
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

  async free(runner: QueryRunner, key: string, notify: () => Promise<unknown>): Promise<void> {
    await this.abandon(runner, key);
    await notify();
  }

  async abandon(runner: QueryRunner, key: string): Promise<void> {
    if (!(await this.sql.run(this.sql.dialect.advisoryUnlock(this.name(key)), runner))) {
      throw new Error('the advisory lock was not held by its connection');
    }
  }

  isLocked(key: string): Promise<boolean> {
    return this.sql.run(this.sql.dialect.isAdvisoryLocked(this.name(key)));
  }

  private name(key: string): string {
    return lockId(`${this.tableName}\u0000${key}`);
  }
}
