import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { lockId } from '../../lib/backends/typeorm/lock-table';
import { serverUrl, TestTable } from '../typeorm/sql-fixture';

const never = new AbortController().signal;
const owner = (): string => randomBytes(16).toString('hex');
const within = <T>(work: Promise<T>, ms: number): Promise<T | 'timed out'> =>
  Promise.race([work, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms).unref())]);
const request = (key: string, who: string, signal: AbortSignal = never) => ({
  key,
  owner: who,
  ttl: 5_000,
  keepPlace: false,
  onLost: () => {},
  signal,
});

describe.each(['postgres', 'mariadb'] as const)(
  'lease mode, %s: a lock row held by a long transaction outside the backend',
  (database) => {
    it('statements stuck behind it do not take the whole pool: other keys still lock', async () => {
      const table = await TestTable.create(database, 'att2_stuck');
      const url = serverUrl(database);
      const backend = new TypeOrmLockBackend({
        connection:
          database === 'postgres'
            ? { type: 'postgres', url, poolSize: 3, applicationName: 'att2-stuck' }
            : { type: 'mariadb', url, poolSize: 3 },
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const blocker = table.admin.createQueryRunner();
      const q = (sql: string) => (database === 'postgres' ? sql : sql.replace(/\$1/g, '?'));
      try {
        await backend.init(never);
        const key = 'att2:stuck';
        const first = owner();
        expect((await backend.acquire(request(key, first))).acquired).toBe(true);
        expect(await backend.release({ key, owner: first }, { signal: never })).toBe(true);
        // Someone (a report, a migration, an admin's psql) keeps the key's row locked in an open transaction.
        await blocker.connect();
        await blocker.startTransaction();
        await blocker.query(q(`SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = $1 FOR UPDATE`), [
          lockId(key),
        ]);
        // Callers of that key give up after 300 ms each: the core walks away from a call that does not answer by its
        // deadline (the backend's own promise may stay pending; we race it the same way).
        const walkedAway: Promise<unknown>[] = [];
        for (let i = 0; i < 4; i++) {
          const attempt = backend.acquire(request(key, owner(), AbortSignal.timeout(300))).catch(() => undefined);
          walkedAway.push(attempt);
          await within(attempt, 400);
        }
        // An unrelated key must still be lockable.
        const other = await within(
          backend.acquire(request('att2:unrelated', owner(), AbortSignal.timeout(4_000))).then(
            (o) => (o.acquired ? 'acquired' : 'busy'),
            (e: unknown) => `failed: ${String(e).slice(-140)}`,
          ),
          5_000,
        );
        expect(other).toBe('acquired');
      } finally {
        await blocker.rollbackTransaction().catch(() => undefined);
        await blocker.release().catch(() => undefined);
        await within(backend.close(), 5_000);
        await table.drop();
      }
    }, 30_000);
  },
);

describe('lease mode, MariaDB: a lock table in a database whose default character set is not utf8mb4', () => {
  it('a key with a character outside the BMP is still lockable (keys are matched by hash; the text is only shown)', async () => {
    const table = await TestTable.create('mariadb', 'att2_charset');
    // What createLockTable/the migration produce on a database created with the (MySQL 5.7) default latin1 charset.
    await table.admin.query(`ALTER TABLE ${table.admin.driver.escape(table.name)} CONVERT TO CHARACTER SET latin1`);
    const backend = new TypeOrmLockBackend({
      connection: { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 2 },
      tableName: table.name,
    });
    try {
      await backend.init(never);
      const results: Record<string, string> = {};
      for (const key of ['plain', 'é', '日本', '🔒']) {
        const who = owner();
        results[key] = await backend.acquire(request(key, who)).then(
          async (o) => {
            if (o.acquired) await backend.release({ key, owner: who }, { signal: never });
            return o.acquired ? 'acquired' : 'busy';
          },
          (e: unknown) => `failed: ${String(e).slice(0, 200)}`,
        );
      }
      expect(results).toEqual({ plain: 'acquired', é: 'acquired', 日本: 'acquired', '🔒': 'acquired' });
    } finally {
      await backend.close();
      await table.drop();
    }
  }, 30_000);
});

describe.each(['postgres', 'mariadb'] as const)('init with a wrong password (%s)', (database) => {
  it('fails with LockBackendError whose message, cause and inspection never show the password', async () => {
    const secret = `Att2Secret${randomBytes(4).toString('hex')}`;
    const url = serverUrl(database)
      .replace('//root@', `//att2user:${secret}@`)
      .replace('//postgres@', `//att2user:${secret}@`);
    const backend = new TypeOrmLockBackend({
      connection:
        database === 'postgres'
          ? { type: 'postgres', url, connectTimeoutMS: 3_000 }
          : { type: 'mariadb', url, connectTimeout: 3_000 },
      tableName: 'att2_never_created',
    });
    try {
      const error = await backend.init(AbortSignal.timeout(10_000)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ name: 'LockBackendError' });
      const seen = `${String((error as Error).message)}\n${inspect(error, { depth: 6 })}\n${JSON.stringify(error)}`;
      expect(seen).not.toContain(secret);
    } finally {
      await backend.close();
    }
  }, 20_000);
});
