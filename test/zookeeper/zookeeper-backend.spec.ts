import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Client } from 'node-zookeeper-client';
import { LockService, systemClock, type AcquireRequest, type LockBackend } from '../../lib';
import { ZooKeeperLockBackend, zooKeeperNodeName } from '../../lib/backends/zookeeper';
import {
  children,
  closeClient,
  eventually,
  exists,
  expireSession,
  FlakyLink,
  rawClient,
  sleep,
  zookeeperConnect,
} from './zookeeper-test-support';

const never = new AbortController().signal;
// Shared by many calls in flight at once (one listener each while it runs): not a leak.
setMaxListeners(0, never);
const call = { signal: never };
const owner = (): string => randomUUID().replace(/-/g, '');
const request = (key: string, who: string, keepPlace = true, signal = never): AcquireRequest => ({
  key,
  owner: who,
  ttl: 1_000,
  keepPlace,
  onLost: () => undefined,
  signal,
});

describe('ZooKeeperLockBackend on a real server', () => {
  const connect = zookeeperConnect();
  const rootPath = `/zk-spec-${randomUUID()}`;
  const opened: LockBackend[] = [];
  let inspector: Client;
  let backend: ZooKeeperLockBackend;

  const open = async (options: { emptyParentDelay?: number } = {}): Promise<ZooKeeperLockBackend> => {
    const created = new ZooKeeperLockBackend({
      connectionString: connect,
      rootPath,
      sessionTimeout: 10_000,
      ...options,
    });
    opened.push(created);
    await created.init(AbortSignal.timeout(15_000));
    return created;
  };
  /** The lock nodes under `key`'s parent, as another client sees them. */
  const nodesOf = (key: string): Promise<string[]> => children(inspector, backend.lockPath(key));

  beforeAll(async () => {
    inspector = await rawClient(connect);
    backend = await open();
  });
  afterAll(async () => {
    await Promise.all(opened.map((b) => b.close()));
    await closeClient(inspector);
  });

  it("lays out Curator's protected ephemeral sequential nodes under <rootPath>/<encoded key>", async () => {
    const key = `layout:${randomUUID()}`;
    const me = owner();
    expect(await backend.acquire(request(key, me))).toMatchObject({ acquired: true });
    expect(backend.lockPath(key)).toBe(`${rootPath}/${zooKeeperNodeName(key)}`);
    const [name, ...others] = await nodesOf(key);
    expect(others).toEqual([]);
    expect(name).toMatch(/^_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-lock-\d{10}$/);
    const stat = await exists(inspector, `${backend.lockPath(key)}/${name}`);
    // Ephemeral: owned by the backend's session, so it goes with the session.
    expect(stat!.ephemeralOwner.readBigUInt64BE(0)).not.toBe(0n);
    expect(await backend.release({ key, owner: me }, call)).toBe(true);
    expect(await nodesOf(key)).toEqual([]);
  });

  it('wakes exactly one of 20 queued waiters per release: each watches only its predecessor', async () => {
    const key = `herd:${randomUUID()}`;
    const holder = owner();
    expect(await backend.acquire(request(key, holder))).toMatchObject({ acquired: true });
    // 20 waiters, each on its own session, each keeping its place in line.
    const waiters = await Promise.all(Array.from({ length: 20 }, () => open()));
    const owners = waiters.map(() => owner());
    for (let i = 0; i < waiters.length; i++) {
      expect(await waiters[i]!.acquire(request(key, owners[i]!))).toMatchObject({ acquired: false, queued: true });
    }
    const woken: number[] = [];
    const stop = new AbortController();
    setMaxListeners(0, stop.signal);
    const waits = waiters.map((w, i) =>
      w.waitForRelease({ key, owner: owners[i]!, timeoutMs: 60_000, signal: stop.signal }).then(() => {
        if (!stop.signal.aborted) woken.push(i);
      }),
    );
    await sleep(300);
    expect(woken).toEqual([]);
    await backend.release({ key, owner: holder }, call);
    await eventually(async () => expect(woken.length).toBeGreaterThan(0));
    await sleep(300);
    // Only the first in line was woken, and it now holds the lock; the others still wait.
    expect(woken).toEqual([0]);
    expect(await waiters[0]!.acquire(request(key, owners[0]!))).toMatchObject({ acquired: true });
    expect(await waiters[1]!.acquire(request(key, owners[1]!))).toMatchObject({ acquired: false, queued: true });
    stop.abort();
    await Promise.all(waits);
    await Promise.all(waiters.map((w, i) => w.release({ key, owner: owners[i]! }, call)));
    expect(await nodesOf(key)).toEqual([]);
  });

  it('withdraws a queued place on release (false), and a try-once attempt leaves no node', async () => {
    const key = `withdraw:${randomUUID()}`;
    const holder = owner();
    await backend.acquire(request(key, holder));
    const queued = owner();
    expect(await backend.acquire(request(key, queued))).toMatchObject({ queued: true });
    expect(await nodesOf(key)).toHaveLength(2);
    expect(await backend.release({ key, owner: queued }, call)).toBe(false);
    expect(await backend.acquire(request(key, owner(), false))).toEqual({ acquired: false });
    expect(await nodesOf(key)).toHaveLength(1);
    await backend.release({ key, owner: holder }, call);
    expect(await nodesOf(key)).toEqual([]);
  });

  it('leaves no node behind when a wait is cancelled by its timeout or its AbortSignal', async () => {
    const locks = new LockService({ backends: { default: backend }, clock: systemClock });
    const key = `cancel:${randomUUID()}`;
    const held = await locks.acquire(key, { ttl: 10_000 });
    await expect(locks.acquire(key, { waitTimeout: 300 })).rejects.toMatchObject({ code: 'LOCK_UNAVAILABLE' });
    const controller = new AbortController();
    const waiting = locks.acquire(key, { waitTimeout: 60_000, signal: controller.signal });
    await eventually(async () => expect(await nodesOf(key)).toHaveLength(2));
    controller.abort(new Error('caller gave up'));
    await expect(waiting).rejects.toThrow('caller gave up');
    await eventually(async () => expect(await nodesOf(key)).toHaveLength(1));
    await held.release();
    expect(await nodesOf(key)).toEqual([]);
    await locks.close();
  });

  it('deletes a node whose create was still in flight when the caller walked away', async () => {
    const key = `orphan:${randomUUID()}`;
    const holder = owner();
    await backend.acquire(request(key, holder));
    for (let i = 0; i < 10; i++) {
      const controller = new AbortController();
      const attempt = backend.acquire(request(key, owner(), true, controller.signal));
      controller.abort(new Error('walked away'));
      await expect(attempt).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    }
    await eventually(async () => expect(await nodesOf(key)).toHaveLength(1));
    await sleep(200);
    expect(await nodesOf(key)).toHaveLength(1);
    await backend.release({ key, owner: holder }, call);
  });

  it('contains keys that look like paths in one child of the root', async () => {
    const keys = ['..', '.', '../../etc', '/zookeeper/quota', 'a/../../b', 'zookeeper', '%2F', '~'];
    const before = await children(inspector, '/');
    const locks = new LockService({ backends: { default: backend }, clock: systemClock });
    for (const key of keys) {
      const lock = await locks.acquire(key);
      const name = zooKeeperNodeName(key);
      expect(name).not.toMatch(/[/]/);
      expect(['.', '..']).not.toContain(name);
      expect(await children(inspector, rootPath)).toContain(name);
      expect(await nodesOf(key)).toHaveLength(1);
      await lock.release();
    }
    expect(new Set(keys.map(zooKeeperNodeName)).size).toBe(keys.length);
    expect(await children(inspector, '/')).toEqual(before);
    await locks.close();
  });

  it('deletes a lock parent it created once it stayed empty for emptyParentDelay', async () => {
    const eager = await open({ emptyParentDelay: 50 });
    const key = `parent:${randomUUID()}`;
    const me = owner();
    await eager.acquire(request(key, me));
    expect(await exists(inspector, eager.lockPath(key))).not.toBeNull();
    await eager.release({ key, owner: me }, call);
    await eventually(async () => expect(await exists(inspector, eager.lockPath(key))).toBeNull());
    // The next lock on that key simply makes it again.
    await eager.acquire(request(key, me));
    expect(await nodesOf(key)).toHaveLength(1);
    await eager.release({ key, owner: me }, call);
  });

  it('reports session loss to the holder (onLost, watchConnection) and takes later locks on a new session', async () => {
    // A long session, so a busy machine cannot make it lapse on its own before the test ends it.
    const link = await FlakyLink.open(connect);
    const client = await rawClient(link.address, { sessionTimeout: 10_000 });
    const userClient = new ZooKeeperLockBackend({ client, rootPath });
    opened.push(userClient);
    await userClient.init(AbortSignal.timeout(15_000));
    const key = `expiry:${randomUUID()}`;
    const lost: string[] = [];
    const changes: string[] = [];
    userClient.watchConnection((change) => changes.push(change.state));
    const me = owner();
    await userClient.acquire({ ...request(key, me), onLost: (reason) => lost.push(reason) });
    await expireSession(connect, client, link);
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatch(/expired/);
    expect(changes).toContain('lost');
    expect(await nodesOf(key)).toEqual([]);
    // A client passed in cannot be renewed: later calls say so instead of hanging.
    await expect(userClient.acquire(request(key, owner()))).rejects.toMatchObject({
      code: 'LOCK_BACKEND',
      message: expect.stringMatching(/has expired/),
    });
    await closeClient(client);
    await link.close();
  });

  it('extend is true only while our node lives on our session', async () => {
    const key = `extend:${randomUUID()}`;
    const me = owner();
    await backend.acquire(request(key, me));
    expect(await backend.extend({ key, owner: me }, 1_000, call)).toBe(true);
    const [name] = await nodesOf(key);
    // Someone (an operator) deletes the node: the lock is no longer ours.
    await new Promise<void>((resolve, reject) =>
      inspector.remove(`${backend.lockPath(key)}/${name}`, (error) => (error ? reject(error) : resolve())),
    );
    expect(await backend.extend({ key, owner: me }, 1_000, call)).toBe(false);
    expect(await backend.release({ key, owner: me }, call)).toBe(false);
  });

  it('fails init with LockBackendError when nothing answers at the address', async () => {
    const nowhere = new ZooKeeperLockBackend({ connectionString: '127.0.0.1:1', connectTimeout: 500 });
    await expect(nowhere.init(never)).rejects.toMatchObject({
      code: 'LOCK_BACKEND',
      message: expect.stringMatching(/127\.0\.0\.1:1/),
    });
    await nowhere.close();
  });

  it('rejects bad options in the constructor, before connecting', () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{}, 'connectionString'],
      [{ connectionString: connect, client: {} }, 'connectionString'],
      [{ connectionString: 'no spaces please' }, 'connectionString'],
      [{ connectionString: connect, rootPath: 'locks' }, 'rootPath'],
      [{ connectionString: connect, rootPath: '/a/../b' }, 'rootPath'],
      [{ connectionString: connect, rootPath: '/' }, 'rootPath'],
      [{ connectionString: connect, sessionTimeout: 0 }, 'sessionTimeout'],
      [{ connectionString: connect, ttl: 5 }, 'ttl'],
    ];
    for (const [options, option] of bad) {
      expect(() => new ZooKeeperLockBackend(options as never)).toThrow(
        expect.objectContaining({ code: 'LOCK_CONFIGURATION', option }),
      );
    }
  });
});
