import type { DataSource, QueryRunner } from 'typeorm';
import type { AcquireOutcome, AcquireRequest, LeaseRef } from '../lock-backend';
import { lockId } from './lock-table';
import type { SessionHold } from './session-holds';
import { isConnectionError, SqlCallError } from './errors';
import { connectUnlessAborted } from './sql-runner';

function lostReason(error?: unknown): string {
  const why = error instanceof Error ? `: ${error.message}` : '';
  return `the database connection holding it closed${why}; the database has freed the key.`;
}

/** The events a pg Client and a mysql2 connection emit when their socket dies. */
interface ConnectionEvents {
  on(event: 'error' | 'end', listener: (error?: unknown) => void): unknown;
  removeListener(event: 'error' | 'end', listener: (error?: unknown) => void): unknown;
  destroy?(): void;
}

interface Session {
  readonly owner: string;
  readonly runner: QueryRunner;
  readonly connection: ConnectionEvents;
  /** Stops watching the connection; called once, when the lock ends either way. */
  readonly unwatch: () => void;
}

/**
 * Session mode: the lock is held by a connection of its own for as long as it is held — a row locked FOR
 * UPDATE by a transaction kept open on it, or an advisory lock (see session-holds.ts). When that connection
 * dies — the process was killed, the network broke, an admin ended the backend — the database frees the lock
 * by itself; this process hears of it from the connection's error/end event and reports the lock lost.
 * There is no ttl.
 *
 * Waiting never blocks in the database: NOWAIT (or a try-lock) fails at once and the core retries.
 *
 * Fencing token: the key's counter row is raised in autocommit after the lock is taken — on the holding
 * connection for an advisory lock, on the backend's token connection for a row lock (whose connection is
 * inside the lock's transaction). Raised inside that transaction it would be rolled back when a holder dies,
 * and the next holder would get the same token the dead one may have used.
 */
export class SessionLocks {
  private readonly sessions = new Map<string, Session>();
  /** Acquires under way; close() waits for them after stopping them. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();

  constructor(
    private readonly dataSource: DataSource,
    private readonly hold: SessionHold,
    private readonly notifyChannel: string | undefined,
  ) {}

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    // close() ends this acquire wherever it is, so that it cannot leave the key held by a closed backend.
    const signal = AbortSignal.any([request.signal, this.closing.signal]);
    const runner = this.dataSource.createQueryRunner();
    const connection = (await connectUnlessAborted(runner, signal)) as ConnectionEvents;
    // Watched from the start: the connection may die while the token is raised, before the lock is reported.
    let died: string | undefined;
    const dead = (error?: unknown): void => {
      died ??= lostReason(error);
    };
    connection.on('error', dead);
    connection.on('end', dead);
    const settled = this.attempt(request, signal, runner, connection, () => died);
    this.inFlight.add(settled);
    try {
      return await settled;
    } finally {
      this.inFlight.delete(settled);
      connection.removeListener('error', dead);
      connection.removeListener('end', dead);
    }
  }

  private async attempt(
    request: AcquireRequest,
    signal: AbortSignal,
    runner: QueryRunner,
    connection: ConnectionEvents,
    died: () => string | undefined,
  ): Promise<AcquireOutcome> {
    let taken = false;
    try {
      if (!(await this.hold.take(runner, request.key))) {
        await runner.release();
        return { acquired: false };
      }
      taken = true;
      const fencingToken = await this.hold.nextToken(runner, request.key, signal);
      const why = died();
      // The database freed the key when the connection died, and another holder may have it by now.
      if (why !== undefined || runner.isReleased)
        throw new SqlCallError(`The lock was lost as it was taken: ${why ?? 'its connection was released.'}`);
      if (signal.aborted) {
        // The core stopped waiting for this answer (or the backend closed): nobody would release the lock.
        await this.hold.abandon(runner, request.key);
        await runner.release();
        if (this.closing.signal.aborted) throw this.closing.signal.reason;
        return { acquired: false };
      }
      this.sessions.set(request.key, {
        owner: request.owner,
        runner,
        connection,
        unwatch: this.watch(request, runner, connection),
      });
      return { acquired: true, fencingToken };
    } catch (error) {
      await this.discard(runner, connection, taken ? request.key : undefined, died() !== undefined);
      throw error;
    }
  }

  /** Frees the key on its connection and gives the connection back; owner-checked. */
  async release(lease: LeaseRef): Promise<boolean> {
    const session = this.take(lease);
    if (!session) return false;
    try {
      await this.hold.free(session.runner, lease.key, () => this.notify(session.runner, lease.key));
      await session.runner.release();
      return true;
    } catch (error) {
      // The database frees the lock once it sees the connection closed; this lock is over either way.
      await this.discard(session.runner, session.connection, undefined, true);
      throw error;
    }
  }

