import type { DataSource, QueryRunner } from 'typeorm';
import type { AcquireOutcome, AcquireRequest, LeaseRef } from '../lock-backend';
import { lockId, sessionLockId } from './lock-table';
import type { SqlRunner } from './sql-runner';

/** The events a pg Client and a mysql2 connection emit when their socket dies. */
interface ConnectionEvents {
  on(event: 'error' | 'end', listener: (error?: unknown) => void): unknown;
  removeListener(event: 'error' | 'end', listener: (error?: unknown) => void): unknown;
  destroy?(): void;
}

interface Session {
  readonly owner: string;
  readonly runner: QueryRunner;
  /** Stops watching the connection; called once, when the lock ends either way. */
  readonly unwatch: () => void;
}

/**
 * Session mode: the lock is a row locked FOR UPDATE by a transaction kept open on a connection of its own
 * for as long as the lock is held. When that connection dies — the process was killed, the network broke,
 * an admin ended the backend — the database rolls the transaction back and frees the row by itself; this
 * process hears of it from the connection's error/end event and reports the lock lost. There is no ttl.
 *
 * Waiting never blocks in the database: NOWAIT fails at once on a held row and the core retries.
 *
 * Fencing token: the key's counter row (a different row from the one locked) is raised in autocommit on
 * another pool connection after the lock is taken. Raised inside the lock's transaction it would be rolled
 * back when a holder dies, and the next holder would get the same token the dead one may have used.
 */
export class SessionLocks {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly dataSource: DataSource,
    private readonly sql: SqlRunner,
    private readonly notifyChannel: string | undefined,
  ) {}

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    const runner = this.dataSource.createQueryRunner();
    let connection: ConnectionEvents | undefined;
    try {
      connection = (await runner.connect()) as ConnectionEvents;
      if (!(await this.lockRow(runner, request.key))) {
        await this.give(runner);
        return { acquired: false };
      }
      const fencingToken = await this.sql.run(
        this.sql.dialect.nextToken(this.sql.table, lockId(request.key), request.key),
      );
      if (request.signal.aborted) {
        // The core stopped waiting for this answer: nobody would release the lock, so give it up now.
        await this.end(runner, 'rollback');
        return { acquired: false };
      }
      this.sessions.set(request.key, {
        owner: request.owner,
        runner,
        unwatch: this.watch(request, runner, connection),
      });
      return { acquired: true, fencingToken };
    } catch (error) {
      await this.discard(runner, connection);
      throw error;
    }
  }

  /** Commits the lock's transaction (which frees the row) and gives the connection back; owner-checked. */
  async release(lease: LeaseRef): Promise<boolean> {
    const session = this.take(lease);
    if (!session) return false;
    try {
      if (this.notifyChannel !== undefined) {
        // Delivered when the transaction commits, i.e. exactly when the row is free.
        await session.runner.query('SELECT pg_notify($1, $2)', [this.notifyChannel, lockId(lease.key)]);
      }
      await this.end(session.runner, 'commit');
      return true;
    } catch (error) {
      // The connection is broken: the database frees the row when it notices; this lock is over either way.
      await this.discard(session.runner, undefined, true);
      throw error;
    }
  }

  /** No ttl to restart: proves the holding connection still answers. */
  async extend(lease: LeaseRef): Promise<boolean> {
    const session = this.sessions.get(lease.key);
    if (!session || session.owner !== lease.owner) return false;
    await session.runner.query('SELECT 1');
    return true;
  }

  /** Held by anyone (any process): the row exists and cannot be locked without waiting. */
  async isLocked(key: string): Promise<boolean> {
    const { table, dialect } = this.sql;
    const id = sessionLockId(key);
    if (await this.sql.run(dialect.isRowFree(table, id))) return false;
    return this.sql.run(dialect.rowExists(table, id));
  }

  /** Gives up every lock this backend holds; the database frees their rows. */
  async close(): Promise<void> {
    const sessions = [...this.sessions.keys()].map((key) => this.take({ key, owner: this.sessions.get(key)!.owner }));
    await Promise.all(
      sessions.map((session) => session && this.end(session.runner, 'rollback').catch(() => undefined)),
    );
  }

  /** BEGIN and lock the key's row without waiting; creates the row the first time a key is used. */
  private async lockRow(runner: QueryRunner, key: string): Promise<boolean> {
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

  private watch(request: AcquireRequest, runner: QueryRunner, connection: ConnectionEvents): () => void {
    const lost = (error?: unknown): void => {
      const session = this.sessions.get(request.key);
      if (session?.runner !== runner) return;
      this.sessions.delete(request.key);
      session.unwatch();
      void this.discard(runner, connection, true);
      const why = error instanceof Error ? `: ${error.message}` : '';
      request.onLost(`the database connection holding it closed${why}; the database has freed the row.`);
    };
    connection.on('error', lost);
    connection.on('end', lost);
    return () => {
      connection.removeListener('error', lost);
      connection.removeListener('end', lost);
    };
  }

  private take(lease: LeaseRef): Session | undefined {
    const session = this.sessions.get(lease.key);
    if (!session || session.owner !== lease.owner) return undefined;
    this.sessions.delete(lease.key);
    session.unwatch();
    return session;
  }

  private async end(runner: QueryRunner, how: 'commit' | 'rollback'): Promise<void> {
    if (how === 'commit') await runner.commitTransaction();
    else await runner.rollbackTransaction();
    await this.give(runner);
  }

  private async give(runner: QueryRunner): Promise<void> {
    if (!runner.isReleased) await runner.release();
  }

  /**
   * Ends whatever the connection was doing: rolls back an open transaction, or closes a connection that is
   * broken (or cannot roll back) instead of handing it back to the pool.
   */
  private async discard(runner: QueryRunner, connection: ConnectionEvents | undefined, broken = false): Promise<void> {
    if (!broken && runner.isTransactionActive) {
      broken = await runner.rollbackTransaction().then(
        () => false,
        () => true,
      );
    }
    if (broken) {
      try {
        // mysql2 connections leave their pool this way; pg ones already left it when TypeORM saw the error.
        connection?.destroy?.();
      } catch {
        // Already gone.
      }
    }
    await runner.release().catch(() => undefined);
  }
}
