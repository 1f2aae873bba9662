import { LockLostError, LockService, ManualClock, MemoryLockBackend } from '../../lib';
import { validityMs } from '../../lib/core/backoff';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

describe('holding a lock', () => {
  it('extends a using() lock while the work runs (watchdog every ttl/3)', async () => {
    const { locks, clock, events, memory } = memoryFixture();
    const work = deferred();
    const done = locks.using('k', () => work.promise, { ttl: 3_000 });
    await clock.advance(10_000);
    expect(await memory.isLocked('k')).toBe(true);
    const extended = events.filter((e) => e.type === 'extended');
    expect(extended.length).toBe(10);
    expect(extended.every((e) => e.type === 'extended' && e.automatic && e.ttl === 3_000)).toBe(true);
    work.resolve();
    await done;
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('does not extend an acquire() lock unless asked: it is lost when its validity runs out', async () => {
    const { locks, clock, events } = memoryFixture();
    const lock = await locks.acquire('k', { ttl: 1_000 });
    expect(lock.expiresAt).toBe(lock.acquiredAt + validityMs(1_000));
    await clock.advance(validityMs(1_000) - 1);
    expect(lock.isHeld).toBe(true);
    await clock.advance(1);
    expect(lock.isHeld).toBe(false);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toBeInstanceOf(LockLostError);
    expect((lock.signal.reason as Error).message).toMatch(/ttl ran out without an extension/);
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
    await expect(lock.extend()).rejects.toBeInstanceOf(LockLostError);
  });

  it('judges isHeld by the clock, so a late validity timer cannot make a lapsed lock look held', async () => {
    const clock = new ManualClock();
    // A clock whose timers never fire: the worst case of a blocked event loop.
    const stalled = { now: () => clock.now(), setTimeout: () => ({}), clearTimeout: () => undefined };
    const locks = new LockService({ backends: { default: new MemoryLockBackend({ clock }) }, clock: stalled });
    const lock = await locks.acquire('k', { ttl: 1_000 });
    await clock.advance(validityMs(1_000) - 1);
    expect(lock.isHeld).toBe(true);
    await clock.advance(1);
    expect(lock.signal.aborted).toBe(false);
    expect(lock.isHeld).toBe(false);
  });

  it('autoExtend on acquire() keeps the lock until release', async () => {
    const { locks, clock } = memoryFixture();
    const lock = await locks.acquire('k', { ttl: 900, autoExtend: true });
    await clock.advance(5_000);
    expect(lock.isHeld).toBe(true);
    await lock.release();
    expect(lock.isHeld).toBe(false);
  });

  it('treats the lock as lost when extensions stop answering, before the store could expire it', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
    const work = deferred();
    let signal: AbortSignal | undefined;
    const done = locks.using('k', (lock) => ((signal = lock.signal), work.promise), { ttl: 3_000 });
    await settle(clock);
    backend.interfere = (operation) => (operation === 'extend' ? new Promise<never>(() => undefined) : undefined);
    await clock.advance(validityMs(3_000) - 1);
    expect(signal!.aborted).toBe(false);
    await clock.advance(1);
    expect(signal!.aborted).toBe(true);
    expect((signal!.reason as Error).message).toMatch(/extending it failed/);
    work.resolve();
    await expect(done).rejects.toBeInstanceOf(LockLostError);
  });

  it('retries a failed extension at the next tick and keeps the lock if one succeeds', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
    const lock = await locks.acquire('k', { ttl: 3_000, autoExtend: true });
    let failures = 1;
    backend.interfere = (operation) =>
      operation === 'extend' && failures-- > 0 ? Promise.reject(new Error('timeout')) : undefined;
    await clock.advance(10_000);
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  it('refuses to extend a released lock, saying so', async () => {
    const { locks } = memoryFixture();
    const lock = await locks.acquire('k');
    await lock.release();
    await expect(lock.extend()).rejects.toThrow(/has been released, so it cannot be extended/);
  });

  it('reports a minHold release that finds the lock already gone as a loss', async () => {
    let backend!: BendableBackend;
    const { locks, events } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
    const lock = await locks.acquire('k', { ttl: 1_000, minHold: 900 });
    // The store no longer has it for us (an operator deleted it, a failover lost it).
    backend.extend = async () => false;
    await lock.release();
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
    expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
  });

  it('lock.extend(ttl) restarts the ttl from now', async () => {
    const { locks, clock, memory } = memoryFixture();
    const lock = await locks.acquire('k', { ttl: 1_000 });
    await clock.advance(800);
    await lock.extend(5_000);
    expect(lock.expiresAt).toBe(clock.now() + validityMs(5_000));
    await clock.advance(4_000);
    expect(lock.isHeld).toBe(true);
    expect(await memory.isLocked('k')).toBe(true);
  });

  it('minHold keeps the key after early release until minHold has passed', async () => {
    const { locks, clock, peer } = memoryFixture();
    const other = peer();
    await locks.using('job', async () => undefined, { ttl: 10_000, minHold: 5_000 });
    expect(await other.tryAcquire('job')).toBeNull();
    await clock.advance(4_999);
    expect(await other.tryAcquire('job')).toBeNull();
    await clock.advance(1);
    const next = await other.tryAcquire('job');
    expect(next).not.toBeNull();
  });

  it('minHold releases at once when the work outlasted it', async () => {
    const { locks, clock, memory } = memoryFixture();
    await locks.using('job', () => clock.advance(6_000), { ttl: 10_000, minHold: 5_000 });
    expect(await memory.isLocked('job')).toBe(false);
  });

  it('minHold on a session-bound store puts the release off until minHold', async () => {
    let backend!: BendableBackend;
    const { locks, clock, memory } = memoryFixture(
      {},
      (inner) => (backend = new BendableBackend(inner, { expiring: false, sessionBound: true })),
    );
    await locks.using('job', async () => undefined, { ttl: 10_000, minHold: 2_000 });
    expect(backend.calls).not.toContain('release');
    expect(await memory.isLocked('job')).toBe(true);
    await clock.advance(2_000);
    expect(backend.calls).toContain('release');
    expect(await memory.isLocked('job')).toBe(false);
  });

  it('reports a release that finds the lock expired as a loss', async () => {
    const { locks, clock, events } = memoryFixture();
    const lock = await locks.acquire('k', { ttl: 1_000 });
    const stale = lock.signal;
    await clock.advance(2_000);
    expect(stale.aborted).toBe(true);
    await lock.release();
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'released')).toHaveLength(0);
  });

  it('exposes every key, token and the backend on the handle; release is idempotent', async () => {
    const { locks, memory } = memoryFixture();
    const lock = await locks.acquire(['b', 'a']);
    expect(lock.keys).toEqual(['a', 'b']);
    expect(lock.key).toBe('a');
    expect(lock.backend).toBe('default');
    expect(lock.fencingTokenFor('b')).toBeGreaterThan(lock.fencingTokenFor('a'));
    expect(lock.fencingToken).toBe(lock.fencingTokenFor('a'));
    expect(() => lock.fencingTokenFor('c')).toThrow(/does not hold "c"/);
    await Promise.all([lock.release(), lock.release()]);
    await lock.release();
    expect(await memory.isLocked('a')).toBe(false);
    expect(await memory.isLocked('b')).toBe(false);
  });

  it('rejects lock.release() with LockBackendError when the store fails, and reports it', async () => {
    let backend!: BendableBackend;
    const { locks, events } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
    const lock = await locks.acquire('k');
    backend.interfere = (operation) => (operation === 'release' ? Promise.reject(new Error('down')) : undefined);
    await expect(lock.release()).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    expect(events.at(-1)).toMatchObject({ type: 'failed', operation: 'release' });
  });

  it('releases every key of a multi-key lock, last first, even when one fails; reports the failure once', async () => {
    let backend!: BendableBackend;
    const { locks, memory, events } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const lock = await locks.acquire(['a', 'b', 'c']);
    const asked: string[] = [];
    const release = backend.release;
    backend.release = (lease, call) => {
      asked.push(lease.key);
      return lease.key === 'b' ? Promise.reject(new Error('down')) : release(lease, call);
    };
    await expect(lock.release()).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    expect(asked).toEqual(['c', 'b', 'a']);
    expect(await memory.isLocked('a')).toBe(false);
    expect(await memory.isLocked('c')).toBe(false);
    expect(events.filter((e) => e.type === 'failed')).toMatchObject([{ operation: 'release', keys: ['a', 'b', 'c'] }]);
    expect(events.some((e) => e.type === 'released')).toBe(false);
  });
});

