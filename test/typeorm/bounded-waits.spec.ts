import { randomBytes } from 'node:crypto';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { lockId } from '../../lib/backends/typeorm/lock-table';
import { openDataSource, TestTable } from './sql-fixture';

const never = new AbortController().signal;
const owner = (): string => randomBytes(16).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const request = (key: string, who: string, signal: AbortSignal = never) => ({
  key,
  owner: who,
  ttl: 5_000,
  keepPlace: false,
  onLost: () => {},
  signal,
});

describe('MariaDB lock table', () => {
  it('declares lock_key utf8mb4 whatever the database default', async () => {
    const table = await TestTable.create('mariadb', 'bw_charset');
    try {
      const rows: { charset: string }[] = await table.admin.query(
        `SELECT CHARACTER_SET_NAME AS charset FROM information_schema.COLUMNS ` +
          `WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'lock_key'`,
        [table.name],
      );
      expect(rows.map((row) => row.charset)).toEqual(['utf8mb4']);
    } finally {
      await table.drop();
    }
  });
});

// Advisory session locks raise the counter on the holding connection: a counter row held by an outside
// transaction must not keep an acquire past its caller's deadline, nor close() waiting for it.
describe.each(['postgres', 'mariadb'] as const)(
  'session mode (advisory), %s: a counter row held outside',
  (database) => {
    it('an acquire gives up at its deadline without keeping the key, and close() returns', async () => {
      const table = await TestTable.create(database, 'bw_advisory');
      const ds = await openDataSource(database, `bw-adv-${randomBytes(4).toString('hex')}`);
      const backend = new TypeOrmLockBackend({
        dataSource: ds,
        mode: 'session',
        sessionLock: 'advisory',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const other = new TypeOrmLockBackend({
        dataSource: ds,
        mode: 'session',
        sessionLock: 'advisory',
        tableName: table.name,
        ...(database === 'postgres' ? { notify: false } : {}),
      });
      const blocker = table.admin.createQueryRunner();
      const key = 'bw:advisory';
      try {
        await backend.init(never);
        await other.init(never);
        const first = owner();
        expect((await backend.acquire(request(key, first))).acquired).toBe(true);
        expect(await backend.release({ key, owner: first }, { signal: never })).toBe(true);
        await blocker.connect();
        await blocker.startTransaction();
        const param = database === 'postgres' ? '$1' : '?';
        await blocker.query(
          `SELECT 1 FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = ${param} FOR UPDATE`,
          [lockId(key)],
        );

        const started = Date.now();
        const gaveUp = await backend.acquire(request(key, owner(), AbortSignal.timeout(300))).then(
          (outcome) => (outcome.acquired ? 'acquired' : 'busy'),
          () => 'failed',
        );
        expect(gaveUp).not.toBe('acquired');
        expect(Date.now() - started).toBeLessThan(2_500);
        expect(await other.isLocked(key, { signal: never })).toBe(false);

        // close() with an acquire stuck on the counter row: it returns, and the key is not left held.
        const inFlight = backend.acquire(request(key, owner())).catch(() => undefined);
        await sleep(200);
        const closing = Date.now();
        await backend.close();
        expect(Date.now() - closing).toBeLessThan(2_500);
        await inFlight;
        expect(await other.isLocked(key, { signal: never })).toBe(false);
      } finally {
        await blocker.rollbackTransaction().catch(() => undefined);
        await blocker.release().catch(() => undefined);
        await backend.close();
        await other.close();
        await ds.destroy();
        await table.drop();
      }
    }, 20_000);
  },
);
