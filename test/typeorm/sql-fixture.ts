import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { systemClock } from '../../lib';
import type { LockBackend } from '../../lib';
import {
  createLockTable,
  TypeOrmLockBackend,
  type TypeOrmLockMode,
  type TypeOrmSessionLock,
} from '../../lib/backends/typeorm';
import type { ContractHarness } from '../contract/lock-backend.contract';

export type Database = 'postgres' | 'mariadb' | 'sqlite';

const URL_VARS = { postgres: 'POSTGRES_URL', mariadb: 'MYSQL_URL' } as const;

/** Where the test server listens; fails loudly (never skips) when the variable is missing. */
export function serverUrl(database: 'postgres' | 'mariadb'): string {
  const name = URL_VARS[database];
  const url = process.env[name];
  if (!url) {
    throw new Error(
      `${name} is not set. Start the test databases first: ` +
        `source test/services/lib.sh && source test/services/sql.sh && start_sql (or run bash test/run-all.sh).`,
    );
  }
  return url;
}

/** A table name no other test file, worker or engineer uses. */
export function uniqueTableName(label: string): string {
  return `lk_${label}_${randomBytes(5).toString('hex')}`;
}

let sqliteDir: string | undefined;
/** One temp SQLite file per test process, removed when it exits; LOCK_SQLITE_FILE shares one with a child. */
export function sqliteFile(): string {
  const shared = process.env['LOCK_SQLITE_FILE'];
  if (shared) return shared;
  if (!sqliteDir) {
    const dir = mkdtempSync(join(tmpdir(), 'lock-sqlite-'));
    sqliteDir = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return join(sqliteDir, 'locks.db');
}

/** Connection options for `database`; `name` tags PostgreSQL connections so a test can find and end them. */
export function connectionOptions(database: Database, name = 'lock-test'): DataSourceOptions {
  switch (database) {
    case 'postgres':
      return { type: 'postgres', url: serverUrl('postgres'), applicationName: name, poolSize: 30 };
    case 'mariadb':
      return { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 30 };
    case 'sqlite':
      return { type: 'better-sqlite3', database: sqliteFile(), timeout: 10_000 };
  }
}

export async function openDataSource(database: Database, name?: string): Promise<DataSource> {
  return new DataSource(connectionOptions(database, name)).initialize();
}

/** Ends every connection of `target` from the server side, as a crashed holder or an admin would. */
export async function killConnections(admin: DataSource, target: DataSource, database: Database): Promise<void> {
  if (database === 'postgres') {
    const name = (target.options as { applicationName?: string }).applicationName;
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [name]);
  } else if (database === 'mariadb') {
    // mysql2 keeps its pool's connections here; each knows its server thread id.
    const pool = (target.driver as unknown as { pool: { _allConnections: { toArray(): { threadId: number }[] } } })
      .pool;
    for (const { threadId } of pool._allConnections.toArray()) {
      await admin.query(`KILL CONNECTION ${Number(threadId)}`).catch(() => undefined);
    }
  } else {
    throw new Error('SQLite has no server connections to end');
  }
  // The server has dropped them; give the client a moment to read the close and report the loss.
  await new Promise((resolve) => setTimeout(resolve, 200));
}

/** A lock table created for one test file and dropped at its end. */
export class TestTable {
  readonly name: string;

  private constructor(
    readonly admin: DataSource,
    readonly database: Database,
    label: string,
  ) {
    this.name = uniqueTableName(label);
  }

  static async create(database: Database, label: string): Promise<TestTable> {
    const table = new TestTable(await openDataSource(database, `lock-admin-${label}`), database, label);
    await createLockTable(table.admin, { tableName: table.name });
    return table;
  }

  async drop(): Promise<void> {
    await this.admin.query(`DROP TABLE IF EXISTS ${this.admin.driver.escape(this.name)}`).catch(() => undefined);
    await this.admin.destroy();
  }
}

/** The contract harness on one database and mode: every backend on its own DataSource, as separate apps. */
export async function contractHarness(
  database: Database,
  mode: TypeOrmLockMode,
  sessionLock?: TypeOrmSessionLock,
): Promise<ContractHarness> {
  const table = await TestTable.create(database, `contract_${mode}`);
  const dataSources = new Map<LockBackend, DataSource>();
  const open = async (): Promise<LockBackend> => {
    const dataSource = await openDataSource(database, `lock-${randomBytes(6).toString('hex')}`);
    const backend = new TypeOrmLockBackend({ dataSource, mode, sessionLock, tableName: table.name });
    await backend.init(new AbortController().signal);
    dataSources.set(backend, dataSource);
    return backend;
  };
  const closeAll = async (): Promise<void> => {
    for (const [backend, dataSource] of dataSources) {
      await backend.close();
      if (dataSource.isInitialized) await dataSource.destroy();
    }
    dataSources.clear();
  };
  return {
    backend: await open(),
    clock: systemClock,
    ttl: 300,
    // A real store needs round trips for what each step starts (a LISTEN, a look at the row): give it 25 ms.
    elapse: (ms) => new Promise((resolve) => setTimeout(resolve, ms + 25)),
    reopen: open,
    loseSession:
      mode === 'session' ? (backend) => killConnections(table.admin, dataSources.get(backend)!, database) : undefined,
    close: async () => {
      await closeAll();
      await table.drop();
    },
  };
}
