import type { DataSource } from 'typeorm';
import { LockService } from '../../lib';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { openDataSource, TestTable } from './sql-fixture';

/** A pause so long that only a NOTIFY can wake the waiter within the test's bounds. */
const LONG = { delay: 30_000, maxDelay: 30_000, jitter: 0 };

describe('PostgreSQL LISTEN/NOTIFY wake-ups', () => {
  let table: TestTable;
  const sources: DataSource[] = [];
  let waiterApp: LockService;
  let holderApp: LockService;
  const waiterName = `lock-notify-${process.pid}`;

  beforeAll(async () => {
    table = await TestTable.create('postgres', 'notify');
    const waiterSource = await openDataSource('postgres', waiterName);
    const holderSource = await openDataSource('postgres');
    sources.push(waiterSource, holderSource);
    const backend = (dataSource: DataSource) => new TypeOrmLockBackend({ dataSource, tableName: table.name });
    waiterApp = new LockService({ backends: { default: backend(waiterSource) } });
    holderApp = new LockService({ backends: { default: backend(holderSource) } });
  });
  afterAll(async () => {
    await waiterApp.close();
    await holderApp.close();
    for (const source of sources) await source.destroy();
    await table.drop();
  });

  /** Holds `key` in the holder app, starts a waiter with `retry`, releases, and measures how long the waiter took. */
  const handOff = async (key: string, retry: typeof LONG, beforeRelease?: () => Promise<void>): Promise<number> => {
    const held = await holderApp.acquire(key, { ttl: 60_000 });
    const waiting = waiterApp.acquire(key, { waitTimeout: 20_000, retry });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await beforeRelease?.();
    const released = Date.now();
    await held.release();
    const lock = await waiting;
    const took = Date.now() - released;
    await lock.release();
    return took;
  };

  it('wakes a waiter on release though its polling pause is 30 s', async () => {
    expect(await handOff('plain', LONG)).toBeLessThan(2_000);
  });

  it('falls back to polling when the listening connection is killed, and listens again on the next wait', async () => {
    const killListener = async (): Promise<void> => {
      const [row] = (await table.admin.query(
        `SELECT count(pg_terminate_backend(pid))::int AS killed FROM pg_stat_activity ` +
          `WHERE application_name = $1 AND query ILIKE 'LISTEN%'`,
        [waiterName],
      )) as { killed: number }[];
      expect(row!.killed).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 100));
    };
    // Polling every 100 ms still finds the key once the notification can no longer arrive.
    expect(await handOff('fallback', { delay: 100, maxDelay: 100, jitter: 0 }, killListener)).toBeLessThan(2_000);
    // A new wait LISTENs again: the long pause is cut short by the NOTIFY.
    expect(await handOff('relisten', LONG)).toBeLessThan(2_000);
  });
});
