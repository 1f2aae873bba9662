import { randomUUID } from 'node:crypto';
import type { Client } from 'node-zookeeper-client';
import { systemClock, type LockBackend } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { describeLockBackendContract } from '../contract/lock-backend.contract';
import { closeClient, expireSession, FlakyLink, rawClient, sleep, zookeeperConnect } from './zookeeper-test-support';

describeLockBackendContract('zookeeper', async () => {
  const connect = zookeeperConnect();
  const rootPath = `/contract-${randomUUID()}`;
  const backends: LockBackend[] = [];
  const clients = new Map<LockBackend, { client: Client; link: FlakyLink }>();
  const init = async (backend: ZooKeeperLockBackend): Promise<ZooKeeperLockBackend> => {
    backends.push(backend);
    await backend.init(AbortSignal.timeout(15_000));
    return backend;
  };
  return {
    // Sessions long enough that a busy machine cannot make one look lost; loseSession ends them on purpose.
    backend: await init(new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 })),
    clock: systemClock,
    ttl: 1_000,
    // Real time, and a little more, so that replies and watch events in flight arrive.
    elapse: (ms) => sleep(ms + 20),
    // A restarted app: a new session of its own. Its client is ours and reaches the server through a link we
    // control, so loseSession can end that session.
    reopen: async () => {
      const link = await FlakyLink.open(connect);
      const client = await rawClient(link.address, { sessionTimeout: 10_000 });
      const backend = await init(new ZooKeeperLockBackend({ client, rootPath }));
      clients.set(backend, { client, link });
      return backend;
    },
    loseSession: async (backend) => {
      const reopened = clients.get(backend);
      if (!reopened) throw new Error('loseSession needs a backend made by reopen()');
      // The holder hears EXPIRED when it reconnects; the backend reacts in that event.
      await expireSession(connect, reopened.client, reopened.link);
    },
    close: async () => {
      await Promise.all(backends.map((b) => b.close()));
      await Promise.all([...clients.values()].map(({ client }) => closeClient(client)));
      await Promise.all([...clients.values()].map(({ link }) => link.close()));
    },
  };
});
