import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { lockId } from '../../lib/backends/typeorm/lock-table';
import { killConnections, openDataSource, serverUrl, TestTable } from '../typeorm/sql-fixture';

const never = new AbortController().signal;
const owner = (): string => randomBytes(16).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Attempt {
  acquired?: boolean;
  token?: bigint;
  error?: unknown;
  lost?: string;
}

function acquire(
  backend: TypeOrmLockBackend,
  key: string,
  who: string,
  signal = never,
): { attempt: Attempt; done: Promise<Attempt> } {
  const attempt: Attempt = {};
  const done = backend
    .acquire({ key, owner: who, ttl: 5_000, keepPlace: false, signal, onLost: (reason) => (attempt.lost = reason) })
    .then(
      (outcome) => {
        attempt.acquired = outcome.acquired;
        if (outcome.acquired) attempt.token = outcome.fencingToken;
        return attempt;
      },
      (error: unknown) => {
        attempt.error = error;
        return attempt;
      },
    );
  return { attempt, done };
}

describe('session mode (row), PostgreSQL: the holding connection dies while the fencing token is being raised', () => {
  it('the acquire that lost its connection does not report the lock held (or reports it lost) — never two holders', async () => {
    const table = await TestTable.create('postgres', 'att2_tokenkill');
    const appA = `att2-A-${randomBytes(4).toString('hex')}`;
    const appB = `att2-B-${randomBytes(4).toString('hex')}`;
    const dsA = await new DataSource({
      type: 'postgres',
      url: serverUrl('postgres'),
      applicationName: appA,
      poolSize: 4,
    }).initialize();
    const dsB = await new DataSource({
      type: 'postgres',
      url: serverUrl('postgres'),
      applicationName: appB,
      poolSize: 4,
    }).initialize();
    const a = new TypeOrmLockBackend({ dataSource: dsA, mode: 'session', tableName: table.name, notify: false });
    const b = new TypeOrmLockBackend({ dataSource: dsB, mode: 'session', tableName: table.name, notify: false });
    const key = 'att2:token-kill';
    const blocker = table.admin.createQueryRunner();
    try {
      await a.init(never);
      await b.init(never);
      // Create the key's rows (the session row and the counter row).
      const first = owner();
      expect(
        (await b.acquire({ key, owner: first, ttl: 5_000, keepPlace: false, signal: never, onLost: () => {} }))
          .acquired,
      ).toBe(true);
      expect(await b.release({ key, owner: first }, { signal: never })).toBe(true);

      // Hold the key's counter row so that raising the token waits (as it does behind any slow statement).
      await blocker.connect();
      await blocker.startTransaction();
      await blocker.query(`SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = $1 FOR UPDATE`, [
        lockId(key),
      ]);

      const ownerA = owner();
      const aTry = acquire(a, key, ownerA);
      // Find A's holding connection (idle in its open transaction after FOR UPDATE NOWAIT) and end it.
      let pid: number | undefined;
      for (let i = 0; i < 100 && pid === undefined; i++) {
        await sleep(50);
        const rows: { pid: number }[] = await table.admin.query(
          `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction' AND query LIKE '%NOWAIT%'`,
          [appA],
        );
        pid = rows[0]?.pid;
      }
      expect(pid).toBeDefined();
      await table.admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await sleep(300);

      // The database freed the row: B takes it (its token waits on the same blocker).
      const ownerB = owner();
      const bTry = acquire(b, key, ownerB);
      await sleep(500);
      await blocker.commitTransaction();
      const [ra, rb] = await Promise.all([aTry.done, bTry.done]);
      await sleep(1_000);

      const holders = [ra, rb].filter((r) => r.acquired === true && r.lost === undefined);
      // A's extend should not vouch for a lock whose connection is gone either.
      let aExtend: unknown;
      if (ra.acquired)
        aExtend = await a.extend({ key, owner: ownerA }, 5_000, { signal: never }).catch((e: unknown) => e);
      console.log('token-kill postgres', {
        a: { ...ra, error: String(ra.error ?? '') },
        b: rb,
        aExtend: String(aExtend),
      });
      expect({
        holders: holders.length,
        a: { acquired: ra.acquired, lost: ra.lost, error: String(ra.error ?? '') },
        b: { acquired: rb.acquired },
      }).toEqual({ holders: 1, a: expect.anything(), b: { acquired: true } });
    } finally {
      if (!blocker.isReleased) await blocker.release().catch(() => undefined);
      await a.close();
      await b.close();
      await dsA.destroy().catch(() => undefined);
      await dsB.destroy().catch(() => undefined);
      await table.drop();
    }
  }, 30_000);
});