  /**
   * No ttl to restart: proves the holding connection still answers. A connection found dead means the lock is
   * not held (false, as for an expired lease), not that the store cannot be asked.
   */
  async extend(lease: LeaseRef): Promise<boolean> {
    const session = this.sessions.get(lease.key);
    if (!session || session.owner !== lease.owner) return false;
    if (session.runner.isReleased) {
      this.take(lease);
      return false;
    }
    try {
      await session.runner.query('SELECT 1');
      return true;
    } catch (error) {
      if (!isConnectionError(error) && !session.runner.isReleased) throw error;
      if (this.take(lease)) await this.discard(session.runner, session.connection, undefined, true);
      return false;
    }
  }

  isLocked(key: string, signal?: AbortSignal): Promise<boolean> {
    return this.hold.isLocked(key, signal);
  }

  /** Connects what every acquire will need (the token connection of row locks) at bootstrap. */
  open(signal: AbortSignal): Promise<void> {
    return this.hold.open(signal);
  }

  /** Stops the acquires under way, then gives up every lock this backend holds. */
  async close(): Promise<void> {
    this.closing.abort(new Error('the lock backend was closed while the lock was being taken'));
    // The token statements they may wait on stop within one bounded lock wait (see TokenConnection).
    const stopping = this.hold.close();
    await Promise.all([...this.inFlight].map((acquire) => acquire.catch(() => undefined)));
    const held = [...this.sessions.entries()].map(([key, session]) => [key, this.take({ key, owner: session.owner })]);
    await Promise.all(
      held.map(async ([key, session]) => {
        if (typeof session !== 'object' || typeof key !== 'string') return;
        await this.discard(session.runner, session.connection, key);
      }),
    );
    await stopping;
  }

  private async notify(runner: QueryRunner, key: string): Promise<void> {
    if (this.notifyChannel === undefined) return;
    await runner.query('SELECT pg_notify($1, $2)', [this.notifyChannel, lockId(key)]);
  }

  private watch(request: AcquireRequest, runner: QueryRunner, connection: ConnectionEvents): () => void {
    const lost = (error?: unknown): void => {
      const session = this.sessions.get(request.key);
      if (session?.runner !== runner) return;
      this.sessions.delete(request.key);
      session.unwatch();
      void this.discard(runner, connection, undefined, true);
      request.onLost(lostReason(error));
    };
    connection.on('error', lost);
    connection.on('end', lost);
    return () => {
      connection.removeListener('error', lost);
      connection.removeListener('end', lost);
    };
  }

  private take(lease: LeaseRef): Session | undefined {
    const session = this.sessions.get(lease.key);
    if (!session || session.owner !== lease.owner) return undefined;
    this.sessions.delete(lease.key);
    session.unwatch();
    return session;
  }

  /**
   * Ends whatever the connection was doing and never throws: gives up `heldKey` if given, rolls back an open
   * transaction, and closes — rather than pools — a connection that is broken or could not be cleaned up.
   */
  private async discard(
    runner: QueryRunner,
    connection: ConnectionEvents | undefined,
    heldKey: string | undefined,
    broken = false,
  ): Promise<void> {
    if (!broken) {
      try {
        if (heldKey !== undefined) await this.hold.abandon(runner, heldKey);
        if (runner.isTransactionActive) await runner.rollbackTransaction();
      } catch {
        broken = true;
      }
    }
    if (broken) {
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
