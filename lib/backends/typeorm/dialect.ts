import type { LockColumn } from './lock-table';

/** What a statement gave back, as TypeORM's structured QueryResult carries it. */
export interface SqlResult {
  readonly records: readonly Record<string, unknown>[];
  readonly affected?: number;
  /** The driver's own result: mysql2's ResultSetHeader for an INSERT (insertId). */
  readonly raw: unknown;
}

export interface LeaseAttempt {
  readonly token?: bigint;
  readonly remainingMs?: number;
}

/** One SQL statement with its bound parameters, and how to read its result. */
export interface Statement<T> {
  readonly sql: string;
  readonly params: readonly unknown[];
  read(result: SqlResult): T;
}

/** The lock table's name and columns, each already quoted by the driver. */
export type QuotedTable = { readonly table: string } & { readonly [column in LockColumn]: string };

/**
 * Everything that differs between databases, and nothing else: the SQL of each primitive. Keys reach the
 * database only as bound parameters (their sha-256 id and the key text); times are always the server's clock.
 */
export interface SqlDialect {
  readonly name: 'postgres' | 'mysql' | 'sqlite';
  /** Row locks held by an open transaction exist (session mode is possible). */
  readonly rowLocks: boolean;

  /**
   * Takes the row when it is free or expired, in one statement: the new fencing token, or when busy nothing —
   * or, where the same statement can tell, how many ms the holder's lease has left.
   */
  acquireLease(t: QuotedTable, id: string, key: string, owner: string, ttl: number): Statement<LeaseAttempt>;
  /** Busy path only: ms until the holder's lease runs out, when the acquire statement could not say. */
  leaseRemaining(t: QuotedTable, id: string): Statement<number | undefined>;
  /** Frees the row if `owner` holds it and it has not expired; true if it did. `notifyChannel`: PostgreSQL only. */
  releaseLease(t: QuotedTable, id: string, owner: string, notifyChannel: string | undefined): Statement<boolean>;
  extendLease(t: QuotedTable, id: string, owner: string, ttl: number): Statement<boolean>;
  isLeaseHeld(t: QuotedTable, id: string): Statement<boolean>;

  /** Session mode: creates the row to lock when it is missing. */
  insertLockRow(t: QuotedTable, id: string, key: string): Statement<void>;
  /** Session mode, inside a transaction: locks the row or fails at once (isBusyError); false if it is missing. */
  lockRowNowait(t: QuotedTable, id: string): Statement<boolean>;
  /** Session mode: true when the row exists and nobody holds it locked (autocommit SKIP LOCKED, never waits). */
  isRowFree(t: QuotedTable, id: string): Statement<boolean>;
  rowExists(t: QuotedTable, id: string): Statement<boolean>;
  /** Session mode, autocommit outside the lock's transaction: raises the key's counter and returns it. */
  nextToken(t: QuotedTable, id: string, key: string): Statement<bigint>;
  /**
   * Session mode with advisory locks, by a 64-hex-digit name: PostgreSQL pg_try_advisory_lock on its first
   * 64 bits, MySQL/MariaDB GET_LOCK(name, 0). Held by the connection, not a transaction: they survive the
   * connection going back to the pool, so they are always unlocked explicitly.
   */
  tryAdvisoryLock(name: string): Statement<boolean>;
  advisoryUnlock(name: string): Statement<boolean>;
  isAdvisoryLocked(name: string): Statement<boolean>;
  /**
   * Session mode, on the backend's own token connection: bounds how long one statement waits for a row lock
   * (`bound`), and undoes that before the connection goes back to the pool (`unbound`). A counter row held by
   * someone else's long transaction must not stall the token connection, which every key's acquire shares.
   */
  readonly tokenLockWait?: { readonly bound: string; readonly unbound: string };
  /**
   * Lease mode, around each statement that writes a lock row on a pool connection: `begin` bounds its row-lock
   * wait, `end` (after success) and `abort` (after failure) undo that before the connection goes back to the
   * pool. A lock row held by a transaction outside the backend then fails the statement (isBusyError) instead
   * of keeping a pool connection for as long as that transaction lasts.
   */
  readonly leaseLockWait?: { readonly begin: string; readonly end: string; readonly abort: string };
  /** The error a NOWAIT lock attempt (or a bounded lock wait) fails with when another transaction holds the row. */
  isBusyError(error: unknown): boolean;
}

/** The driver's error inside TypeORM's QueryFailedError (or the error itself). */
export function driverError(error: unknown): { code?: unknown; errno?: unknown } {
  if (typeof error !== 'object' || error === null) return {};
  const inner = (error as { driverError?: unknown }).driverError;
  return (typeof inner === 'object' && inner !== null ? inner : error) as { code?: unknown; errno?: unknown };
}

export function toBigInt(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' || typeof value === 'string') return BigInt(value);
  throw new TypeError(`expected an integer from the database, got ${typeof value}`);
}

/** Reads `remaining` (ms left of a lease) from the first row, if positive. */
export function remainingMs(result: SqlResult): number | undefined {
  const value = Number(result.records[0]?.['remaining']);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

/** Reads a boolean-ish `answer` (true, 1, '1', 't') from the first row. */
export function answer(result: SqlResult): boolean {
  const value = result.records[0]?.['answer'];
  return value === true || value === 1 || value === '1' || value === 't' || value === 1n;
}
