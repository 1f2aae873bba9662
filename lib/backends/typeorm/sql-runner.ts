import type { DataSource, QueryRunner } from 'typeorm';
import type { QuotedTable, SqlDialect, SqlResult, Statement } from './dialect';
import { noPoolConnection } from './errors';
import { LOCK_COLUMNS, type LockColumn } from './lock-table';

/** Runs a dialect's statements on the DataSource's pool (autocommit) or on a connection a caller holds. */
export class SqlRunner {
  readonly table: QuotedTable;

  constructor(
    private readonly dataSource: DataSource,
    readonly dialect: SqlDialect,
    tableName: string,
  ) {
    const escape = (name: string): string => dataSource.driver.escape(name);
    const columns = Object.fromEntries(
      (Object.keys(LOCK_COLUMNS) as LockColumn[]).map((column) => [column, escape(LOCK_COLUMNS[column])]),
    ) as { [column in LockColumn]: string };
    this.table = { table: escape(tableName), ...columns };
  }

  /**
   * On `on`, or on a pool connection taken for this statement. `signal` stops the wait for a pool connection
   * (a statement already sent runs to its end: the drivers cannot withdraw it).
   */
  async run<T>(statement: Statement<T>, on?: QueryRunner, signal?: AbortSignal): Promise<T> {
    if (on) return statement.read(await this.query(on, statement));
    const runner = this.dataSource.createQueryRunner();
    // On failure connectUnlessAborted has disposed of the runner: releasing it here, before a late connection
    // arrives, would mark it released and leak that connection.
    if (signal) await connectUnlessAborted(runner, signal);
    try {
      return statement.read(await this.query(runner, statement));
    } finally {
      await runner.release();
    }
  }

  /**
   * On a pool connection, with the statement's row-lock wait bounded (dialect.leaseLockWait), for statements
   * that write a lock row: `signal` cannot withdraw a statement already sent, so the bound is what gives its
   * pool connection back when someone else's transaction holds the row.
   */
  async runBounded<T>(statement: Statement<T>, signal: AbortSignal): Promise<T> {
    if (!this.dialect.leaseLockWait) return this.run(statement, undefined, signal);
    const runner = this.dataSource.createQueryRunner();
    await connectUnlessAborted(runner, signal);
    try {
      return await this.runBoundedOn(runner, statement);
    } finally {
      await runner.release().catch(() => undefined);
    }
  }

  /**
   * On `runner`, outside any transaction of its own, with the row-lock wait bounded as in runBounded. A
   * connection whose bound could not be undone is closed (it would leave the pool with a short lock wait, or
   * inside a transaction), and the statement's error thrown.
   */
  async runBoundedOn<T>(runner: QueryRunner, statement: Statement<T>): Promise<T> {
    const bound = this.dialect.leaseLockWait;
    if (!bound) return this.run(statement, runner);
    try {
      await runner.query(bound.begin);
      const result = statement.read(await this.query(runner, statement));
      await runner.query(bound.end);
      return result;
    } catch (error) {
      await runner.query(bound.abort).catch(() => closeConnection(runner));
      throw error;
    }
  }

  private async query(runner: QueryRunner, statement: Statement<unknown>): Promise<SqlResult> {
    const result = (await runner.query(statement.sql, [...statement.params], true)) as Partial<SqlResult>;
    return { records: result.records ?? [], affected: result.affected, raw: result.raw };
  }
}

/**
 * Waits for `runner`'s pool connection, or stops waiting when `signal` aborts (rejecting with noPoolConnection): a
 * pool exhausted by held session locks must not hang a caller that was told to give up. When it rejects, it
 * has disposed of the runner itself: a connection that arrives after the abort goes straight back to the pool
 * (the caller must not release the runner: TypeORM would then drop the late connection on the floor).
 */
export async function connectUnlessAborted(runner: QueryRunner, signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) {
    await runner.release();
    throw noPoolConnection(signal.reason);
  }
  const connecting = runner.connect() as Promise<unknown>;
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(noPoolConnection(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([connecting, aborted]);
  } catch (error) {
    void connecting
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => runner.release())
      .catch(() => undefined);
    throw error;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Takes a connection that cannot be cleaned up out of its pool; never throws. */
async function closeConnection(runner: QueryRunner): Promise<void> {
  try {
    if (runner.isReleased) return;
    // pg: released with an error, pg-pool closes the client instead of pooling it (a TypeORM method).
    const pg = runner as QueryRunner & { releasePostgresConnection?: (error: Error) => Promise<void> };
    if (pg.releasePostgresConnection) return await pg.releasePostgresConnection(new Error('not reusable'));
    // mysql2: destroy() closes the socket and takes the connection out of its pool.
    const connection = (await runner.connect()) as { destroy?: () => void } | undefined;
    connection?.destroy?.();
  } catch {
    // Already gone.
  }
}
