import type { DataSource, DataSourceOptions } from 'typeorm';
import { LockConfigurationError } from '../../core/errors';
import { checkTableName, DEFAULT_LOCK_TABLE } from './lock-table';

export type TypeOrmLockMode = 'lease' | 'session';
export type TypeOrmSessionLock = 'row' | 'advisory';

export interface TypeOrmLockBackendOptions {
  /**
   * Your application's DataSource (e.g. the one @nestjs/typeorm provides, injected through forRootAsync).
   * It must be initialised by its owner; the backend only runs its own statements on it, never `synchronize`,
   * and leaves it open on close. Give this or `connection`.
   */
  readonly dataSource?: DataSource;
  /**
   * Connection options for a DataSource the backend owns: created here, initialised by `init`, destroyed by
   * `close`. Types: 'postgres', 'mysql', 'mariadb', 'better-sqlite3'. Its entities and `synchronize` are ignored.
   */
  readonly connection?: DataSourceOptions;
  /**
   * 'lease' (default): a row with an expiry on the database clock; a dead holder's key frees after ttl.
   * 'session': a row locked FOR UPDATE in a transaction kept open on a dedicated connection; the database
   * frees it the moment that connection dies, with no ttl. PostgreSQL and MySQL/MariaDB only.
   */
  readonly mode?: TypeOrmLockMode;
  /**
   * Session mode only: what holds the lock. 'row' (default): the key's row locked FOR UPDATE in an open
   * transaction. 'advisory': a PostgreSQL advisory lock / MySQL GET_LOCK held by the connection — no row lock
   * and no long transaction (nothing for VACUUM or the undo log to wait on); always unlocked explicitly.
   */
  readonly sessionLock?: TypeOrmSessionLock;
  /** The lock table; default 'distributed_locks'. Letters, digits and _ only. */
  readonly tableName?: string;
  /** Create the table at `init` if it is missing (apps without migrations). Default false: `init` checks it. */
  readonly createTable?: boolean;
  /**
   * PostgreSQL only: wake waiters with LISTEN/NOTIFY on release instead of waiting for the next poll.
   * Default true on PostgreSQL; setting it on another database is a configuration error. It keeps one pool
   * connection while anyone waits.
   */
  readonly notify?: boolean;
}

export type SqlDatabase = 'postgres' | 'mysql' | 'sqlite';

export interface ResolvedOptions {
  readonly database: SqlDatabase;
  readonly mode: TypeOrmLockMode;
  readonly sessionLock: TypeOrmSessionLock;
  readonly tableName: string;
  readonly createTable: boolean;
  readonly notify: boolean;
}

const KNOWN: readonly (keyof TypeOrmLockBackendOptions)[] = [
  'dataSource',
  'connection',
  'mode',
  'sessionLock',
  'tableName',
  'createTable',
  'notify',
];

const DATABASES: Readonly<Record<string, SqlDatabase>> = {
  postgres: 'postgres',
  mysql: 'mysql',
  mariadb: 'mysql',
  'better-sqlite3': 'sqlite',
};

const fail = (option: string, message: string): never => {
  throw new LockConfigurationError(option, message);
};

/** Checks every option before anything connects; throws LockConfigurationError saying what to fix. */
export function resolveOptions(options: TypeOrmLockBackendOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) fail('options', 'TypeOrmLockBackend options must be an object.');
  for (const name of Object.keys(options)) {
    if (!(KNOWN as readonly string[]).includes(name)) {
      fail(name, `TypeOrmLockBackend has no option "${name}". Known options: ${KNOWN.join(', ')}.`);
    }
  }
  const { dataSource, connection } = options;
  if ((dataSource === undefined) === (connection === undefined)) {
    fail('dataSource', 'TypeOrmLockBackend needs exactly one of "dataSource" (yours) or "connection" (options).');
  }
  const type: unknown = dataSource ? dataSource.options?.type : connection?.type;
  const database = typeof type === 'string' ? DATABASES[type] : undefined;
  if (database === undefined) {
    return fail(
      dataSource ? 'dataSource' : 'connection',
      `TypeOrmLockBackend supports the TypeORM types ${Object.keys(DATABASES).join(', ')}; got ${JSON.stringify(type)}.`,
    );
  }
  const mode = options.mode ?? 'lease';
  if (mode !== 'lease' && mode !== 'session') {
    fail('mode', `Option "mode" must be 'lease' or 'session', got ${JSON.stringify(mode)}.`);
  }
  if (mode === 'session' && database === 'sqlite') {
    fail(
      'mode',
      `Session mode needs row locks held by an open transaction, which SQLite does not have (it locks the whole ` +
        `database file). Use mode 'lease' with SQLite, or PostgreSQL/MySQL/MariaDB for session mode.`,
    );
  }
  const sessionLock = options.sessionLock ?? 'row';
  if (sessionLock !== 'row' && sessionLock !== 'advisory') {
    fail('sessionLock', `Option "sessionLock" must be 'row' or 'advisory', got ${JSON.stringify(sessionLock)}.`);
  }
  if (options.sessionLock !== undefined && mode !== 'session') {
    fail('sessionLock', `Option "sessionLock" applies to mode 'session' only; leave it unset in lease mode.`);
  }
  for (const flag of ['createTable', 'notify'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') {
      fail(flag, `Option "${flag}" must be true or false, got ${JSON.stringify(options[flag])}.`);
    }
  }
  if (options.notify === true && database !== 'postgres') {
    fail('notify', `Option "notify" (LISTEN/NOTIFY) is PostgreSQL only; ${String(type)} waiters poll. Leave it unset.`);
  }
  return {
    database,
    mode,
    sessionLock,
    tableName: checkTableName(options.tableName ?? DEFAULT_LOCK_TABLE),
    createTable: options.createTable ?? false,
    notify: database === 'postgres' && options.notify !== false,
  };
}