describe('session mode (row), MariaDB: the holding connection is KILLed while the fencing token is being raised', () => {
  it('the acquire that lost its connection does not report the lock held (or reports it lost) — never two holders', async () => {
    const table = await TestTable.create('mariadb', 'att2_tokenkill');
    const dsA = await new DataSource({ type: 'mariadb', url: serverUrl('mariadb'), poolSize: 4 }).initialize();
    const dsB = await new DataSource({ type: 'mariadb', url: serverUrl('mariadb'), poolSize: 4 }).initialize();
    const a = new TypeOrmLockBackend({ dataSource: dsA, mode: 'session', tableName: table.name });
    const b = new TypeOrmLockBackend({ dataSource: dsB, mode: 'session', tableName: table.name });
    const key = 'att2:token-kill';
    const blocker = table.admin.createQueryRunner();
    const threadsOf = (ds: DataSource): number[] =>
      (
        ds.driver as unknown as { pool: { _allConnections: { toArray(): { threadId: number }[] } } }
      ).pool._allConnections
        .toArray()
        .map((c) => c.threadId);
    try {
      await a.init(never);
      await b.init(never);
      const first = owner();
      expect(
        (await b.acquire({ key, owner: first, ttl: 5_000, keepPlace: false, signal: never, onLost: () => {} }))
          .acquired,
      ).toBe(true);
      expect(await b.release({ key, owner: first }, { signal: never })).toBe(true);

      await blocker.connect();
      await blocker.startTransaction();
      await blocker.query(`SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = ? FOR UPDATE`, [
        lockId(key),
      ]);

      const ownerA = owner();
      const aTry = acquire(a, key, ownerA);
      let thread: number | undefined;
      for (let i = 0; i < 100 && thread === undefined; i++) {
        await sleep(50);
        const threads = threadsOf(dsA);
        // A's holding transaction is open and idle (no statement running) while its token is being raised behind
        // the blocker. (The token statement's row-lock wait is bounded and retried, so it does not sit in LOCK WAIT.)
        const rows: { id: number | string }[] = await table.admin.query(
          `SELECT trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX WHERE trx_state = 'RUNNING' AND trx_query IS NULL AND trx_mysql_thread_id IN (${threads.map(Number).join(',') || '0'})`,
        );
        if (rows[0]) thread = Number(rows[0].id);
      }
      expect(thread).toBeDefined();
      await table.admin.query(`KILL CONNECTION ${Number(thread)}`);
      await sleep(300);

      const ownerB = owner();
      const bTry = acquire(b, key, ownerB);
      await sleep(500);
      await blocker.commitTransaction();
      const [ra, rb] = await Promise.all([aTry.done, bTry.done]);
      await sleep(1_000);
      console.log('token-kill mariadb', { a: { ...ra, error: String(ra.error ?? '') }, b: rb });
      const holders = [ra, rb].filter((r) => r.acquired === true && r.lost === undefined);
      expect({ holders: holders.length, b: { acquired: rb.acquired } }).toEqual({ holders: 1, b: { acquired: true } });
    } finally {
      if (!blocker.isReleased) await blocker.release().catch(() => undefined);
      await a.close();
      await b.close();
      await dsA.destroy().catch(() => undefined);
      await dsB.destroy().catch(() => undefined);
      await table.drop();
    }
  }, 30_000);
});

describe.each(['postgres', 'mariadb'] as const)(
  'session mode (row), %s: the server drops the idle connections (restart, failover, idle timeout)',
  (database) => {
    it('the next acquire still works: the dead token connection is replaced without failing the caller', async () => {
      const table = await TestTable.create(database, 'att2_tokenidle');
      const ds = await openDataSource(database, `att2-idle-${randomBytes(4).toString('hex')}`);
      const backend = new TypeOrmLockBackend({ dataSource: ds, mode: 'session', tableName: table.name });
      try {
        await backend.init(never);
        const first = owner();
        expect(
          (
            await backend.acquire({
              key: 'att2:idle',
              owner: first,
              ttl: 5_000,
              keepPlace: false,
              signal: never,
              onLost: () => {},
            })
          ).acquired,
        ).toBe(true);
        expect(await backend.release({ key: 'att2:idle', owner: first }, { signal: never })).toBe(true);
        await killConnections(table.admin, ds, database);
        await sleep(300);
        const results: string[] = [];
        for (let i = 0; i < 3; i++) {
          const who = owner();
          const r = acquire(backend, `att2:idle:${i}`, who);
          const got = await r.done;
          results.push(got.acquired ? 'acquired' : got.error ? `failed: ${String(got.error).slice(-120)}` : 'busy');
          if (got.acquired) await backend.release({ key: `att2:idle:${i}`, owner: who }, { signal: never });
        }
        expect(results).toEqual(['acquired', 'acquired', 'acquired']);
      } finally {
        await backend.close();
        await ds.destroy().catch(() => undefined);
        await table.drop();
      }
    }, 30_000);
  },
);

