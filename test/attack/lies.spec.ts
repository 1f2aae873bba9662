import {
  type ConnectionChange,
  type LockBackend,
  LockBackendError,
  type LockEvent,
  LockLostError,
  LockService,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

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

/** Attacks on "lies": an error, event or message that says something false. */
describe('attack: lies', () => {
  it('isLocked() after close() says the service is closed, not that the backend is unknown', async () => {
    const clock = new ManualClock();
    const locks = new LockService({ backends: { default: () => new MemoryLockBackend({ clock }) }, clock });
    await locks.init();
    await locks.close();
    const error = await locks.isLocked('k').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockBackendError);
    expect((error as Error).message).toMatch(/shut down/);
  });

  it('health() after close() does not claim the backend "could not start"', async () => {
    const clock = new ManualClock();
    const locks = new LockService({ backends: { default: () => new MemoryLockBackend({ clock }) }, clock });
    await locks.init();
    await locks.close();
    const [health] = await locks.health();
    expect(health!.up).toBe(false);
    expect(health!.error?.message).not.toMatch(/could not start/);
  });

  it('work that finished under a held lock is not reported lost because the store blinked during the release', async () => {
    let backend!: Reporting;
    const { locks, clock, events } = memoryFixture({}, (inner) => (backend = new Reporting(inner)));
    await locks.init();
    const releasing = deferred();
    backend.release = async (lease, call) => {
      await releasing.promise;
      return backend.inner.release(lease, call);
    };
    const result = locks
      .using('k', async () => 'done', { onSuspended: 'abort' })
      .then(
        (v) => v,
        (e: unknown) => e,
      );
    await settle(clock);
    // The work has returned; its release is on the wire when the connection blinks.
    backend.report({ state: 'suspended', reason: 'blink' });
    backend.report({ state: 'reconnected' });
    releasing.resolve();
    const outcome = await result;
    const types = events.filter((e: LockEvent) => e.type === 'lost' || e.type === 'released').map((e) => e.type);
    expect({ outcome: outcome instanceof LockLostError ? 'LockLostError' : outcome, types }).toEqual({
      outcome: 'done',
      types: ['released'],
    });
  });

  it('a caller signal aborted while the service initialises cancels the wait', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const made = deferred<LockBackend>();
    const locks = new LockService({ backends: { default: () => made.promise }, clock });
    const holder = await new LockService({ backends: { default: memory }, clock }).acquire('k', { ttl: 60_000 });
    const controller = new AbortController();
    let outcome: unknown = 'pending';
    void locks.acquire('k', { waitTimeout: 30_000, signal: controller.signal }).then(
      (l) => (outcome = l),
      (e: unknown) => (outcome = e),
    );
    await settle(clock);
    controller.abort(new Error('caller gave up')); // during init
    made.resolve(memory);
    await clock.advance(100);
    const shortlyAfterAbort = outcome;
    await clock.advance(30_000);
    await holder.release();
    await locks.close();
    expect(shortlyAfterAbort).toMatchObject({ message: 'caller gave up' });
  });

  it('a caller signal aborted while the service initialises never hands the caller a lock', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const made = deferred<LockBackend>();
    const locks = new LockService({ backends: { default: () => made.promise }, clock });
    const controller = new AbortController();
    const pending = locks.acquire('k', { signal: controller.signal }).then(
      (l) => l,
      (e: unknown) => e,
    );
    await settle(clock);
    controller.abort(new Error('caller gave up'));
    made.resolve(memory);
    const outcome = await pending;
    const leaked = await memory.isLocked('k');
    const gotALock = typeof (outcome as { release?: unknown }).release === 'function';
    if (gotALock) await (outcome as { release(): Promise<void> }).release();
    await locks.close();
    expect({ gotALock, leaked }).toEqual({ gotALock: false, leaked: false });
  });
});
