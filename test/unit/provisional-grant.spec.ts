import type { MemoryLockBackend } from '../../lib';
import type { AcquireOutcome, LockBackend } from '../../lib/backends/lock-backend';
import { validityMs } from '../../lib/core/backoff';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

/**
 * A provisional grant (AcquiredOutcome.provisionalForMs): a fair store handed the key over for a short while
 * before the waiter asked (Redis: the release gives it to the first in line for handoffTimeout). The core
 * trusts it only that long and confirms it at once with extend(ttl).
 */
describe('provisional grants', () => {
  const PROVISIONAL = 80;
  const TTL = 10_000;

  /** The memory store, granting provisionally: what a queueing store's direct hand-off looks like to the core. */
  function provisionalStore(): { backend: BendableBackend; make: (memory: MemoryLockBackend) => LockBackend } {
    let backend!: BendableBackend;
    const make = (memory: MemoryLockBackend): LockBackend => {
      backend = new BendableBackend(memory);
      const acquire = backend.acquire;
      backend.acquire = async (request): Promise<AcquireOutcome> => {
        const outcome = await acquire(request);
        return outcome.acquired ? { ...outcome, provisionalForMs: PROVISIONAL } : outcome;
      };
      return backend;
    };
    return {
      get backend() {
        return backend;
      },
      make,
    };
  }

  it('is confirmed at once with extend(ttl); until it answers, the lock is trusted only for the provisional time', async () => {
    const store = provisionalStore();
    const { locks, clock, events } = memoryFixture({}, store.make);
    const extension = deferred<never>();
    store.backend.interfere = (operation) => (operation === 'extend' ? extension.promise : undefined);
    const lock = await locks.acquire('k', { ttl: TTL });
    expect(store.backend.calls).toEqual(['acquire', 'extend']);
    expect(lock.expiresAt).toBe(lock.acquiredAt + PROVISIONAL);
    await clock.advance(PROVISIONAL - 1);
    expect(lock.isHeld).toBe(true);
    // The confirmation never answers: the lock is lost when the provisional time is up, not after the ttl.
    await clock.advance(1);
    expect(lock.isHeld).toBe(false);
    expect(lock.signal.aborted).toBe(true);
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
  });

  it('once confirmed, the lock is trusted for the ttl from the confirmation', async () => {
    const store = provisionalStore();
    const { locks, clock, events } = memoryFixture({}, store.make);
    const lock = await locks.acquire('k', { ttl: TTL });
    await settle(clock);
    expect(lock.expiresAt).toBe(lock.acquiredAt + validityMs(TTL));
    await clock.advance(PROVISIONAL * 10);
    expect(lock.isHeld).toBe(true);
    expect(events.filter((e) => e.type === 'extended')).toHaveLength(1);
    await lock.release();
  });

  it('a refused confirmation loses the lock at once', async () => {
    const store = provisionalStore();
    const { locks, clock } = memoryFixture({}, store.make);
    store.backend.extend = async () => false;
    const lock = await locks.acquire('k', { ttl: TTL });
    await settle(clock);
    expect(lock.isHeld).toBe(false);
    expect((lock.signal.reason as Error).message).toMatch(/no longer holds it/);
  });

  it.each([NaN, -5])(
    'a faulty provisional time (%p) trusts the grant for nothing until it is confirmed',
    async (bad) => {
      let backend!: BendableBackend;
      const { locks, clock } = memoryFixture({}, (memory) => {
        backend = new BendableBackend(memory);
        const acquire = backend.acquire;
        backend.acquire = async (request): Promise<AcquireOutcome> => {
          const outcome = await acquire(request);
          return outcome.acquired ? { ...outcome, provisionalForMs: bad } : outcome;
        };
        return backend;
      });
      const extension = deferred<never>();
      backend.interfere = (operation) => (operation === 'extend' ? extension.promise : undefined);
      const lock = await locks.acquire('k', { ttl: TTL });
      expect(lock.expiresAt).toBe(lock.acquiredAt);
      await settle(clock);
      expect(lock.isHeld).toBe(false);
      expect(lock.signal.aborted).toBe(true);
    },
  );

  it('using() with autoExtend: the watchdog takes over after the confirmation', async () => {
    const store = provisionalStore();
    const { locks, clock, events } = memoryFixture({}, store.make);
    const work = deferred();
    const done = locks.using('k', () => work.promise, { ttl: 3_000 });
    await clock.advance(10_000);
    // The confirmation, then one extension every ttl/3.
    expect(events.filter((e) => e.type === 'extended').length).toBe(11);
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(0);
    work.resolve();
    await done;
  });
});
