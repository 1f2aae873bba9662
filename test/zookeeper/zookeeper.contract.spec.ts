import { randomUUID } from 'node:crypto';
import type { Client } from 'node-zookeeper-client';
import { systemClock, type LockBackend } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { describeLockBackendContract } from '../contract/lock-backend.contract';
import { closeClient, expireSession, rawClient, sleep, zookeeperConnect } from './zookeeper-test-support';

describeLockBackendContract('zookeeper', async () => {
  const connect = zookeeperConnect();
  const rootPath = `/contract-${randomUUID()}`;
  const backends: LockBackend[] = [];
  const clients = new Map<LockBackend, Client>();
  const init = async (backend: ZooKeeperLockBackend): Promise<ZooKeeperLockBackend> => {
    backends.push(backend);
    await backend.init(AbortSignal.timeout(15_000));
    return backend;
  };
  return {
    backend: await init(new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 2_000 })),
    clock: systemClock,
    ttl: 1_000,
    // Real time, and a little more, so that replies and watch events in flight arrive.
    elapse: (ms) => sleep(ms + 20),
    // A restarted app: a new session of its own. Its client is ours, so loseSession can end that session.
    reopen: async () => {
      const client = await rawClient(connect, { sessionTimeout: 2_000 });
      const backend = await init(new ZooKeeperLockBackend({ client, rootPath }));
      clients.set(backend, client);
      return backend;
    },
    loseSession: async (backend) => {
      const client = clients.get(backend);
      if (!client) throw new Error('loseSession needs a backend made by reopen()');
      // The holder hears EXPIRED as soon as the server drops the session; the backend reacts in that event.
      await expireSession(connect, client);
    },
    close: async () => {
      await Promise.all(backends.map((b) => b.close()));
      await Promise.all([...clients.values()].map(closeClient));
    },
  };
});