describe.each(['postgres', 'mariadb'] as const)(
  "session mode (row), %s: one key's counter row is locked by a long transaction",
  (database) => {
    it('other keys still lock, and an acquire the caller gave up on does not keep its key held', async () => {
      const table = await TestTable.create(database, 'att2_tokenqueue');
      const a = new TypeOrmLockBackend({
        connection:
          database === 'postgres'
            ? { type: 'postgres', url: serverUrl('postgres'), poolSize: 6 }
            : { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 6 },
        mode: 'session',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const b = new TypeOrmLockBackend({
        connection:
          database === 'postgres'
            ? { type: 'postgres', url: serverUrl('postgres'), poolSize: 2 }
            : { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 2 },
        mode: 'session',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const blocker = table.admin.createQueryRunner();
      const within = <T>(work: Promise<T>, ms: number): Promise<T | 'timed out'> =>
        Promise.race([work, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms).unref())]);
      try {
        await a.init(never);
        await b.init(never);
        for (const key of ['att2:blocked', 'att2:other']) {
          const who = owner();
          expect(
            (await a.acquire({ key, owner: who, ttl: 5_000, keepPlace: false, signal: never, onLost: () => {} }))
              .acquired,
          ).toBe(true);
          expect(await a.release({ key, owner: who }, { signal: never })).toBe(true);
        }
        await blocker.connect();
        await blocker.startTransaction();
        const param = database === 'postgres' ? '$1' : '?';
        await blocker.query(
          `SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = ${param} FOR UPDATE`,
          [lockId('att2:blocked')],
        );
        // The caller of the blocked key gives up after 300 ms (the core walks away at its deadline).
        const stuck = acquire(a, 'att2:blocked', owner(), AbortSignal.timeout(300));
        await within(stuck.done, 400);
        // Another caller of an unrelated key in the same app, also with a deadline.
        const other = acquire(a, 'att2:other', owner(), AbortSignal.timeout(2_000));
        const settled = await within(other.done, 3_000);
        const seenByB = await b
          .isLocked('att2:other', { signal: AbortSignal.timeout(3_000) })
          .catch((e: unknown) => `failed: ${String(e)}`);
        const otherOutcome =
          settled === 'timed out'
            ? 'timed out'
            : settled.acquired
              ? 'acquired'
              : `not acquired ${String(settled.error ?? '')}`;
        // Safe: the unrelated key is acquired (and so seen locked); or, if it was not, nobody holds it.
        expect(`${otherOutcome} / seen locked by another app: ${String(seenByB)}`).toBe(
          'acquired / seen locked by another app: true',
        );
      } finally {
        await blocker.rollbackTransaction().catch(() => undefined);
        await blocker.release().catch(() => undefined);
        await within(a.close(), 5_000);
        await within(b.close(), 5_000);
        await table.drop();
      }
    }, 30_000);
  },
);

describe.each(['postgres', 'mariadb'] as const)(
  "session mode (row), %s, on the app's DataSource: close() while an acquire is in flight",
  (database) => {
    it('after close() the in-flight acquire does not leave the key held by the closed backend', async () => {
      const table = await TestTable.create(database, 'att2_closeflight');
      const ds = await openDataSource(database, `att2-cf-${randomBytes(4).toString('hex')}`);
      const other = await openDataSource(database, `att2-cf2-${randomBytes(4).toString('hex')}`);
      const a = new TypeOrmLockBackend({
        dataSource: ds,
        mode: 'session',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const b = new TypeOrmLockBackend({
        dataSource: other,
        mode: 'session',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const blocker = table.admin.createQueryRunner();
      const key = 'att2:close-in-flight';
      try {
        await a.init(never);
        await b.init(never);
        const first = owner();
        expect(
          (await a.acquire({ key, owner: first, ttl: 5_000, keepPlace: false, signal: never, onLost: () => {} }))
            .acquired,
        ).toBe(true);
        expect(await a.release({ key, owner: first }, { signal: never })).toBe(true);
        await blocker.connect();
        await blocker.startTransaction();
        const param = database === 'postgres' ? '$1' : '?';
        await blocker.query(
          `SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = ${param} FOR UPDATE`,
          [lockId(key)],
        );
        // The app shuts down while an acquire is between taking the row and raising the token.
        const inFlight = acquire(a, key, owner());
        await sleep(300);
        const closing = a.close();
        const closedInTime = await Promise.race([closing.then(() => true), sleep(1_000).then(() => false)]);
        await blocker.commitTransaction();
        await closing;
        const outcome = await inFlight.done;
        await sleep(500);
        // The app's own DataSource lives on (the backend was given it): is the key still held by the closed backend?
        const held = await b.isLocked(key, { signal: AbortSignal.timeout(3_000) });
        expect(
          `close returned while the statement was stuck: ${String(closedInTime)} / acquired=${String(outcome.acquired)} ` +
            `error=${outcome.error ? 'yes' : 'no'} / key still held after close: ${String(held)}`,
        ).toMatch(/close returned while the statement was stuck: true .* key still held after close: false$/);
      } finally {
        if (!blocker.isReleased) await blocker.release().catch(() => undefined);
        await b.close();
        await ds.destroy().catch(() => undefined);
        await other.destroy().catch(() => undefined);
        await table.drop();
      }
    }, 30_000);
  },
);
