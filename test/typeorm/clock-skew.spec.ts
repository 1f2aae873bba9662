import type { DataSource } from 'typeorm';
import { LockService } from '../../lib';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { lockId } from '../../lib/backends/typeorm/lock-table';
import { type Database, openDataSource, TestTable } from './sql-fixture';

const HOUR = 3_600_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Lease expiry is compared on the database server's clock only. With the app's clock an hour fast or slow,
 * a lease lasts its ttl exactly as without skew, and what is stored is the server's time.
 */
describe.each(['postgres', 'mariadb', 'sqlite'] as Database[])(
  'lease mode with the app clock an hour off (%s)',
  (database) => {
    let table: TestTable;
    let dataSource: DataSource;
    let locks: LockService;
    const realNow = Date.now.bind(Date);

    beforeAll(async () => {
      table = await TestTable.create(database, 'skew');
      dataSource = await openDataSource(database);
      locks = new LockService({
        backends: { default: new TypeOrmLockBackend({ dataSource, tableName: table.name }) },
      });
    });
    afterEach(() => jest.restoreAllMocks());
    afterAll(async () => {
      await locks.close();
      await dataSource.destroy();
      await table.drop();
    });

    const storedTimes = async (key: string): Promise<{ acquired: number; expires: number }> => {
      const placeholder = database === 'postgres' ? '$1' : '?';
      const [row] = (await table.admin.query(
        `SELECT acquired_at_ms AS acquired, expires_at_ms AS expires FROM ${table.admin.driver.escape(table.name)} ` +
          `WHERE lock_id = ${placeholder}`,
        [lockId(key)],
      )) as { acquired: string | number; expires: string | number }[];
      return { acquired: Number(row!.acquired), expires: Number(row!.expires) };
    };

    it.each([
      ['fast', HOUR],
      ['slow', -HOUR],
    ])('an hour %s changes nothing', async (_label, offset) => {
      const ttl = 1_000;
      const key = `skew-${offset}`;
      jest.spyOn(Date, 'now').mockImplementation(() => realNow() + offset);
      const before = realNow();
      const lock = await locks.acquire(key, { ttl, autoExtend: false });
      const stored = await storedTimes(key);
      // The server's clock (within a generous 5 s of the real time), not the app's hour-off one.
      expect(Math.abs(stored.acquired - before)).toBeLessThan(5_000);
      expect(stored.expires - stored.acquired).toBe(ttl);
      // Neither expired at once (app fast) nor held an hour too long (app slow).
      expect(await locks.tryAcquire(key)).toBeNull();
      await sleep(ttl / 2);
      expect(await locks.isLocked(key)).toBe(true);
      await sleep(ttl / 2 + 150);
      expect(await locks.isLocked(key)).toBe(false);
      const next = await locks.acquire(key, { ttl });
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
    });
  },
);
