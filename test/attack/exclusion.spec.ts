import {
  type AcquireOutcome,
  type AcquireRequest,
  type ConnectionChange,
  type LockBackend,
  LockService,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';
import { StrictQueueBackend } from '../support/strict-queue-backend';

/**
 * Attacks on "never two holders by our own hand". Each test asserts the SAFE behaviour: a failure shows a way
 * to get two holders at once.
 */
describe('attack: exclusion', () => {
  it('a reentrant borrower that outlives its owner scope keeps the key until it settles', async () => {
    const { locks, clock, peer } = memoryFixture();
    const other = peer();
    const innerGate = deferred();
    let inner: Promise<unknown> | undefined;
    let outerDone = false;
    const outer = locks
      .using('k', async () => {
        // Borrowed while the lease is held (so the borrow is legitimate), never awaited: outlives the scope.
        inner = locks.using('k', async () => {
          await innerGate.promise;
          return 'finished under the lock';
        });
        await settle(clock);
      })
      .then(() => (outerDone = true));
    await settle(clock);
    // The owner scope's work has ended, but the borrowed work still runs under the lock: nobody else gets it.
    expect(await other.tryAcquire('k')).toBeNull();
    expect(outerDone).toBe(false);
    innerGate.resolve();
    expect(await inner).toBe('finished under the lock');
    await outer;
    const theirs = await other.tryAcquire('k');
    expect(theirs).not.toBeNull();
    await theirs!.release();
  });

  it('a timed-out acquire answered late does not release a lease the retry got for the same owner (queue store)', async () => {
    // A ZooKeeper-like store: a retried acquire by the same owner finds its own node at the head of the line.
    const clock = new ManualClock();
    const strict = new StrictQueueBackend();
    const replyGate = deferred();
    let first = true;
    const slowFirstReply: LockBackend = Object.assign(Object.create(strict) as StrictQueueBackend, {
      acquire: async (request: AcquireRequest): Promise<AcquireOutcome> => {
        const outcome = await strict.acquire(request); // applied in the store at once
        if (first) {
          first = false;
          await replyGate.promise; // ...but the reply is slow
        }
        return outcome;
      },
    });
    const locks = new LockService({ backends: { default: slowFirstReply }, clock, operationTimeout: 100 });
    const other = new LockService({ backends: { default: strict }, clock });
    let lock: Awaited<ReturnType<LockService['acquire']>> | undefined;
    const pending = locks.acquire('k', { waitTimeout: 10_000 }).then((l) => (lock = l));
    await clock.advance(100); // the first acquire times out
    await clock.advance(100); // backoff, the retry: granted (same owner, head of line)
    await pending;
    expect(lock?.isHeld).toBe(true);
    replyGate.resolve(); // the late answer arrives: the core "gives it back"
    await settle(clock);
    await clock.advance(1);
    const theirs = await other.tryAcquire('k');
    const twoHolders = theirs !== null && lock!.isHeld;
    expect(twoHolders).toBe(false);
    await theirs?.release();
    await lock!.release().catch(() => undefined);
  });

  it('an extension answered late does not override a later, shorter extension (watchdog vs lock.extend)', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const other = peer();
    const lock = await locks.acquire('k', { ttl: 30_000, autoExtend: false });
    const slowReply = deferred();
    // First extension: applied in the store at once, reply slow.
    backend.extend = async (lease, ttl, call) => {
      const answer = await backend.inner.extend(lease, ttl, call);
      backend.extend = (l, t, c) => backend.inner.extend(l, t, c);
      await slowReply.promise;
      return answer;
    };
    const longer = lock.extend(30_000);
    await settle(clock);
    await lock.extend(3_000); // the store now holds k for 3 s
    slowReply.resolve();
    await longer; // its reply lands last: the client now trusts the lock for ~30 s
    await clock.advance(3_001);
    const theirs = await other.tryAcquire('k');
    const twoHolders = theirs !== null && lock.isHeld && !lock.signal.aborted;
    await theirs?.release();
    expect({ twoHolders, expiresIn: lock.expiresAt - clock.now() }).toEqual(
      expect.objectContaining({ twoHolders: false }),
    );
  });

  it('a connection "lost" reported while an acquire is in flight does not yield a lease from the dead session', async () => {
    class Reporting extends BendableBackend {
      private readonly listeners = new Set<(change: ConnectionChange) => void>();
      watchConnection = (listener: (change: ConnectionChange) => void): (() => void) => {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
      };
      report(change: ConnectionChange): void {
        for (const listener of this.listeners) listener(change);
      }
    }
    let backend!: Reporting;
    const { locks, clock } = memoryFixture({}, (inner) => {
      backend = new Reporting(inner, { expiring: false, sessionBound: true });
      return backend as LockBackend;
    });
    await locks.init();
    const reply = deferred();
    backend.acquire = async (request) => {
      const outcome = await backend.inner.acquire(request); // granted on the old session
      await reply.promise;
      return outcome;
    };
    const pending = locks.acquire('k').then(
      (l) => l,
      (e: unknown) => e,
    );
    await settle(clock);
    backend.report({ state: 'lost', reason: 'session expired' }); // every lock of the old session is gone
    reply.resolve();
    const outcome = await pending;
    const heldFromDeadSession =
      typeof outcome === 'object' && outcome !== null && 'isHeld' in outcome && (outcome as { isHeld: boolean }).isHeld;
    expect(heldFromDeadSession).toBe(false);
  });

  it("a 'suspended' change (onSuspended 'abort') while an acquire is in flight does not yield a held lease", async () => {
    class Reporting extends BendableBackend {
      private readonly listeners = new Set<(change: ConnectionChange) => void>();
      watchConnection = (listener: (change: ConnectionChange) => void): (() => void) => {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
      };
      report(change: ConnectionChange): void {
        for (const listener of this.listeners) listener(change);
      }
    }
    let backend!: Reporting;
    const { locks, clock } = memoryFixture({}, (inner) => {
      backend = new Reporting(inner, { expiring: false, sessionBound: true });
      return backend as LockBackend;
    });
    await locks.init();
    const reply = deferred();
    backend.acquire = async (request) => {
      const outcome = await backend.inner.acquire(request);
      await reply.promise;
      return outcome;
    };
    const pending = locks.acquire('k', { onSuspended: 'abort' }).then(
      (l) => l,
      (e: unknown) => e,
    );
    await settle(clock);
    backend.report({ state: 'suspended', reason: 'disconnected' }); // held locks on this store count as lost now
    reply.resolve();
    const outcome = (await pending) as { isHeld?: boolean };
    expect(outcome.isHeld === true).toBe(false);
  });

  it('reentrancy during release / after shutdown takes the key itself', async () => {
    const { locks, clock, peer } = memoryFixture();
    const other = peer();
    const lock = await locks.acquire('k');
    await other.close();
    await expect(other.using('k', async () => 1)).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    const closing = locks.close();
    await settle(clock);
    await expect(locks.using('k', async () => 1)).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    await lock.release();
    await closing;
  });

  it('two services on one store exclude each other, reentrancy does not cross them', async () => {
    const memory = new MemoryLockBackend();
    const a = new LockService({ backends: { default: memory } });
    const b = new LockService({ backends: { default: memory } });
    await a.using('k', async () => {
      await expect(b.using('k', async () => 1)).rejects.toMatchObject({ code: 'LOCK_UNAVAILABLE' });
      await expect(a.using('k', async () => 2)).resolves.toBe(2);
    });
    await Promise.all([a.close(), b.close()]);
  });
});
