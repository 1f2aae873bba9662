import { randomUUID } from 'node:crypto';
import * as zookeeper from 'node-zookeeper-client';
import type { Client, Exception } from 'node-zookeeper-client';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { ZooKeeperLockBackendBase } from '../../lib/backends/zookeeper/zookeeper-lock-backend';
import type { ZooKeeperDriver } from '../../lib/backends/zookeeper/zookeeper-connection';
import { children, closeClient, FlakyLink, rawClient, sleep, within, zookeeperConnect } from './zookeeper-test-support';

describe('ZooKeeperLockBackend with work in flight at close() or session loss', () => {
  it('ends an init still connecting at once, instead of leaving it to its connectTimeout', async () => {
    // The server is reached through a link that passes nothing: the session never comes.
    const link = await FlakyLink.open(zookeeperConnect());
    link.hold();
    const backend = new ZooKeeperLockBackend({ connectionString: link.address, connectTimeout: 20_000 });
    try {
      const init = backend.init(new AbortController().signal).then(
        () => undefined,
        (error: unknown) => error as Error,
      );
      await sleep(200);
      const started = Date.now();
      await backend.close();
      const error = await within(3_000, init);
      expect(error).toMatchObject({ code: 'LOCK_BACKEND', message: expect.stringMatching(/closed/) });
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await backend.close();
      link.pass();
      await link.close();
    }
  }, 30_000);
  it('a create retried on the session that replaced a lost one is tagged with that session, and holds', async () => {
    // The first client answers the first create with NO_NODE, just after telling the backend its session
    // expired: the retry (after re-creating the parent) runs on the next session.
    const clients: Client[] = [];
    const driver: ZooKeeperDriver = {
      ...zookeeper,
      createClient: (connectionString, options) => {
        const client = zookeeper.createClient(connectionString, options);
        if (clients.push(client) === 1) {
          const realCreate = client.create.bind(client) as (...args: unknown[]) => void;
          let tripped = false;
          client.create = ((...args: unknown[]) => {
            const path = args[0] as string;
            // Only the lock node's create (mkdirp creates the parents with the same method).
            if (tripped || !path.includes('/_c_')) return realCreate(...args);
            tripped = true;
            const callback = args[args.length - 1] as (error: Exception) => void;
            client.emit('state', zookeeper.State.EXPIRED);
            const noNode = zookeeper.Exception as unknown as { create(code: number, path?: string): Exception };
            callback(noNode.create(zookeeper.Exception.NO_NODE, path));
          }) as Client['create'];
        }
        return client;
      },
    };
    const inspector = await rawClient(zookeeperConnect());
    const backend = new ZooKeeperLockBackendBase(
      { connectionString: zookeeperConnect(), rootPath: `/zk-close-${randomUUID()}`, sessionTimeout: 10_000 },
      driver,
    );
    try {
      await backend.init(AbortSignal.timeout(15_000));
      const key = `retried:${randomUUID()}`;
      const me = randomUUID().replace(/-/g, '');
      const outcome = await backend.acquire({
        key,
        owner: me,
        ttl: 1_000,
        keepPlace: false,
        onLost: () => undefined,
        signal: AbortSignal.timeout(15_000),
      });
      expect(clients).toHaveLength(2);
      // Tagged with the lost session, the node would be dropped undeleted and block the key (and this attempt).
      expect(outcome.acquired).toBe(true);
      expect(await children(inspector, backend.lockPath(key))).toHaveLength(1);
      expect(await backend.release({ key, owner: me }, { signal: AbortSignal.timeout(5_000) })).toBe(true);
      expect(await children(inspector, backend.lockPath(key))).toEqual([]);
    } finally {
      await backend.close();
      await closeClient(inspector);
    }
  }, 30_000);
});
