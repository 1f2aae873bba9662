import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import BetterSqlite3 from 'better-sqlite3';
import { DataSource } from 'typeorm';
import { LockBackendError, LockConfigurationError } from '../../lib';
import {
  CreateDistributedLockTable1764460800000,
  lockTableMigration,
  TypeOrmLockBackend,
  type TypeOrmLockBackendOptions,
} from '../../lib/backends/typeorm';
import { SQLITE_BUSY_INIT_BUDGET_MS } from '../../lib/backends/typeorm/sqlite-busy-retry';
import { connectionOptions, type Database, openDataSource, serverUrl, uniqueTableName } from './sql-fixture';

const signal = new AbortController().signal;

describe('TypeOrmLockBackend options', () => {
  const sqlite = { type: 'better-sqlite3', database: ':memory:' } as const;
  const bad: ReadonlyArray<[string, TypeOrmLockBackendOptions, string]> = [
    ['neither dataSource nor connection', {}, 'dataSource'],
    ['both', { connection: sqlite, dataSource: new DataSource(sqlite) }, 'dataSource'],
    ['an unsupported type', { connection: { type: 'sqljs' } }, 'connection'],
    ['session mode on SQLite', { connection: sqlite, mode: 'session' }, 'mode'],
    ['an unknown mode', { connection: sqlite, mode: 'row' as never }, 'mode'],
    ['notify off PostgreSQL', { connection: sqlite, notify: true }, 'notify'],
    ['a table name with a quote', { connection: sqlite, tableName: 'locks"; --' }, 'tableName'],
    ['an unknown option', { connection: sqlite, ttl: 5 } as never, 'ttl'],
    ['sessionLock in lease mode', { connection: sqlite, sessionLock: 'advisory' }, 'sessionLock'],
    [
      'an unknown sessionLock',
      { connection: { type: 'postgres' }, mode: 'session', sessionLock: 'table' as never },
      'sessionLock',
    ],
  ];

  it.each(bad)('refuses %s with LockConfigurationError before connecting', (_label, options, option) => {
    expect(() => new TypeOrmLockBackend(options)).toThrow(LockConfigurationError);
    expect(() => new TypeOrmLockBackend(options)).toThrow(expect.objectContaining({ option }));
  });

  it('says truthfully what each mode can do', () => {
    expect(new TypeOrmLockBackend({ connection: sqlite }).capabilities).toEqual({
      expiring: true,
      sessionBound: false,
      nativeWait: false,
      queued: false,
    });
    const pg = { type: 'postgres', url: 'postgres://nobody@127.0.0.1:1/none' } as const;
    expect(new TypeOrmLockBackend({ connection: pg, mode: 'session' }).capabilities).toEqual({
      expiring: false,
      sessionBound: true,
      nativeWait: true,
      queued: false,
    });
    expect(new TypeOrmLockBackend({ connection: pg, notify: false }).capabilities.nativeWait).toBe(false);
  });
});

describe.each(['postgres', 'mariadb'] as const)('init at bootstrap (%s)', (database) => {
  it('fails on a wrong address with LockBackendError, without the password', async () => {
    const url = new URL(serverUrl(database));
    url.password = 's3cret-pw';
    url.port = '1';
    const type = database === 'postgres' ? 'postgres' : 'mariadb';
    const backend = new TypeOrmLockBackend({ connection: { type, url: url.toString(), connectTimeout: 2_000 } });
    const failure = await backend.init(signal).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(LockBackendError);
    expect((failure as Error).message).toMatch(/could not connect/);
    expect((failure as Error).message).not.toContain('s3cret-pw');
    await backend.close();
  });
});

