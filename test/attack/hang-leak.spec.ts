import {
  DEFAULT_OPERATION_TIMEOUT,
  type LockBackend,
  LockBackendError,
  LockService,
  MAX_DURATION_MS,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';
import { StrictQueueBackend } from '../support/strict-queue-backend';

/** Attacks on hangs (a call or shutdown that does not return) and leaks (keys, timers, backends left behind). */
describe('attack: hangs and leaks', () => {
  it('aborting the caller signal ends a wait at once even if the store ignores the wait signal', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const holder = await peer().acquire('k', { ttl: 30_000 });
    // A backend that does not honour WaitForRelease.signal (the seam says the core must cope).
    backend.waitForRelease = () => new Promise<void>(() => undefined);
    const controller = new AbortController();
    let outcome: unknown = 'pending';
    void locks
      .acquire('k', {
        waitTimeout: 60_000,
        retry: { delay: 20_000, maxDelay: 20_000, jitter: 0 },
        signal: controller.signal,
      })
      .then(
        (l) => (outcome = l),
        (e: unknown) => (outcome = e),
      );
    await clock.advance(10);
    controller.abort(new Error('caller gave up'));
    await clock.advance(100);
    const atAbortPlus100ms = outcome;
    await clock.advance(30_000); // let the bounded wait run out so nothing keeps the process alive
    await holder.release();
    expect(atAbortPlus100ms).toMatchObject({ message: 'caller gave up' });
  });

  it('close() is not held up by a wait on a store that ignores the wait signal', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const holder = await peer().acquire('k', { ttl: 30_000 });
    backend.waitForRelease = () => new Promise<void>(() => undefined);
    const waiting = locks
      .acquire('k', { waitTimeout: 60_000, retry: { delay: 20_000, maxDelay: 20_000, jitter: 0 } })
      .catch((e: unknown) => e);
    await clock.advance(10);
    let closed = false;
    void locks.close().then(() => (closed = true));
    await clock.advance(100);
    const closedAfter100ms = closed;
    await clock.advance(30_000);
    const closedAfter30s = closed;
    expect(await waiting).toBeInstanceOf(LockBackendError);
    await holder.release();
    expect({ closedAfter100ms, closedAfter30s }).toEqual({ closedAfter100ms: true, closedAfter30s: true });
  });

  it('close() during init (async backend factory) closes the backend the factory makes', async () => {
    const clock = new ManualClock();
    const made = deferred<LockBackend>();
    let closedCalls = 0;
    const memory = new MemoryLockBackend({ clock });
    const backend: LockBackend = Object.assign(Object.create(memory) as MemoryLockBackend, {
      close: async () => {
        closedCalls++;
        await memory.close();
      },
    });
    const locks = new LockService({ backends: { default: () => made.promise }, clock });
    const init = locks.init().catch((e: unknown) => e);
    await settle(clock);
    await locks.close();
    made.resolve(backend);
    await init;
    await settle(clock);
    // The service is closed: what its factory made must be closed too (it owns it, nobody else can).
    expect(closedCalls).toBe(1);
  });

  it('minHold on a session-bound store leaves no timer and no held key behind after close()', async () => {
    const clock = new ManualClock();
    const strict = new StrictQueueBackend();
    const locks = new LockService({ backends: { default: strict }, clock });
    await locks.using('k', async () => 'quick', { minHold: 5_000 });
    const pendingBeforeClose = clock.pendingTimers;
    await locks.close();
    expect({
      pendingBeforeClose,
      timersAfterClose: clock.pendingTimers,
      heldAfterClose: strict.holder('k') !== undefined,
    }).toEqual({
      pendingBeforeClose: 1,
      timersAfterClose: 0,
      heldAfterClose: false,
    });
  });

  it('operationTimeout at its documented maximum does not turn a wait into a 1 ms polling loop', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.name);
    process.on('warning', onWarning);
    const memory = new MemoryLockBackend();
    let acquires = 0;
    const counting: LockBackend = Object.assign(Object.create(memory) as MemoryLockBackend, {
      acquire: (request: Parameters<LockBackend['acquire']>[0]) => {
        acquires++;
        return memory.acquire(request);
      },
    });
    const holderService = new LockService({ backends: { default: memory } });
    const locks = new LockService({ backends: { default: counting }, operationTimeout: MAX_DURATION_MS });
    const holder = await holderService.acquire('k', { ttl: 60_000 });
    const waiting = locks.acquire('k', { waitTimeout: 300 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 250));
    const attempts = acquires;
    await waiting;
    await holder.release();
    process.off('warning', onWarning);
    await Promise.all([locks.close(), holderService.close()]);
    // The backoff starts at 50 ms and the memory store wakes waiters on release: a handful of attempts at most.
    expect({ attempts, overflow: warnings.includes('TimeoutOverflowWarning') }).toEqual({
      attempts: expect.any(Number),
      overflow: false,
    });
    expect(attempts).toBeLessThan(10);
  });

  it('a hung release cannot hang close() past operationTimeout', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture(
      { shutdownTimeout: 1_000 },
      (inner) => (backend = new BendableBackend(inner)),
    );
    const lock = await locks.acquire('k');
    backend.interfere = (op) => (op === 'release' ? new Promise<never>(() => undefined) : undefined);
    let closed = false;
    void locks.close().then(() => (closed = true));
    await clock.advance(1_000 + DEFAULT_OPERATION_TIMEOUT);
    expect(closed).toBe(true);
    expect(lock.isHeld).toBe(false);
  });

  it('close() twice concurrently, with work and waiters, returns once everything settled', async () => {
    const { locks, clock, peer } = memoryFixture({ shutdownTimeout: 500 });
    const holder = await peer().acquire('w');
    const gate = deferred();
    const working = locks.using('k', async (lock) => {
      await gate.promise;
      return lock.signal.aborted;
    });
    const waiting = locks.acquire('w', { waitTimeout: 10_000 }).catch((e: unknown) => e);
    await settle(clock);
    const [c1, c2] = [locks.close(), locks.close()];
    expect(c1).toBe(c2);
    await settle(clock);
    expect(await waiting).toBeInstanceOf(LockBackendError);
    gate.resolve();
    expect(await working).toBe(true);
    await c1;
    await holder.release();
    expect(clock.pendingTimers).toBe(0);
  });
});
