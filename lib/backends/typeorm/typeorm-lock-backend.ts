import { DataSource } from 'typeorm';
import { LockBackendError } from '../../core/errors';
import { NEVER_ABORTED } from '../../core/never-aborted';
import type {
  AcquireOutcome,
  AcquireRequest,
  ConnectionChange,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  StoreCall,
  WaitForRelease,
} from '../lock-backend';
import { ConnectionState } from './connection-state';
import type { SqlDialect } from './dialect';
import { mysqlDialect } from './dialects/mysql';
import { postgresDialect } from './dialects/postgres';
import { sqliteDialect } from './dialects/sqlite';
import { BACKEND_KIND, backendError, closedError, describeCause, SqlCallError } from './errors';
import { LeaseLocks } from './lease-locks';
import { createLockTable, lockId } from './lock-table';
import { type ResolvedOptions, resolveOptions, type SqlDatabase, type TypeOrmLockBackendOptions } from './options';
import { ReleaseListener } from './release-listener';
import { AdvisoryHold, RowHold } from './session-holds';
import { SessionLocks } from './session-locks';
import { SqlRunner } from './sql-runner';
import { SharedStart } from '../../core/shared-start';
import { retryWhileSqliteBusy, SqliteHandles } from './sqlite-busy-retry';

const DIALECTS: Readonly<Record<SqlDatabase, SqlDialect>> = {
  postgres: postgresDialect,
  mysql: mysqlDialect,
  sqlite: sqliteDialect,
};

/** What both modes offer; the backend adds the connection, errors and waiting around them. */
type ModeLocks = Pick<LeaseLocks, 'acquire' | 'release' | 'extend' | 'isLocked' | 'open' | 'close'>;

/**
 * Locks as rows of one table, through TypeORM, on PostgreSQL, MySQL/MariaDB or SQLite (better-sqlite3).
 * Lease mode (default) is `expiring`; session mode (PostgreSQL, MySQL/MariaDB) is `sessionBound`. On
 * PostgreSQL waiters are woken by LISTEN/NOTIFY (`nativeWait`); elsewhere they poll. See lease-locks.ts and
 * session-locks.ts for how each mode works and keeps its fencing token.
 */
export class TypeOrmLockBackend implements LockBackend {
  readonly kind = BACKEND_KIND;
  readonly capabilities: LockBackendCapabilities;
  private readonly options: ResolvedOptions;
  private readonly dataSource: DataSource;
  private readonly ownsDataSource: boolean;
  private readonly locks: ModeLocks;
  private readonly listener?: ReleaseListener;
  private readonly connection = new ConnectionState();
  /** close() stops it with the closed error: a start it interrupts fails with that. */
  private readonly starting = new SharedStart((signal) => this.initialise(signal));
  private readonly sqliteHandles = new SqliteHandles();
  private closed = false;

  constructor(options: TypeOrmLockBackendOptions) {
    this.options = resolveOptions(options);
    this.ownsDataSource = options.dataSource === undefined;
    this.dataSource =
      options.dataSource ??
      new DataSource(
        this.sqliteHandles.track({
          ...options.connection!,
          entities: [],
          migrations: [],
          synchronize: false,
          migrationsRun: false,
        }),
      );
    const sql = new SqlRunner(this.dataSource, DIALECTS[this.options.database], this.options.tableName);
    // Identifiers are at most 63 bytes in PostgreSQL; the table name is at most 63 characters of [A-Za-z0-9_].
    const channel = this.options.notify ? `${this.options.tableName.slice(0, 54)}_released` : undefined;
    if (channel) this.listener = new ReleaseListener(this.dataSource, channel);
    this.locks =
      this.options.mode === 'lease'
        ? new LeaseLocks(sql, channel)
        : new SessionLocks(
            this.dataSource,
            this.options.sessionLock === 'advisory'
              ? new AdvisoryHold(sql, this.options.tableName)
              : new RowHold(this.dataSource, sql),
            channel,
          );
    this.capabilities = {
      expiring: this.options.mode === 'lease',
      sessionBound: this.options.mode === 'session',
      nativeWait: this.listener !== undefined,
      queued: false,
    };
  }

  /** The mode in use: 'lease' or 'session'. */
  get mode(): ResolvedOptions['mode'] {
    return this.options.mode;
  }

  /**
   * Connects (a DataSource the backend owns) and checks the lock table can be read, creating it first with
   * `createTable`. A wrong address or a missing table fails here, at bootstrap. Idempotent. Callers at once
   * share one start, each stopping its own wait with its own signal (see SharedStart).
   */
  init(signal: AbortSignal = NEVER_ABORTED): Promise<void> {
    if (this.closed) return Promise.reject(closedError('start'));
    return this.starting.join(signal);
  }

  async ping(signal: AbortSignal): Promise<void> {
    await this.store('reach the database', signal, () => this.dataSource.query('SELECT 1'));
  }

  acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    return this.store('acquire a lock', request.signal, () => this.locks.acquire(request));
  }

  release(lease: LeaseRef, call: StoreCall): Promise<boolean> {
    return this.store('release a lock', call.signal, () => this.locks.release(lease, call.signal));
  }

  extend(lease: LeaseRef, ttl: number, call: StoreCall): Promise<boolean> {
    return this.store('extend a lock', call.signal, () => this.locks.extend(lease, ttl, call.signal));
  }

  isLocked(key: string, call: StoreCall): Promise<boolean> {
    return this.store('read a lock', call.signal, () => this.locks.isLocked(key, call.signal));
  }

  /**
   * Looks once whether the key is free (resolving at once if so), then waits for the timeout or the signal.
   * On PostgreSQL it LISTENs before looking (so a release in between is not missed) and also wakes on the
   * NOTIFY of this key's release. Never rejects: a failed look counts as "not free".
   */
  async waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.closed || wait.signal.aborted) return;
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const timer = setTimeout(wake, wait.timeoutMs);
    timer.unref();
    wait.signal.addEventListener('abort', wake, { once: true });
    const subscription = this.listener?.subscribe(lockId(wait.key), wake);
    // Ends the look at the row (e.g. its wait for a pool connection) when the wait ends, however it ends.
    const done = new AbortController();
    try {
      // Neither LISTEN nor the look may outlast the wait: a pool with no free connection must not hang it.
      const settled = woken.then(() => true);
      if (subscription && (await Promise.race([subscription.ready.then(() => false), settled]))) return;
      const free = this.locks.isLocked(wait.key, done.signal).then(
        (locked) => !locked,
        () => false,
      );
      if (await Promise.race([free, settled])) wake();
      await woken;
    } finally {
      done.abort();
      clearTimeout(timer);
      wait.signal.removeEventListener('abort', wake);
      subscription?.unsubscribe();
    }
  }

  /**
   * Lease mode: `suspended` when a statement fails for want of a connection, `reconnected` when one succeeds
   * again (the leases stay valid until their ttl either way). Session mode reports nothing here: each lock's
   * own connection reports its loss through onLost.
   */
  watchConnection(listener: (change: ConnectionChange) => void): () => void {
    return this.connection.watch(listener);
  }

  /**
   * Gives up held session locks, stops listening, and destroys the DataSource if the backend created it. The
   * locks go first, and both at once: a LISTEN still waiting for a pool connection that the held locks use
   * must not keep them held.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.starting.stop(closedError('start'));
    await Promise.all([this.locks.close(), this.listener?.close()]);
    if (this.ownsDataSource && this.dataSource.isInitialized) await this.dataSource.destroy();
  }

  private async initialise(signal: AbortSignal): Promise<void> {
    if (!this.dataSource.isInitialized) {
      if (!this.ownsDataSource) {
        throw new LockBackendError(
          BACKEND_KIND,
          `Lock backend "${BACKEND_KIND}" was given a DataSource that is not initialised. Initialise it first ` +
            `(with @nestjs/typeorm, inject the DataSource into forRootAsync's useFactory), or pass "connection" options.`,
        );
      }
      const connect = (): Promise<unknown> =>
        this.dataSource.initialize().catch((error: unknown) => {
          this.sqliteHandles.closeLeftOpen();
          throw error;
        });
      await retryWhileSqliteBusy(connect, signal).catch((error: unknown) => {
        throw new LockBackendError(
          BACKEND_KIND,
          `Lock backend "${BACKEND_KIND}" could not connect to the ${this.options.database} database: ` +
            `${describeCause(error)}. Check the connection options and that the server runs.`,
          [],
          { cause: error },
        );
      });
      if (this.closed) {
        // close() ran while the connection was being made and found nothing to destroy: nobody else will.
        await this.dataSource.destroy();
        throw closedError('start');
      }
    }
    if (this.options.createTable) {
      await retryWhileSqliteBusy(
        () => createLockTable(this.dataSource, { tableName: this.options.tableName }),
        signal,
      ).catch((error: unknown) => {
        throw backendError(`create the lock table "${this.options.tableName}"`, error);
      });
    }
    try {
      await this.locks.isLocked('nestjs-distributed-lock:init-check');
      await this.locks.open(signal);
    } catch (error) {
      throw new LockBackendError(
        BACKEND_KIND,
        `Lock backend "${BACKEND_KIND}" cannot use the lock table "${this.options.tableName}": ` +
          `${describeCause(error)}. Add the migration (CreateDistributedLockTable1764460800000 or ` +
          `lockTableMigration({ tableName })) and run it, call createLockTable(dataSource), or set createTable: true.`,
        [],
        { cause: error },
      );
    }
  }

  /**
   * One store call: refused once closed or cancelled, its failure wrapped, the connection state updated. A
   * backend used before `init` (a LockService built by hand) initialises itself first, so it fails with the
   * same clear message instead of a driver's TypeError.
   */
  private async store<T>(operation: string, signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    if (this.closed) throw closedError(operation);
    if (signal.aborted) {
      const cancelled = new SqlCallError('The call was cancelled before anything was sent to the database.', {
        cause: signal.reason,
      });
      throw backendError(operation, cancelled);
    }
    await this.init(signal);
    try {
      const result = await work();
      this.connection.succeeded();
      return result;
    } catch (error) {
      // A session lock lives on its own connection and reports its own loss (onLost); a failed pool statement
      // says nothing about it, and 'suspended' would make the core give up every session lock at once.
      if (this.options.mode === 'lease') this.connection.failed(error);
      if (error instanceof LockBackendError) throw error;
      // close() ended the call: say so rather than what the interrupted statement happened to report.
      if (this.closed) throw closedError(operation);
      throw backendError(operation, error);
    }
  }
}
