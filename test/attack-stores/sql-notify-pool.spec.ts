import { randomBytes } from 'node:crypto';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { serverUrl, TestTable } from '../typeorm/sql-fixture';

const never = new AbortController().signal;
const owner = (): string => randomBytes(16).toString('hex');
const within = <T>(work: Promise<T>, ms: number): Promise<T | 'timed out'> =>
  Promise.race([work, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms).unref())]);

describe('PostgreSQL session mode with LISTEN/NOTIFY (the default) on an exhausted pool', () => {
  it('close() returns (and frees the held locks) after a wait found no connection for LISTEN', async () => {
    const table = await TestTable.create('postgres', 'att2_notifypool');
    // Pool of 3: the token connection and two held locks take all of it.
    const backend = new TypeOrmLockBackend({
      connection: { type: 'postgres', url: serverUrl('postgres'), poolSize: 3, applicationName: 'att2-notifypool' },
      mode: 'session',
      tableName: table.name,
    });
    const request = (key: string, who: string) => ({
      key,
      owner: who,
      ttl: 5_000,
      keepPlace: true,
      onLost: () => {},
      signal: never,
    });
    try {
      await backend.init(never);
      const o1 = owner();
      const o2 = owner();
      expect((await backend.acquire(request('att2:np:1', o1))).acquired).toBe(true);
      expect((await backend.acquire(request('att2:np:2', o2))).acquired).toBe(true);
      // A waiter (e.g. another caller of using('att2:np:1')): its wait ends on time — the core moves on.
      const started = Date.now();
      await backend.waitForRelease({ key: 'att2:np:1', owner: owner(), timeoutMs: 300, signal: never });
      expect(Date.now() - started).toBeLessThan(2_000);
      // Shutdown: must give up the two locks and return.
      const closing = await within(backend.close(), 5_000);
      expect(closing).not.toBe('timed out');
      // The server drops a closed connection's pg_stat_activity row a moment after the client has closed it.
      let rows: unknown[] = [];
      for (let i = 0; i < 20; i++) {
        rows = await table.admin.query(
          `SELECT pid, state, query FROM pg_stat_activity WHERE application_name = 'att2-notifypool'`,
        );
        if (rows.length === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(rows).toHaveLength(0);
    } finally {
      // A hung close leaves the held transactions open, and they would block DROP TABLE.
      await table.admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'att2-notifypool'`,
      );
      await table.drop();
    }
  }, 30_000);
});