describe.each(['postgres', 'mariadb', 'sqlite'] as Database[])('the lock table (%s)', (database) => {
  let dataSource: DataSource;
  beforeAll(async () => {
    dataSource = await openDataSource(database);
  });
  afterAll(() => dataSource.destroy());

  it('init fails on a missing table, naming the ways to create it', async () => {
    const backend = new TypeOrmLockBackend({ dataSource, tableName: uniqueTableName('missing') });
    await expect(backend.init(signal)).rejects.toThrow(/lockTableMigration|createLockTable|createTable: true/);
    await backend.close();
  });

  it('createTable: true creates it at init; the backend then works, and leaves your DataSource open', async () => {
    const tableName = uniqueTableName('created');
    const backend = new TypeOrmLockBackend({ dataSource, tableName, createTable: true });
    try {
      await backend.init(signal);
      await backend.init(signal);
      const call = { signal };
      const taken = await backend.acquire({
        key: 'k',
        owner: 'b'.repeat(32),
        ttl: 5_000,
        keepPlace: false,
        onLost: () => {},
        ...call,
      });
      expect(taken).toMatchObject({ acquired: true, fencingToken: 1n });
      expect(await backend.release({ key: 'k', owner: 'b'.repeat(32) }, call)).toBe(true);
      await backend.close();
      expect(dataSource.isInitialized).toBe(true);
    } finally {
      await dataSource.query(`DROP TABLE IF EXISTS ${dataSource.driver.escape(tableName)}`);
    }
  });

  it('createTable: true lets several instances start at once on a database without the table', async () => {
    // Every instance sees no table and creates it; all but one CREATE fail ("already exists", or a duplicate in
    // PostgreSQL's catalog), yet the table is there, which is all they need. Separate DataSources, as apps.
    const tableName = uniqueTableName('race');
    const sources = await Promise.all(Array.from({ length: 4 }, () => openDataSource(database)));
    const backends = sources.map(
      (source) => new TypeOrmLockBackend({ dataSource: source, tableName, createTable: true }),
    );
    try {
      const started = await Promise.allSettled(backends.map((backend) => backend.init(signal)));
      expect(started.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    } finally {
      await Promise.all(backends.map((backend) => backend.close()));
      await dataSource.query(`DROP TABLE IF EXISTS ${dataSource.driver.escape(tableName)}`);
      await Promise.all(sources.map((source) => source.destroy()));
    }
  });

  it('the migrations create and drop the table', async () => {
    const tableName = uniqueTableName('migrated');
    const Migration = lockTableMigration({ tableName });
    expect(new Migration().name).toMatch(/\d{13}$/);
    expect(new CreateDistributedLockTable1764460800000().name).toMatch(/\d{13}$/);
    const runner = dataSource.createQueryRunner();
    try {
      await new Migration().up(runner);
      expect(await runner.hasTable(tableName)).toBe(true);
      await new Migration().down(runner);
      expect(await runner.hasTable(tableName)).toBe(false);
    } finally {
      await runner.release();
    }
  });

  it('runs on a DataSource the backend owns, and destroys it on close', async () => {
    const tableName = uniqueTableName('owned');
    const backend = new TypeOrmLockBackend({ connection: connectionOptions(database), tableName, createTable: true });
    try {
      await backend.init(signal);
      await backend.ping(signal);
      expect(await backend.isLocked('k', { signal })).toBe(false);
    } finally {
      await dataSource.query(`DROP TABLE IF EXISTS ${dataSource.driver.escape(tableName)}`);
      await backend.close();
      await backend.close();
    }
    await expect(backend.isLocked('k', { signal })).rejects.toThrow(LockBackendError);
  });

  it('initialises itself on first use when nobody called init', async () => {
    const tableName = uniqueTableName('lazy');
    const backend = new TypeOrmLockBackend({ connection: connectionOptions(database), tableName, createTable: true });
    try {
      expect(await backend.isLocked('k', { signal })).toBe(false);
    } finally {
      await dataSource.query(`DROP TABLE IF EXISTS ${dataSource.driver.escape(tableName)}`);
      await backend.close();
    }
  });
});

describe('init on a SQLite file another connection holds (two instances starting at once)', () => {
  // SQLite refuses a connection that asks to switch a file to WAL while another holds it, and one of two
  // instances that switch it at once is refused without any wait. A short busy timeout stands in for that here.
  let dataDir: string;
  let file: string;
  let other: BetterSqlite3.Database;
  const backends: TypeOrmLockBackend[] = [];
  const open = (): TypeOrmLockBackend => {
    const backend = new TypeOrmLockBackend({
      connection: { type: 'better-sqlite3', database: file, enableWAL: true, timeout: 20 },
      createTable: true,
    });
    backends.push(backend);
    return backend;
  };

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'sqlite-busy-'));
    file = join(dataDir, 'locks.sqlite');
    other = new BetterSqlite3(file);
    other.exec('BEGIN EXCLUSIVE');
  });
  afterEach(async () => {
    if (other.inTransaction) other.exec('ROLLBACK');
    other.close();
    await Promise.all(backends.splice(0).map((backend) => backend.close()));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps trying while the file is locked, then starts and locks', async () => {
    const backend = open();
    let settled = false;
    const started = backend.init().finally(() => {
      settled = true;
    });
    // Long enough for several refusals (each waits 20 ms) before the file is let go.
    await sleep(300);
    expect(settled).toBe(false);
    other.exec('COMMIT');
    await started;
    const taken = await backend.acquire({
      key: 'k',
      owner: 'c'.repeat(32),
      ttl: 5_000,
      keepPlace: false,
      onLost: () => {},
      signal,
    });
    expect(taken).toMatchObject({ acquired: true });
    expect(other.pragma('journal_mode', { simple: true })).toBe('wal');
  });

  it("answers a caller whose signal aborts at once with that signal's reason, and starts later", async () => {
    const backend = open();
    const signal = AbortSignal.timeout(200);
    const failure = await backend.init(signal).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBe(signal.reason);
    other.exec('COMMIT');
    await backend.init();
  });

  it('goes on for a caller still waiting when another gives up', async () => {
    const backend = open();
    const gaveUp = backend.init(AbortSignal.timeout(100)).catch((error: unknown) => error);
    const waiting = backend.init();
    expect(await gaveUp).toMatchObject({ name: 'TimeoutError' });
    other.exec('COMMIT');
    await waiting;
  });

  it('does not retry what is not a refusal: a file it cannot open fails at once', async () => {
    const backend = new TypeOrmLockBackend({
      connection: { type: 'better-sqlite3', database: join(dataDir, 'missing-dir', 'locks.sqlite') },
    });
    backends.push(backend);
    const began = Date.now();
    await expect(backend.init()).rejects.toThrow(LockBackendError);
    // No retry budget was spent on it (the budget is seconds).
    expect(Date.now() - began).toBeLessThan(SQLITE_BUSY_INIT_BUDGET_MS / 2);
  });
});
