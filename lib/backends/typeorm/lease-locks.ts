import type { AcquireOutcome, AcquireRequest, LeaseRef } from '../lock-backend';
import { lockId } from './lock-table';
import type { LeaseAttempt } from './dialect';
import type { SqlRunner } from './sql-runner';
import { NEVER_ABORTED } from '../../core/never-aborted';

/**
 * Lease mode: one row per key whose expiry is compared on the database server's clock. An uncontended
 * acquire and release are one statement each (a busy acquire on MySQL/SQLite asks once more, for the time left). Rows are never deleted (the fencing counter lives in them); an
 * expired row is simply taken over by the next acquire through its primary key, so nothing ever scans the
 * table for expired rows.
 */
export class LeaseLocks {
  constructor(
    private readonly sql: SqlRunner,
    /** PostgreSQL LISTEN/NOTIFY channel that release notifies, or undefined to only poll. */
    private readonly notifyChannel: string | undefined,
  ) {}

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    const { table, dialect } = this.sql;
    const id = lockId(request.key);
    let attempt: LeaseAttempt;
    try {
      attempt = await this.sql.runBounded(
        dialect.acquireLease(table, id, request.key, request.owner, request.ttl),
        request.signal,
      );
    } catch (error) {
      // A transaction outside the backend holds the row past the bounded wait: as good as busy for now.
      if (dialect.isBusyError(error)) return { acquired: false };
      throw error;
    }
    if (attempt.token !== undefined) return { acquired: true, fencingToken: attempt.token };
    // Busy: how long the holder has left caps the caller's polling pause (and feeds HTTP Retry-After).
    const retryAfterMs =
      attempt.remainingMs ?? (await this.sql.run(dialect.leaseRemaining(table, id), undefined, request.signal));
    return retryAfterMs === undefined ? { acquired: false } : { acquired: false, retryAfterMs };
  }

  release(lease: LeaseRef, signal?: AbortSignal): Promise<boolean> {
    const { table, dialect } = this.sql;
    return this.sql.runBounded(
      dialect.releaseLease(table, lockId(lease.key), lease.owner, this.notifyChannel),
      signal ?? NEVER_ABORTED,
    );
  }

  extend(lease: LeaseRef, ttl: number, signal?: AbortSignal): Promise<boolean> {
    const { table, dialect } = this.sql;
    return this.sql.runBounded(
      dialect.extendLease(table, lockId(lease.key), lease.owner, ttl),
      signal ?? NEVER_ABORTED,
    );
  }

  isLocked(key: string, signal?: AbortSignal): Promise<boolean> {
    const { table, dialect } = this.sql;
    return this.sql.run(dialect.isLeaseHeld(table, lockId(key)), undefined, signal);
  }

  /** Nothing is held on a connection: the rows expire by themselves. */
  async open(_signal?: AbortSignal): Promise<void> {}

  async close(): Promise<void> {}
}
