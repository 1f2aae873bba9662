import { getEventListeners } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LockService, MemoryLockBackend } from '../../lib';
import { memoryFixture } from '../support/memory-fixture';

describe('attack: heap and listeners', () => {
  it('nested multi-key calls that read lock.signal leave no listener behind on the outer lock signal', async () => {
    const locks = new LockService({ backends: { default: new MemoryLockBackend() } });
    let outerSignal!: AbortSignal;
    await locks.using('outer', async (outer) => {
      outerSignal = outer.signal;
      for (let i = 0; i < 1_000; i++) {
        // A reentrant call on the outer key plus one more: its handle combines two leases' signals.
        await locks.using(['outer', `inner:${i}`], (lock) => lock.signal.aborted);
      }
      expect(getEventListeners(outerSignal, 'abort').length).toBeLessThan(5);
    });
    await locks.close();
  });

  it('refused and cancelled calls with one long-lived signal leave no listener and no timer', async () => {
    const { locks, clock, peer } = memoryFixture();
    const holder = await peer().acquire('busy');
    const signal = new AbortController().signal;
    for (let i = 0; i < 2_000; i++) {
      await locks.tryAcquire('busy', { signal });
      await locks.acquire('busy', { signal }).catch(() => undefined);
      await locks.using('free', () => i, { signal });
    }
    expect(getEventListeners(signal, 'abort').length).toBe(0);
    await holder.release();
    expect(clock.pendingTimers).toBe(0);
  });

  it('100 000 refused tryAcquire with one signal keep the heap flat', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const memory = new MemoryLockBackend();
    const locks = new LockService({ backends: { default: memory } });
    const other = new LockService({ backends: { default: memory } });
    const holder = await other.acquire('busy', { ttl: 600_000 });
    const signal = new AbortController().signal;
    const cycles = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await locks.tryAcquire('busy', { signal });
    };
    await cycles(10_000);
    gc();
    const before = process.memoryUsage().heapUsed;
    await cycles(100_000);
    gc();
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(2 * 1024 * 1024);
    await holder.release();
    await Promise.all([locks.close(), other.close()]);
  }, 60_000);
});