describe('losses only the store can see (a session ended, a connection dropped)', () => {
  const sessionStore = () => {
    let backend!: BendableBackend;
    const reports: Array<(reason: string) => void> = [];
    const fixture = memoryFixture({}, (memory) => {
      backend = new BendableBackend(memory, { expiring: false, sessionBound: true });
      backend.acquire = async (request) => {
        reports.push(request.onLost);
        return memory.acquire(request);
      };
      return backend;
    });
    return { ...fixture, backend, reports };
  };

  it('mark the lock lost with the store’s reason', async () => {
    const { locks, reports, events } = sessionStore();
    const lock = await locks.acquire('k');
    expect(lock.expiresAt).toBe(Infinity);
    reports[0]!('ZooKeeper session 0x1f expired');
    expect(lock.isHeld).toBe(false);
    expect((lock.signal.reason as Error).message).toMatch(/"k" was lost: ZooKeeper session 0x1f expired/);
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
  });

  it('reported while the grant is still on its way, mark the lock lost as soon as it arrives', async () => {
    let backend!: BendableBackend;
    const { locks } = memoryFixture({}, (memory) => {
      backend = new BendableBackend(memory, { expiring: false, sessionBound: true });
      backend.acquire = async (request) => {
        const outcome = await memory.acquire(request);
        request.onLost('connection reset');
        return outcome;
      };
      return backend;
    });
    const lock = await locks.acquire('k');
    expect(lock.isHeld).toBe(false);
    expect((lock.signal.reason as Error).message).toMatch(/connection reset/);
  });
});

describe('places in line kept by a queueing store', () => {
  it('are all withdrawn when a multi-key wait gives up, even after the busy key changed', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (memory) => {
      backend = new BendableBackend(memory, { queued: true });
      backend.acquire = async (request) => {
        const outcome = await memory.acquire(request);
        return outcome.acquired ? outcome : { ...outcome, queued: request.keepPlace };
      };
      return backend;
    });
    const other = peer();
    const holdB = await other.acquire('b', { ttl: 60_000 });
    const waiting = locks
      .acquire(['a', 'b'], { waitTimeout: 5_000, retry: { delay: 100, jitter: 0 } })
      .catch((error: unknown) => error);
    await clock.advance(50);
    // Now 'a' is busy too, and 'b' is free: the waiter's next round stops at 'a'.
    await holdB.release();
    const holdA = await other.acquire('a', { ttl: 60_000 });
    const released: string[] = [];
    const release = backend.release;
    backend.release = (lease, call) => (released.push(lease.key), release(lease, call));
    await clock.advance(5_000);
    expect(await waiting).toMatchObject({ code: 'LOCK_UNAVAILABLE', key: 'a' });
    expect(released.sort()).toEqual(['a', 'b']);
    await holdA.release();
  });
});
