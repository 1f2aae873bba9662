import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Client } from 'node-zookeeper-client';
import type { AcquireRequest, ConnectionChange } from '../../lib/backends/lock-backend';
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
} from '../zookeeper/zookeeper-test-support';

const never = new AbortController().signal;
setMaxListeners(0, never);
const call = { signal: never };
const owner = (): string => randomUUID().replace(/-/g, '');
const request = (
  key: string,
  who: string,
  keepPlace = true,
  signal = never,
  onLost: (r: string) => void = () => {},
): AcquireRequest => ({
  key,
  owner: who,
  ttl: 1_000,
  keepPlace,
  onLost,
  signal,
});

describe('ZooKeeper backend under attack', () => {
  const connect = zookeeperConnect();
  const rootPath = `/att2-${randomUUID()}`;
  let inspector: Client;

  beforeAll(async () => {
    inspector = await rawClient(connect);
  });
  afterAll(async () => {
    await closeClient(inspector);
  });

  it('a holder cut off from the server reports the lock lost before another client can take it', async () => {
    const SESSION = 2_000;
    const link = await FlakyLink.open(connect);
    const a = new ZooKeeperLockBackend({ connectionString: link.address, rootPath, sessionTimeout: SESSION });
    const b = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    const events: { what: string; at: number }[] = [];
    try {
      await a.init(AbortSignal.timeout(15_000));
      await b.init(AbortSignal.timeout(15_000));
      a.watchConnection((change: ConnectionChange) => events.push({ what: `a:${change.state}`, at: Date.now() }));
      const key = `cutoff:${randomUUID()}`;
      const holder = owner();
      const got = await a.acquire(
        request(key, holder, false, never, () => events.push({ what: 'a:onLost', at: Date.now() })),
      );
      expect(got.acquired).toBe(true);
      await a.isLocked(key, call);
      link.hold();
      const bOwner = owner();
      const deadline = Date.now() + SESSION * 6;
      let bAt: number | undefined;
      while (Date.now() < deadline) {
        const outcome = await b.acquire(request(key, bOwner, false));
        if (outcome.acquired) {
          bAt = Date.now();
          break;
        }
        await sleep(20);
      }
      expect(bAt).toBeDefined();
      const lostAt = events.find((e) => e.what === 'a:onLost' || e.what === 'a:lost')?.at;
      expect(lostAt).toBeDefined();
      // A knew before B held it (A would otherwise be working under a lock B holds too).
      expect(lostAt!).toBeLessThanOrEqual(bAt!);
      await b.release({ key, owner: bOwner }, call);
    } finally {
      link.pass();
      await a.close();
      await b.close();
      await link.close();
    }
  }, 40_000);

  it('close() with a create still in flight leaves no lock node behind on a client the user passed in', async () => {
    const link = await FlakyLink.open(connect);
    const userClient = await rawClient(link.address, { sessionTimeout: 10_000 });
    const backend = new ZooKeeperLockBackend({ client: userClient, rootPath });
    try {
      await backend.init(AbortSignal.timeout(15_000));
      const key = `close-in-flight:${randomUUID()}`;
      const parent = backend.lockPath(key);
      const first = owner();
      expect((await backend.acquire(request(key, first))).acquired).toBe(true);
      expect(await backend.release({ key, owner: first }, call)).toBe(true);
      // The create reaches the server, its reply is held: the app shuts the backend down meanwhile.
      link.holdReplies();
      const attempt = backend.acquire(request(key, owner()));
      attempt.catch(() => undefined);
      await eventually(async () => expect(await children(inspector, parent)).toHaveLength(1));
      const closed = await within(
        5_000,
        backend.close().then(() => 'closed'),
      );
      expect(closed).toBe('closed');
      expect(
        await within(
          5_000,
          attempt.then(
            () => 'settled',
            () => 'settled',
          ),
        ),
      ).toBe('settled');
      link.pass();
      await sleep(1_500);
      // The user's client lives on (their app keeps using ZooKeeper): a node left here holds the key for every
      // other process until that session ends.
      expect(await children(inspector, parent)).toEqual([]);
    } finally {
      link.pass();
      await closeClient(userClient);
      await link.close();
    }
  }, 40_000);

  it('close() ends a pending wait and an acquire whose reply never comes, promptly', async () => {
    const link = await FlakyLink.open(connect);
    const holderBackend = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    const backend = new ZooKeeperLockBackend({ connectionString: link.address, rootPath, sessionTimeout: 10_000 });
    try {
      await holderBackend.init(AbortSignal.timeout(15_000));
      await backend.init(AbortSignal.timeout(15_000));
      const key = `close-wait:${randomUUID()}`;
      const holder = owner();
      expect((await holderBackend.acquire(request(key, holder))).acquired).toBe(true);
      const waiter = owner();
      expect(await backend.acquire(request(key, waiter))).toMatchObject({ acquired: false, queued: true });
      const waiting = backend.waitForRelease({ key, owner: waiter, timeoutMs: 60_000, signal: never });
      await sleep(200);
      link.holdReplies();
      const stuck = backend.acquire(request(`${key}:2`, owner()));
      stuck.catch(() => undefined);
      await sleep(200);
      const started = Date.now();
      expect(
        await within(
          5_000,
          backend.close().then(() => 'closed'),
        ),
      ).toBe('closed');
      expect(
        await within(
          3_000,
          waiting.then(() => 'woken'),
        ),
      ).toBe('woken');
      expect(
        await within(
          3_000,
          stuck.then(
            () => 'settled',
            () => 'settled',
          ),
        ),
      ).toBe('settled');
      expect(Date.now() - started).toBeLessThan(5_000);
      link.pass();
      // The closed backend's session is gone with its nodes: only the holder remains.
      await eventually(async () => expect(await children(inspector, backend.lockPath(key))).toHaveLength(1), 12_000);
      await holderBackend.release({ key, owner: holder }, call);
    } finally {
      link.pass();
      await backend.close();
      await holderBackend.close();
      await link.close();
    }
  }, 40_000);

  it('an acquire cancelled at any instant leaves no node behind (the core withdraws what it was told is queued)', async () => {
    const backend = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    const holderBackend = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 });
    try {
      await backend.init(AbortSignal.timeout(15_000));
      await holderBackend.init(AbortSignal.timeout(15_000));
      for (const keepPlace of [true, false]) {
        const key = `cancel-any:${keepPlace}:${randomUUID()}`;
        const holder = owner();
        expect((await holderBackend.acquire(request(key, holder))).acquired).toBe(true);
        const attempts: Promise<void>[] = [];
        for (let i = 0; i < 60; i++) {
          const controller = new AbortController();
          const who = owner();
          const delay = i % 15;
          if (i % 3 === 0) setTimeout(() => controller.abort(new Error('gave up')), delay);
          else if (i % 3 === 1) setImmediate(() => controller.abort(new Error('gave up')));
          else queueMicrotask(() => controller.abort(new Error('gave up')));
          attempts.push(
            backend.acquire(request(key, who, keepPlace, controller.signal)).then(
              async (outcome) => {
                // The core, told of a place or a lock, gives it back.
                if (outcome.acquired || outcome.queued) await backend.release({ key, owner: who }, call);
              },
              () => undefined,
            ),
          );
          await sleep(delay % 4);
        }
        await Promise.all(attempts);
        await eventually(async () => expect(await children(inspector, backend.lockPath(key))).toHaveLength(1), 5_000);
        await sleep(500);
        expect(await children(inspector, backend.lockPath(key))).toHaveLength(1);
        expect(await holderBackend.release({ key, owner: holder }, call)).toBe(true);
      }
    } finally {
      await backend.close();
      await holderBackend.close();
    }
  }, 60_000);
});
