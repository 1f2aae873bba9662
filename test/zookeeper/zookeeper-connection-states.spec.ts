import { randomUUID } from 'node:crypto';
import { LockService, systemClock } from '../../lib';
import type { ConnectionChange } from '../../lib/backends/lock-backend';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import {
  children,
  closeClient,
  eventually,
  FlakyLink,
  rawClient,
  sleep,
  zookeeperConnect,
} from './zookeeper-test-support';

/**
 * Connection states as the backend reports them, with the network played by a proxy between the backend and the
 * standalone server (so other tests on that server are not disturbed).
 */
describe('ZooKeeper connection states: suspended, reconnected, lost', () => {
  const SESSION_TIMEOUT = 4_000;
  let link: FlakyLink;
  let backend: ZooKeeperLockBackend;
  let locks: LockService;
  const changes: ConnectionChange[] = [];
  const next = async (state: ConnectionChange['state'], withinMs: number): Promise<ConnectionChange> => {
    for (let waited = 0; waited < withinMs; waited += 20) {
      const found = changes.find((c) => c.state === state);
      if (found) return found;
      await sleep(20);
    }
    throw new Error(`no "${state}" within ${withinMs} ms; saw ${JSON.stringify(changes)}`);
  };

  beforeEach(async () => {
    link = await FlakyLink.open(zookeeperConnect());
    backend = new ZooKeeperLockBackend({
      connectionString: link.address,
      rootPath: `/zk-states-${randomUUID()}`,
      sessionTimeout: SESSION_TIMEOUT,
    });
    await backend.init(AbortSignal.timeout(15_000));
    locks = new LockService({ backends: { default: backend }, clock: systemClock });
    changes.length = 0;
    backend.watchConnection((change) => changes.push(change));
  });
  afterEach(async () => {
    link.pass();
    await locks.close();
    await backend.close();
    await link.close();
  });

  it('suspends when the server stops answering, and keeps the lock when the same session answers in time', async () => {
    const lock = await locks.acquire('k');
    await locks.isLocked('k'); // a fresh answer: the silence starts now
    const silentFrom = Date.now();
    link.hold();
    const suspended = await next('suspended', SESSION_TIMEOUT);
    const suspendedAfter = Date.now() - silentFrom;
    // Two thirds of the session timeout without an answer; what is left of the session is at most a third.
    expect(suspendedAfter).toBeGreaterThanOrEqual((SESSION_TIMEOUT * 2) / 3 - 100);
    expect(suspended).toMatchObject({ state: 'suspended', reason: expect.stringMatching(/stopped answering/) });
    const validForMs = (suspended as { validForMs: number }).validForMs;
    expect(validForMs).toBeGreaterThan(0);
    expect(validForMs).toBeLessThanOrEqual(SESSION_TIMEOUT / 3 + 100);
    link.pass();
    await next('reconnected', SESSION_TIMEOUT);
    expect(changes.map((c) => c.state)).toEqual(['suspended', 'reconnected']);
    expect(lock.signal.aborted).toBe(false);
    expect(await lock.extend()).toBeUndefined();
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  it("loses a lock with onSuspended: 'abort' as soon as the store is suspended (Curator's default)", async () => {
    const lock = await locks.acquire('k', { onSuspended: 'abort' });
    const kept = await locks.acquire('kept', { onSuspended: 'wait' });
    link.cut();
    await next('suspended', 2_000);
    await next('reconnected', SESSION_TIMEOUT);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
    expect(kept.signal.aborted).toBe(false);
    // Given up, yet our node still stands on a live session: giving the lock back must delete it.
    await lock.release();
    expect(await locks.isLocked('k')).toBe(false);
    await kept.release();
  });

  it('suspends at once on a dropped connection, and reconnects to the same session', async () => {
    const lock = await locks.acquire('k');
    link.cut();
    const suspended = await next('suspended', 2_000);
    expect(suspended).toMatchObject({ reason: expect.stringMatching(/dropped/) });
    await next('reconnected', SESSION_TIMEOUT);
    expect(lock.signal.aborted).toBe(false);
    expect(await locks.isLocked('k')).toBe(true);
    await lock.release();
    expect(await locks.isLocked('k')).toBe(false);
  });

  it('reports the lock lost once the session timeout passes without an answer, then works on a new session', async () => {
    const lock = await locks.acquire('k');
    await locks.isLocked('k');
    const silentFrom = Date.now();
    link.hold();
    await next('lost', SESSION_TIMEOUT * 2);
    const lostAfter = Date.now() - silentFrom;
    expect(lostAfter).toBeLessThanOrEqual(SESSION_TIMEOUT + 200);
    expect(changes.map((c) => c.state)).toEqual(['suspended', 'lost']);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
    link.pass();
    // The old session ends on the server too (it expired, or the close of the replaced client got through once
    // the link passed again), so the key frees up, and this backend takes it again on a new session.
    const again = await locks.acquire('k', { waitTimeout: SESSION_TIMEOUT * 3 });
    expect(again.fencingToken).toBeGreaterThan(lock.fencingToken);
    await again.release();
  }, 30_000);

  it('finds its own node again when the reply to its create is lost with the connection (protected mode)', async () => {
    const inspector = await rawClient(zookeeperConnect());
    try {
      const parent = backend.lockPath('protected');
      await (await locks.acquire('protected')).release(); // the parent exists (and stays): one create to come
      link.holdReplies();
      const attempt = locks.acquire('protected', { waitTimeout: SESSION_TIMEOUT * 2 });
      attempt.catch(() => undefined); // awaited below; this keeps a failed check from leaving it unhandled
      // The create reached the server (the node is there) but its reply is stuck: now the connection drops.
      await eventually(async () => expect(await children(inspector, parent)).toHaveLength(1));
      link.cut();
      const lock = await attempt;
      // No second node: the client recognised its node by the uuid in its name instead of creating another.
      expect(await children(inspector, parent)).toHaveLength(1);
      await lock.release();
      expect(await children(inspector, parent)).toEqual([]);
    } finally {
      await closeClient(inspector);
    }
  }, 30_000);
});
