import { type LockBackend, MemoryLockBackend } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import type { SampleConfig } from './sample-config';

/**
 * The sample's lock store. Only this function changes between stores; the decorators and LockService calls
 * stay the same. The module calls it at bootstrap and closes what it returns at shutdown.
 */
export function sampleLockBackend(config: SampleConfig): LockBackend {
  switch (config.lockBackend) {
    case 'memory':
      // One process only: two instances would each have their own locks.
      return new MemoryLockBackend();
    case 'postgres':
      return new TypeOrmLockBackend({
        connection: { type: 'postgres', url: config.postgresUrl },
        createTable: true,
      });
    case 'redis':
      // One URL: plain single-node locking. Several independent masters: Redlock, a majority must agree.
      return new RedlockBackend({ nodes: config.redisNodes });
    case 'zookeeper':
      return new ZooKeeperLockBackend({ connectionString: config.zooKeeperConnection });
    case 'sqlite':
      return new TypeOrmLockBackend({
        connection: {
          type: 'better-sqlite3',
          database: config.databaseFile,
          // WAL: instances read while another writes, and a statement does not wait for a full file sync.
          enableWAL: true,
        },
        // The sample has no migrations: the backend creates its table at bootstrap.
        createTable: true,
      });
  }
}
