import { LockService, ManualClock, MemoryLockBackend } from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

describe('attack: exclusion, more', () => {
  it('a watchdog extension answered late does not override lock.extend(shorter) made meanwhile', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const other = peer();
    const lock = await locks.acquire('k', { ttl: 30_000, autoExtend: true });
    const slowReply = deferred();
    const original = backend.extend;
    backend.extend = async (lease, ttl, call) => {
      const answer = await backend.inner.extend(lease, ttl, call); // the watchdog's extension lands in the store
      backend.extend = original;
      await slowReply.promise; // its reply is slow
      return answer;
    };
    await clock.advance(10_000); // the watchdog fires: extend(30 000) in flight
    await lock.extend(3_000); // the store now keeps k for 3 s, the watchdog follows 3 s
    slowReply.resolve(); // the watchdog's stale reply lands last
    await settle(clock);
    // The store becomes unreachable for extensions: the lock must be given up by the client before the store expires it.
    backend.interfere = (op) => (op === 'extend' ? Promise.reject(new Error('store unreachable')) : undefined);
    await clock.advance(3_001);
    const theirs = await other.tryAcquire('k');
    const twoHolders = theirs !== null && lock.isHeld && !lock.signal.aborted;
    backend.interfere = () => undefined;
    await theirs?.release();
    await lock.release().catch(() => undefined);
    expect(twoHolders).toBe(false);
  });

  it('minHold: a watchdog extension in flight at release does not keep the key for a full ttl', async () => {
    let backend!: BendableBackend;
    const { locks, clock, memory } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const delayed = deferred();
    const gate = deferred();
    const lockPromise: Promise<unknown> = locks.using(
      'k',
      async () => {
        await gate.promise;
      },
      { ttl: 30_000, minHold: 12_000 },
    );
    await settle(clock);
    // The watchdog's extension is delayed on the way to the store (another connection, a retry).
    backend.extend = async (lease, ttl, call) => {
      backend.extend = (l, t, c) => backend.inner.extend(l, t, c);
      await delayed.promise;
      return backend.inner.extend(lease, ttl, call);
    };
    await clock.advance(10_000); // watchdog fires, its extend(30 000) is on the way
    gate.resolve(); // work ends at 10 s: release means "keep until 12 s"
    await settle(clock);
    delayed.resolve(); // the stale extension lands after the minHold one
    await lockPromise;
    await clock.advance(3_000); // 13 s: minHold is over
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('reentrancy through two names of one backend instance does not wait for itself', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const locks = new LockService({ backends: { default: memory, reports: memory }, clock });
    let inner: unknown;
    await locks.using('k', async () => {
      inner = await locks
        .using('k', async () => 'inner ran', { backend: 'reports' })
        .catch((e: unknown) => (e as Error).message);
    });
    expect(inner).toBe('inner ran');
    await locks.close();
  });
});
