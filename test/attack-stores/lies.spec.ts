import { randomBytes, randomUUID } from 'node:crypto';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { serverUrl, TestTable } from '../typeorm/sql-fixture';
import { FlakyLink, zookeeperConnect } from '../zookeeper/zookeeper-test-support';

const never = new AbortController().signal;
const owner = (): string => randomBytes(16).toString('hex');

describe('messages that say what happened', () => {
  it('a ZooKeeper release that could not be sent does not claim the lock is "left to expire by its ttl" (there is no ttl)', async () => {
    const link = await FlakyLink.open(zookeeperConnect());
    const backend = new ZooKeeperLockBackend({
      connectionString: link.address,
      rootPath: `/att2-lies-${randomUUID()}`,
      sessionTimeout: 10_000,
    });
    try {
      await backend.init(AbortSignal.timeout(15_000));
      const who = owner();
      expect(
        (await backend.acquire({ key: 'k', owner: who, ttl: 1_000, keepPlace: false, onLost: () => {}, signal: never }))
          .acquired,
      ).toBe(true);
      link.hold();
      const error = await backend.release({ key: 'k', owner: who }, { signal: AbortSignal.timeout(300) }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(error).toBeDefined();
      expect(error!.message).not.toMatch(/ttl/);
    } finally {
      link.pass();
      await backend.close();
      await link.close();
    }
  }, 30_000);

  it('a SQL acquire that gave up waiting for a pool connection does not say "The database said: …" (it never reached the database)', async () => {
    const table = await TestTable.create('postgres', 'att2_lies');
    const backend = new TypeOrmLockBackend({
      connection: { type: 'postgres', url: serverUrl('postgres'), poolSize: 2 },
      mode: 'session',
      tableName: table.name,
      notify: false,
    });
    try {
      await backend.init(never);
      const held = owner();
      expect(
        (
          await backend.acquire({
            key: 'a',
            owner: held,
            ttl: 1_000,
            keepPlace: false,
            onLost: () => {},
            signal: never,
          })
        ).acquired,
      ).toBe(true);
      // Token connection + one held lock: the pool is empty, so this call can only wait for a connection.
      const error = await backend
        .acquire({
          key: 'b',
          owner: owner(),
          ttl: 1_000,
          keepPlace: false,
          onLost: () => {},
          signal: AbortSignal.timeout(300),
        })
        .then(
          () => undefined,
          (e: unknown) => e as Error,
        );
      expect(error).toBeDefined();
      expect(error!.message).not.toMatch(/The database said/);
      expect(await backend.release({ key: 'a', owner: held }, { signal: never })).toBe(true);
    } finally {
      await backend.close();
      await table.drop();
    }
  }, 30_000);
});
