import { observeLocked } from '../../lib/decorators/observe-locked';
import {
  DEFAULT_SHUTDOWN_TIMEOUT,
  LockBackendError,
  LockContext,
  LockLostError,
  LockService,
  LockUnavailableError,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { of } from 'rxjs';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

describe('using()', () => {
  it('runs the work under the lock, returns its result and releases however it ends', async () => {
    const { locks, memory } = memoryFixture();
    expect(await locks.using('k', async (lock) => (expect(await memory.isLocked('k')).toBe(true), lock.key))).toBe('k');
    expect(await memory.isLocked('k')).toBe(false);
    await expect(locks.using('k', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await memory.isLocked('k')).toBe(false);
    await expect(
      locks.using('k', () => {
        throw new Error('sync boom');
      }),
    ).rejects.toThrow('sync boom');
    expect(await memory.isLocked('k')).toBe(false);
    expect(await locks.using('k', () => 7)).toBe(7);
  });

  describe('onLocked', () => {
    it("'throw' (the default) rejects with LockUnavailableError and never runs the work", async () => {
      const { locks } = memoryFixture();
      await locks.acquire('k');
      const work = jest.fn();
      await expect(locks.using('k', work)).rejects.toBeInstanceOf(LockUnavailableError);
      expect(work).not.toHaveBeenCalled();
    });

    it("'skip' resolves undefined without running the work", async () => {
      const { locks } = memoryFixture();
      await locks.acquire('k');
      const work = jest.fn();
      expect(await locks.using('k', work, { onLocked: 'skip' })).toBeUndefined();
      expect(work).not.toHaveBeenCalled();
    });

    it('a function supplies the result from the context', async () => {
      const { locks } = memoryFixture();
      await locks.acquire('k');
      const result = await locks.using('k', () => 'worked', {
        onLocked: ({ keys, error }) => `busy ${keys.join()} ${error.code}`,
      });
      expect(result).toBe('busy k LOCK_UNAVAILABLE');
    });

    it("module defaults.onLocked does not change using(), whose return type promises the work's result", async () => {
      const { locks } = memoryFixture({ defaults: { onLocked: 'skip' } });
      await locks.acquire('k');
      await expect(locks.using('k', () => 1)).rejects.toBeInstanceOf(LockUnavailableError);
    });

    it('does not turn store failures into skips', async () => {
      const { locks, memory } = memoryFixture();
      await memory.close();
      await expect(locks.using('k', () => 1, { onLocked: 'skip' })).rejects.toBeInstanceOf(LockBackendError);
    });
  });

  describe('onLost', () => {
    const loseMidWork = async (onLost: 'abort' | 'ignore' | (() => void)) => {
      const { locks, clock } = memoryFixture();
      const work = deferred<string>();
      let signal!: AbortSignal;
      const done = locks.using('k', (lock) => ((signal = lock.signal), work.promise), {
        ttl: 1_000,
        autoExtend: false,
        onLost,
      });
      await clock.advance(1_000);
      return { done, work, signal };
    };

    it("'abort' (the default) aborts the signal and rejects with LockLostError even if the work succeeds", async () => {
      const { done, work, signal } = await loseMidWork('abort');
      expect(signal.aborted).toBe(true);
      work.resolve('finished anyway');
      await expect(done).rejects.toBeInstanceOf(LockLostError);
    });

    it("'abort' passes on the work's own error when it failed", async () => {
      const { done, work } = await loseMidWork('abort');
      work.reject(new Error('own failure'));
      await expect(done).rejects.toThrow('own failure');
    });

    it("'ignore' aborts the signal but returns the result", async () => {
      const { done, work, signal } = await loseMidWork('ignore');
      expect(signal.aborted).toBe(true);
      work.resolve('kept');
      await expect(done).resolves.toBe('kept');
    });

    it('a function is called at the moment of loss with the lock and the error', async () => {
      const onLost = jest.fn();
      const { done, work } = await loseMidWork(onLost);
      expect(onLost).toHaveBeenCalledTimes(1);
      expect(onLost.mock.calls[0][0].error).toBeInstanceOf(LockLostError);
      expect(onLost.mock.calls[0][0].lock.key).toBe('k');
      work.resolve('kept');
      await expect(done).resolves.toBe('kept');
    });
  });

  describe('reentrancy', () => {
    it('lets the same call chain take a key it holds, sharing token and signal, without releasing early', async () => {
      const { locks, memory } = memoryFixture();
      await locks.using('k', async (outer) => {
        await locks.using('k', async (inner) => {
          expect(inner.fencingToken).toBe(outer.fencingToken);
          expect(inner.signal).toBe(outer.signal);
        });
        const again = await locks.acquire('k');
        await again.release();
        expect(await memory.isLocked('k')).toBe(true);
        expect(outer.isHeld).toBe(true);
      });
      expect(await memory.isLocked('k')).toBe(false);
    });

    it('releases at the end of the scope that took the key, even if a nested handle was never released', async () => {
      const { locks, memory } = memoryFixture();
      let forgotten!: { isHeld: boolean };
      await locks.using('k', async () => {
        forgotten = await locks.acquire('k');
      });
      expect(await memory.isLocked('k')).toBe(false);
      expect(forgotten.isHeld).toBe(false);
    });

    it('a signal listener that runs as the scope releases (a forgotten nested handle) finds it released', async () => {
      let backend!: BendableBackend;
      const { locks, events } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
      let extended: unknown;
      await locks.using('k', async (outer) => {
        const forgotten = await locks.acquire('k');
        forgotten.signal.addEventListener('abort', () => {
          void outer.release();
          extended = outer.extend().catch((error: unknown) => error);
        });
      });
      expect(await extended).toMatchObject({ code: 'LOCK_LOST' });
      expect(backend.calls.filter((call) => call === 'release')).toHaveLength(1);
      expect(backend.calls).not.toContain('extend');
      expect(events.filter((e) => e.type === 'released')).toHaveLength(1);
    });

    it('takes only the keys not yet held when a scope asks for more', async () => {
      const { locks, memory } = memoryFixture();
      await locks.using('a', async (outer) => {
        await locks.using(['a', 'b'], async (inner) => {
          expect(inner.fencingTokenFor('a')).toBe(outer.fencingToken);
          expect(await memory.isLocked('b')).toBe(true);
        });
        expect(await memory.isLocked('b')).toBe(false);
        expect(await memory.isLocked('a')).toBe(true);
      });
    });

    it('takes the keys around a held one in the middle, and gives back only those', async () => {
      const { locks, memory } = memoryFixture();
      await locks.using('b', async (outer) => {
        await locks.using(['c', 'b', 'a'], async (inner) => {
          expect(inner.keys).toEqual(['a', 'b', 'c']);
          expect(inner.fencingTokenFor('b')).toBe(outer.fencingToken);
          expect(await memory.isLocked('a')).toBe(true);
          expect(await memory.isLocked('c')).toBe(true);
        });
        expect(await memory.isLocked('a')).toBe(false);
        expect(await memory.isLocked('c')).toBe(false);
        expect(await memory.isLocked('b')).toBe(true);
      });
    });

    it('is scoped to the call chain: a parallel caller still waits', async () => {
      const { locks, clock } = memoryFixture();
      const outerWork = deferred();
      const order: string[] = [];
      const outer = locks.using('k', async () => {
        order.push('outer in');
        await outerWork.promise;
        order.push('outer out');
      });
      await settle(clock);
      const parallel = locks.using('k', async () => void order.push('parallel'), { waitTimeout: 10_000 });
      await settle(clock);
      outerWork.resolve();
      await Promise.all([outer, parallel]);
      expect(order).toEqual(['outer in', 'outer out', 'parallel']);
    });

    it('reentrant: false makes a nested take wait like anyone else', async () => {
      const { locks } = memoryFixture();
      await locks.using('k', async () => {
        await expect(locks.using('k', async () => 1, { reentrant: false })).rejects.toBeInstanceOf(
          LockUnavailableError,
        );
      });
    });

    it('LockContext.current() is the innermost lock of the chain, and undefined outside', async () => {
      const { locks } = memoryFixture();
      expect(LockContext.current()).toBeUndefined();
      await locks.using('outer', async (outer) => {
        expect(LockContext.current()).toBe(outer);
        await locks.using('inner', async (inner) => {
          await Promise.resolve();
          expect(LockContext.current()).toBe(inner);
        });
        expect(LockContext.current()).toBe(outer);
      });
    });
  });

  describe('several keys', () => {
    it('takes them sorted, all or none', async () => {
      const { locks, memory } = memoryFixture();
      const busy = await locks.acquire('b');
      await expect(locks.acquire(['c', 'b', 'a'])).rejects.toMatchObject({ key: 'b' });
      expect(await memory.isLocked('a')).toBe(false);
      expect(await memory.isLocked('c')).toBe(false);
      await busy.release();
      const all = await locks.acquire(['c', 'b', 'a', 'a']);
      expect(all.keys).toEqual(['a', 'b', 'c']);
    });

    it('lets callers asking for [a, b] and [b, a] both finish (no deadlock)', async () => {
      const { locks, clock } = memoryFixture();
      const runs: string[] = [];
      const job = (keys: string[], name: string) =>
        locks.using(
          keys,
          async () => {
            runs.push(`${name} in`);
            await clock.advance(10);
            runs.push(`${name} out`);
          },
          { waitTimeout: 60_000 },
        );
      const rounds = Array.from({ length: 20 }, (_, i) => job(i % 2 ? ['a', 'b'] : ['b', 'a'], `j${i}`));
      await Promise.all(rounds);
      expect(runs).toHaveLength(40);
      for (let i = 0; i < runs.length; i += 2) expect(runs[i + 1]).toBe(runs[i]!.replace(' in', ' out'));
    });

    it('a multi-key wait does not hold the free keys while it waits', async () => {
      const { locks, clock, memory } = memoryFixture();
      const busy = await locks.acquire('b', { ttl: 60_000 });
      const waiting = locks.acquire(['a', 'b'], { waitTimeout: 10_000 });
      await clock.advance(1_000);
      expect(await memory.isLocked('a')).toBe(false);
      await busy.release();
      const both = await waiting;
      expect(both.keys).toEqual(['a', 'b']);
    });
  });

  describe('events', () => {
    it('reports acquired, extended, released with wait and hold times', async () => {
      const { locks, clock, events } = memoryFixture();
      const holder = await locks.acquire('k', { ttl: 60_000 });
      const waiter = locks.acquire('k', { waitTimeout: 10_000 });
      await clock.advance(300);
      await holder.extend();
      await clock.advance(200);
      await holder.release();
      const second = await waiter;
      await clock.advance(50);
      await second.release();
      expect(events.map((e) => e.type)).toEqual(['acquired', 'extended', 'released', 'acquired', 'released']);
      expect(events[0]).toMatchObject({
        keys: ['k'],
        backend: 'default',
        waitedMs: 0,
        fencingTokens: [holder.fencingToken],
      });
      expect(events[1]).toMatchObject({ automatic: false, ttl: 60_000 });
      expect(events[2]).toMatchObject({ heldMs: 500 });
      expect(events[3]).toMatchObject({ waitedMs: 500 });
      expect(events[4]).toMatchObject({ heldMs: 50 });
    });
  });

  describe('shutdown', () => {
    it('close() stops waiters, tells holders to stop, then releases what is still held and refuses new locks', async () => {
      const { locks, clock, memory } = memoryFixture();
      const held = await locks.acquire('a');
      const extended = await locks.acquire('b', { ttl: 60_000, autoExtend: true });
      const other = locks.acquire('a', { waitTimeout: 60_000 }).catch((e: unknown) => e);
      await clock.advance(100);
      const closing = locks.close();
      expect(await other).toBeInstanceOf(LockBackendError);
      // Nobody released them: they stay held (and extended) through the grace period, their signals aborted.
      expect(held.signal.aborted).toBe(true);
      expect(held.isHeld).toBe(true);
      await clock.advance(DEFAULT_SHUTDOWN_TIMEOUT - 1);
      expect(await memory.isLocked('b')).toBe(true);
      expect(extended.isHeld).toBe(true);
      await clock.advance(1);
      await closing;
      expect(held.isHeld).toBe(false);
      expect(held.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
      await expect(locks.acquire('c')).rejects.toThrow(/shut down/);
      expect(await memory.isLocked('a')).toBe(false);
      expect(await memory.isLocked('b')).toBe(false);
      expect(clock.pendingTimers).toBe(0);
    });

    it('close() closes the backends it made from factories and leaves instances passed in open', async () => {
      const clock = new ManualClock();
      const passedIn = new MemoryLockBackend({ clock });
      let made!: MemoryLockBackend;
      const locks = new LockService({
        backends: { default: passedIn, owned: () => (made = new MemoryLockBackend({ clock })) },
        clock,
      });
      const lock = await locks.acquire('k', { backend: 'owned' });
      const closing = locks.close();
      await lock.release();
      await closing;
      expect(await passedIn.isLocked('k')).toBe(false);
      await expect(made.isLocked('k')).rejects.toThrow(/closed/);
    });

    it('releaseAll() frees held locks but leaves the service usable', async () => {
      const { locks, memory } = memoryFixture();
      await locks.acquire('a');
      await locks.acquire(['b', 'c']);
      await locks.releaseAll();
      expect(await memory.isLocked('a')).toBe(false);
      expect(await memory.isLocked('c')).toBe(false);
      const again = await locks.acquire('a');
      expect(again.isHeld).toBe(true);
    });
  });
});

describe('observeLocked (the Observable form behind @Locked)', () => {
  it('gives back a lock granted after the subscriber already left', async () => {
    let backend!: BendableBackend;
    const { locks, clock, memory } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const granting = deferred();
    backend.acquire = async (request) => {
      await granting.promise;
      return backend.inner.acquire(request);
    };
    const options = locks.resolveOptions(undefined, 'test');
    const subscription = observeLocked(locks, locks.normaliseKeys('k'), () => of(1), options, []).subscribe();
    await settle(clock);
    subscription.unsubscribe();
    granting.resolve();
    await settle(clock);
    expect(await memory.isLocked('k')).toBe(false);
  });
});
