import { createHash } from 'node:crypto';
import type { DataSource, MigrationInterface, QueryRunner } from 'typeorm';
import { Table } from 'typeorm';
import { LockConfigurationError } from '../../core/errors';

/** The table every TypeOrmLockBackend uses unless `tableName` says otherwise. */
export const DEFAULT_LOCK_TABLE = 'distributed_locks';

/**
 * The lock table's columns. One row per key and mode, never deleted, so a key's fencing counter only grows:
 * - `lock_id`: sha-256 of the key (hex). Keys are matched by their hash, so the column collation (MySQL's
 *   case- and trailing-space-insensitive defaults) and index size limits cannot merge or reject keys.
 * - `lock_key`: the key itself, exactly as given, for people reading the table.
 * - `owner`: the holder's 128-bit token, NULL when free (lease mode).
 * - `fencing_token`: the counter; grows on every grant.
 * - `acquired_at_ms`, `expires_at_ms`: ms since the epoch on the database server's clock.
 */
export const LOCK_COLUMNS = {
  id: 'lock_id',
  key: 'lock_key',
  owner: 'owner',
  token: 'fencing_token',
  acquiredAt: 'acquired_at_ms',
  expiresAt: 'expires_at_ms',
} as const;

export type LockColumn = keyof typeof LOCK_COLUMNS;

/** Table names are identifiers, quoted by the driver; this keeps them to what every supported database takes. */
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function checkTableName(tableName: unknown, option = 'tableName'): string {
  if (typeof tableName !== 'string' || !TABLE_NAME.test(tableName)) {
    throw new LockConfigurationError(
      option,
      `Option "${option}" must be a table name of letters, digits and _ (at most 63, not starting with a digit), ` +
        `got ${JSON.stringify(tableName)}.`,
    );
  }
  return tableName;
}

/** The row id of `key`. Keys are well-formed UTF-16 without NUL (the core checks), so UTF-8 is one-to-one. */
export function lockId(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * The row a session-mode holder keeps locked: apart from the key's counter row (`lockId(key)`), because the
 * counter is raised outside the lock's transaction while that row is locked. NUL never occurs in keys, so
 * this input cannot be another key's.
 */
export function sessionLockId(key: string): string {
  return lockId(`${key}\u0000session`);
}

/**
 * The table's definition for the database behind `runner`. On MySQL/MariaDB `lock_key` is utf8mb4 whatever
 * the database's default charset (latin1 before MySQL 8, utf8mb3 on older MariaDB), which would reject keys
 * like 日本 or 🔒 with ER_TRUNC. Other databases have no per-column charset (PostgreSQL's is the database's).
 */
export function lockTable(tableName: string, runner?: QueryRunner): Table {
  const type = runner?.connection.options.type;
  const mysql = type === 'mysql' || type === 'mariadb' || type === 'aurora-mysql';
  return new Table({
    name: tableName,
    columns: [
      { name: LOCK_COLUMNS.id, type: 'varchar', length: '64', isPrimary: true },
      { name: LOCK_COLUMNS.key, type: 'text', ...(mysql ? { charset: 'utf8mb4' } : {}) },
      { name: LOCK_COLUMNS.owner, type: 'varchar', length: '32', isNullable: true },
      { name: LOCK_COLUMNS.token, type: 'bigint' },
      { name: LOCK_COLUMNS.acquiredAt, type: 'bigint' },
      { name: LOCK_COLUMNS.expiresAt, type: 'bigint' },
    ],
  });
}

export interface LockTableOptions {
  /** Default 'distributed_locks'. */
  readonly tableName?: string;
}

/**
 * Creates the lock table if it does not exist, for apps without migrations. Apps with migrations add
 * `CreateDistributedLockTable` (or `lockTableMigration({ tableName })`) to their migrations instead.
 */
export async function createLockTable(dataSource: DataSource, options: LockTableOptions = {}): Promise<void> {
  const tableName = checkTableName(options.tableName ?? DEFAULT_LOCK_TABLE);
  const runner = dataSource.createQueryRunner();
  try {
    await runner.createTable(lockTable(tableName, runner), true);
  } catch (error) {
    // Instances starting at once all see no table and all create it: every CREATE but one fails ("already
    // exists", or a duplicate in PostgreSQL's catalog). The table being there is all this function promises.
    if (!(await runner.hasTable(tableName).catch(() => false))) throw error;
  } finally {
    await runner.release();
  }
}

/** A migration class creating (up) and dropping (down) the lock table named `tableName`. */
export function lockTableMigration(options: LockTableOptions = {}): new () => MigrationInterface {
  const tableName = checkTableName(options.tableName ?? DEFAULT_LOCK_TABLE);
  return class implements MigrationInterface {
    // TypeORM orders migrations by the 13-digit timestamp that ends the name.
    readonly name = `CreateDistributedLockTable_${tableName}_1764460800000`;

    async up(queryRunner: QueryRunner): Promise<void> {
      await queryRunner.createTable(lockTable(tableName, queryRunner), true);
    }

    async down(queryRunner: QueryRunner): Promise<void> {
      await queryRunner.dropTable(tableName, true);
    }
  };
}

/** The migration for the default table name: add it to your DataSource's `migrations`. */
export class CreateDistributedLockTable1764460800000 implements MigrationInterface {
  readonly name = 'CreateDistributedLockTable1764460800000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.createTable(lockTable(DEFAULT_LOCK_TABLE, queryRunner), true);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropTable(DEFAULT_LOCK_TABLE, true);
  }
}
