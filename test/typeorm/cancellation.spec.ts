import { LockBackendError } from '../../lib';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { serverUrl, TestTable } from './sql-fixture';

describe.each(['postgres', 'mariadb'] as const)('a store call waiting for a pool connection (%s)', (database) => {
  it('stops waiting when its signal aborts, and the pool still works afterwards', async () => {
    const table = await TestTable.create(database, 'cancel');
    // Two connections: the backend's token connection and one held session lock; the next call can only wait.
    const backend = new TypeOrmLockBackend({
      connection:
        database === 'postgres'
          ? { type: 'postgres', url: serverUrl('postgres'), poolSize: 2 }
          : { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 2 },
      mode: 'session',
      tableName: table.name,
      ...(database === 'postgres' ? { notify: false } : {}),
    });
    const never = new AbortController().signal;
    const request = (key: string, owner: string, signal: AbortSignal) => ({
      key,
      owner,
      ttl: 5_000,
      keepPlace: false,
      onLost: () => {},
      signal,
    });
    try {
      await backend.init(never);
      const held = await backend.acquire(request('a', '1'.repeat(32), never));
      expect(held.acquired).toBe(true);
      const controller = new AbortController();
      const started = Date.now();
      const waiting = backend.acquire(request('b', '2'.repeat(32), controller.signal));
      setTimeout(() => controller.abort(new Error('the caller gave up')), 100);
      await expect(waiting).rejects.toThrow(LockBackendError);
      expect(Date.now() - started).toBeLessThan(2_000);
      // The abandoned request does not keep the connection once it is free again.
      expect(await backend.release({ key: 'a', owner: '1'.repeat(32) }, { signal: never })).toBe(true);
      const next = await backend.acquire(request('b', '3'.repeat(32), never));
      expect(next.acquired).toBe(true);
      expect(await backend.release({ key: 'b', owner: '3'.repeat(32) }, { signal: never })).toBe(true);
    } finally {
      await backend.close();
      await table.drop();
    }
  });

  it('holds as many row locks at once as the pool has connections besides the token one (no deadlock)', async () => {
    const table = await TestTable.create(database, 'pool');
    const backend = new TypeOrmLockBackend({
      connection:
        database === 'postgres'
          ? { type: 'postgres', url: serverUrl('postgres'), poolSize: 4 }
          : { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 4 },
      mode: 'session',
      tableName: table.name,
      ...(database === 'postgres' ? { notify: false } : {}),
    });
    const signal = AbortSignal.timeout(10_000);
    try {
      await backend.init(signal);
      const owners = ['4', '5', '6'].map((c) => c.repeat(32));
      const taken = await Promise.all(
        owners.map((owner, i) =>
          backend.acquire({ key: `k${i}`, owner, ttl: 5_000, keepPlace: false, onLost: () => {}, signal }),
        ),
      );
      expect(taken.map((t) => t.acquired)).toEqual([true, true, true]);
      for (const [i, owner] of owners.entries())
        expect(await backend.release({ key: `k${i}`, owner }, { signal })).toBe(true);
    } finally {
      await backend.close();
      await table.drop();
    }
  });

  it('ends a wait for release by its timeout even when no pool connection is free for LISTEN or a look', async () => {
    const table = await TestTable.create(database, 'waitpool');
    // Two connections: the token connection and one held lock. LISTEN (PostgreSQL) and the look must wait.
    const backend = new TypeOrmLockBackend({
      connection:
        database === 'postgres'
          ? { type: 'postgres', url: serverUrl('postgres'), poolSize: 2 }
          : { type: 'mariadb', url: serverUrl('mariadb'), poolSize: 2 },
      mode: 'session',
      tableName: table.name,
    });
    const never = new AbortController().signal;
    const owner = '7'.repeat(32);
    try {
      await backend.init(never);
      const held = await backend.acquire({
        key: 'a',
        owner,
        ttl: 5_000,
        keepPlace: false,
        onLost: () => {},
        signal: never,
      });
      expect(held.acquired).toBe(true);
      const started = Date.now();
      await backend.waitForRelease({ key: 'a', owner: '8'.repeat(32), timeoutMs: 300, signal: never });
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(await backend.release({ key: 'a', owner }, { signal: never })).toBe(true);
    } finally {
      await backend.close();
      await table.drop();
    }
  });
});
