import { AsyncLocalStorage } from 'node:async_hooks';
import { LockContext, LockService, MemoryLockBackend } from '../../lib';
import { openServiceCount } from '../../lib/core/context-storage';

// The library's async contexts cost every promise of the process while enabled (Node 20/22): they are dropped
// once no LockService is open, and come back by themselves when one is used again.
describe('async contexts of the library', () => {
  afterEach(() => jest.restoreAllMocks());

  it('are disabled when the last open LockService closes, not before', async () => {
    const disable = jest.spyOn(AsyncLocalStorage.prototype, 'disable');
    const before = openServiceCount();
    expect(before).toBe(0); // first test of the file: nothing open yet
    const first = new LockService({ backends: { default: new MemoryLockBackend() } });
    const second = new LockService({ backends: { default: new MemoryLockBackend() } });
    expect(openServiceCount()).toBe(before + 2);
    await first.using('k', () => undefined);

    await first.close();
    expect(disable).not.toHaveBeenCalled();
    await first.close(); // closing twice counts once
    expect(openServiceCount()).toBe(before + 1);

    await second.close();
    expect(openServiceCount()).toBe(before);
    // Both of them: the locks held by a call chain, and a handler's request path.
    expect(disable).toHaveBeenCalledTimes(2);
  });

  it('work again for a service opened after they were dropped: the current lock and re-entry', async () => {
    const first = new LockService({ backends: { default: new MemoryLockBackend() } });
    await first.close();
    const locks = new LockService({ backends: { default: new MemoryLockBackend() } });
    const seen = await locks.using('k', async (outer) => {
      await Promise.resolve();
      const current = LockContext.current();
      // Re-entering the same key in the same call chain borrows the lease instead of waiting for itself.
      const inner = await locks.using('k', (lock) => lock.fencingToken, { waitTimeout: 50 });
      return { same: current === outer, inner, outer: outer.fencingToken };
    });
    expect(seen).toEqual({ same: true, inner: seen.outer, outer: seen.outer });
    await locks.close();
  });
});
