import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Exception, type Client } from 'node-zookeeper-client';
import type { AcquireRequest, ConnectionChange } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import {
  children,
  closeClient,
  eventually,
  FlakyLink,
  rawClient,
  sleep,
  within,
  zookeeperConnect,
} from './zookeeper-test-support';

const never = new AbortController().signal;
setMaxListeners(0, never);
const call = { signal: never };
const owner = (): string => randomUUID().replace(/-/g, '');
const request = (key: string, who: string, keepPlace = true): AcquireRequest => ({
  key,
  owner: who,
  ttl: 1_000,
  keepPlace,
  onLost: () => undefined,
  signal: never,
});

/**
 * A client the user passed in outlives the backend and its own idea of the session: every node the backend made
 * on it must be deleted by the backend, or it holds the key for every other process as long as the user's app runs.
 */
describe('ZooKeeperLockBackend on a client the user passed in', () => {
  const connect = zookeeperConnect();
  const rootPath = `/zk-user-${randomUUID()}`;
  let inspector: Client;

  beforeAll(async () => {
    inspector = await rawClient(connect);
  });
  afterAll(async () => {
    await closeClient(inspector);
  });

  it('close() deletes the locks it held and the places it kept in line; the user’s session lives on', async () => {
    const client = await rawClient(connect, { sessionTimeout: 10_000 });
    const other = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    const backend = new ZooKeeperLockBackend({ client, rootPath });
    try {
      await other.init(AbortSignal.timeout(15_000));
      await backend.init(AbortSignal.timeout(15_000));
      const mine = `held:${randomUUID()}`;
      const theirs = `queued:${randomUUID()}`;
      const holder = owner();
      expect((await backend.acquire(request(mine, owner()))).acquired).toBe(true);
      expect((await other.acquire(request(theirs, holder))).acquired).toBe(true);
      expect(await backend.acquire(request(theirs, owner()))).toMatchObject({ acquired: false, queued: true });
      expect(await children(inspector, backend.lockPath(theirs))).toHaveLength(2);
      await backend.close();
      expect(await children(inspector, backend.lockPath(mine))).toEqual([]);
      // Only the other holder's node is left: ours no longer stands in line.
      expect(await children(inspector, backend.lockPath(theirs))).toHaveLength(1);
      expect(await other.isLocked(mine, call)).toBe(false);
      expect(client.getState().name).toBe('SYNC_CONNECTED');
      expect(await other.release({ key: theirs, owner: holder }, call)).toBe(true);
    } finally {
      await backend.close();
      await other.close();
      await closeClient(client);
    }
  }, 30_000);

  it('deletes a node whose create was answered only after the session was counted lost, when the session lived on', async () => {
    const link = await FlakyLink.open(connect);
    // Requests still reach the server (its session stays alive), but no reply comes back for longer than the
    // session timeout: the backend must count the session lost, while the user's client goes on with it.
    const client = await rawClient(link.address, { sessionTimeout: 2_000 });
    const backend = new ZooKeeperLockBackend({ client, rootPath });
    const changes: ConnectionChange['state'][] = [];
    try {
      await backend.init(AbortSignal.timeout(15_000));
      backend.watchConnection((change) => changes.push(change.state));
      const key = `late-create:${randomUUID()}`;
      const me = owner();
      // The parent exists (a create under a missing one would only learn NO_NODE, held back too).
      expect((await backend.acquire(request(key, me))).acquired).toBe(true);
      expect(await backend.release({ key, owner: me }, call)).toBe(true);
      link.holdReplies();
      const attempt = backend.acquire(request(key, me, false));
      attempt.catch(() => undefined);
      await eventually(async () => expect(changes).toContain('lost'), 10_000);
      expect(await children(inspector, backend.lockPath(key))).toHaveLength(1);
      link.pass();
      // The late node is ours and on a live session: left there it would be first in line for good, and this
      // very attempt would queue behind it.
      const outcome = await within(10_000, attempt);
      expect(outcome?.acquired).toBe(true);
      expect(await children(inspector, backend.lockPath(key))).toHaveLength(1);
      expect(await backend.release({ key, owner: me }, call)).toBe(true);
      await sleep(200);
      expect(await children(inspector, backend.lockPath(key))).toEqual([]);
    } finally {
      link.pass();
      await backend.close();
      await closeClient(client);
      await link.close();
    }
  }, 40_000);
  it('a try-once attempt whose delete of its own node fails still deletes it (no node left in line)', async () => {
    const client = await rawClient(connect, { sessionTimeout: 10_000 });
    const other = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    const backend = new ZooKeeperLockBackend({ client, rootPath });
    const realRemove = client.remove.bind(client);
    try {
      await other.init(AbortSignal.timeout(15_000));
      await backend.init(AbortSignal.timeout(15_000));
      const key = `try-once:${randomUUID()}`;
      const holder = owner();
      expect((await other.acquire(request(key, holder))).acquired).toBe(true);
      // The connection drops just as the delete is due: it never reaches the server. (A user's client, because
      // its remove can be replaced here; an owned client's session lives on just the same.)
      let dropped = 0;
      const connectionLost = Exception as unknown as { create(code: number, path?: string): Exception };
      client.remove = ((path: string, version: number, callback: (error: Error | Exception | null) => void): void => {
        if (dropped++ === 0) callback(connectionLost.create(Exception.CONNECTION_LOSS, path));
        else realRemove(path, version, callback);
      }) as Client['remove'];
      await expect(backend.acquire(request(key, owner(), false))).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
      expect(dropped).toBeGreaterThanOrEqual(1);
      // Our node would otherwise stand behind the holder for as long as the session lives, before every waiter.
      await eventually(async () => expect(await children(inspector, backend.lockPath(key))).toHaveLength(1), 5_000);
      expect(await other.release({ key, owner: holder }, call)).toBe(true);
      expect(await other.isLocked(key, call)).toBe(false);
    } finally {
      client.remove = realRemove;
      await backend.close();
      await other.close();
      await closeClient(client);
    }
  }, 30_000);
});
