import type { DataSource, QueryRunner } from 'typeorm';
import type { QuotedTable, SqlDialect, SqlResult, Statement } from './dialect';
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

  async run<T>(statement: Statement<T>, on?: QueryRunner): Promise<T> {
    if (on) return statement.read(await this.query(on, statement));
    const runner = this.dataSource.createQueryRunner();
    try {
      return statement.read(await this.query(runner, statement));
    } finally {
      await runner.release();
    }
  }

  private async query(runner: QueryRunner, statement: Statement<unknown>): Promise<SqlResult> {
    const result = (await runner.query(statement.sql, [...statement.params], true)) as Partial<SqlResult>;
    return { records: result.records ?? [], affected: result.affected, raw: result.raw };
  }
}
