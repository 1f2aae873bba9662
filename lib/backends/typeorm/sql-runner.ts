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
   * pool connection back when someone else's transaction holds the row. A connection whose bound could not be
   * undone is closed rather than pooled.
   */
  async runBounded<T>(statement: Statement<T>, signal: AbortSignal): Promise<T> {
    const bound = this.dialect.leaseLockWait;
    if (!bound) return this.run(statement, undefined, signal);
    const runner = this.dataSource.createQueryRunner();
    const connection = (await connectUnlessAborted(runner, signal)) as { destroy?: () => void } | undefined;
    let clean = false;
    try {
      await runner.query(bound.begin);
      try {
        const result = statement.read(await this.query(runner, statement));
        await runner.query(bound.end);
        clean = true;
        return result;
      } catch (error) {
        await runner.query(bound.abort).then(
          () => (clean = true),
          () => undefined,
        );
        throw error;
      }
    } finally {
      if (!clean) {
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
