import { LockUnavailableError } from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';

describe('waiting for a busy key', () => {
  it('with waitTimeout 0 tries once and reports how long the holder still has', async () => {
    const { locks, clock, events } = memoryFixture();
    await locks.acquire('k', { ttl: 5_000 });
    await clock.advance(1_000);
    const error = await locks.acquire('k').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(error).toMatchObject({ key: 'k', waitedMs: 0, retryAfterMs: 4_000 });
    expect((error as Error).message).toMatch(/waitTimeout is 0.*Set waitTimeout/);
    expect(events.at(-1)).toMatchObject({ type: 'failed', operation: 'acquire', keys: ['k'], waitedMs: 0 });
  });

  it('gives up after waitTimeout with the time it waited', async () => {
    const { locks, clock } = memoryFixture();
    await locks.acquire('k', { ttl: 60_000 });
    const waiting = locks.acquire('k', { waitTimeout: 2_000 }).catch((e: unknown) => e);
    await clock.advance(1_999);
    let settled = false;
    void waiting.then(() => (settled = true));
    await settle(clock);
    expect(settled).toBe(false);
    await clock.advance(1);
    const error = await waiting;
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(error).toMatchObject({ waitedMs: 2_000 });
    expect((error as Error).message).toMatch(/within the 2000 ms waitTimeout/);
  });

  it('gets the key when the holder expires during the wait', async () => {
    const { locks, clock } = memoryFixture();
    const holder = await locks.acquire('k', { ttl: 1_000 });
    const waiting = locks.acquire('k', { waitTimeout: 5_000 });
    await clock.advance(1_000);
    const lock = await waiting;
    expect(lock.fencingToken).toBeGreaterThan(holder.fencingToken);
    expect(holder.isHeld).toBe(false);
  });

  it('polls with capped exponential backoff when the store cannot notify', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (memory) => {
      backend = new BendableBackend(memory, { nativeWait: false });
      // A polling store's wait is a plain sleep: it must not see the release early.
      backend.waitForRelease = ({ timeoutMs }) => new Promise((resolve) => clock.setTimeout(resolve, timeoutMs));
      return backend;
    });
    await locks.acquire('k', { ttl: 60_000 });
    const waiting = locks.acquire('k', {
      waitTimeout: 10_000,
      retry: { delay: 100, factor: 2, maxDelay: 800, jitter: 0 },
    });
    const attemptsAt: number[] = [];
    const start = clock.now();
    backend.calls.length = 0;
    for (let t = 0; t < 3_000; t += 50) {
      const before = backend.calls.filter((c) => c === 'acquire').length;
      await clock.advance(50);
      const after = backend.calls.filter((c) => c === 'acquire').length;
      for (let i = before; i < after; i++) attemptsAt.push(clock.now() - start);
    }
    // Pauses of 100, 200, 400, 800, 800 … ms after the first attempt at 0.
    expect(attemptsAt.slice(0, 5)).toEqual([100, 300, 700, 1_500, 2_300]);
    void waiting.catch(() => undefined);
    await clock.advance(10_000);
  });

  it('stops waiting when the caller aborts, rejecting with the abort reason and withdrawing a queued claim', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (memory) => {
      backend = new BendableBackend(memory, { queued: true });
      backend.acquire = async (request) => {
        const outcome = await memory.acquire(request);
        return outcome.acquired ? outcome : { ...outcome, queued: request.keepPlace };
      };
      return backend;
    });
    await locks.acquire('k', { ttl: 60_000 });
    const controller = new AbortController();
    const waiting = locks.acquire('k', { waitTimeout: 30_000, signal: controller.signal }).catch((e: unknown) => e);
    await clock.advance(500);
    backend.calls.length = 0;
    const reason = new Error('user went away');
    controller.abort(reason);
    expect(await waiting).toBe(reason);
    expect(backend.calls).toContain('release');
  });

  it('asks first for the key the last round found busy, then the others in sorted order', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (memory) => (backend = new BendableBackend(memory)));
    const asked: string[] = [];
    const given: string[] = [];
    const acquire = backend.acquire;
    const release = backend.release;
    backend.acquire = (request) => (asked.push(request.key), acquire(request));
    backend.release = (lease, call) => (given.push(lease.key), release(lease, call));
    const holdB = await peer().acquire('b', { ttl: 1_000 });
    asked.length = 0;
    given.length = 0;
    const waiting = locks.acquire(['c', 'a', 'b'], { waitTimeout: 5_000 });
    await settle(clock);
    // Round one stops at 'b' and gives back 'a', which it took on the way.
    expect(asked).toEqual(['a', 'b']);
    expect(given).toEqual(['a']);
    await clock.advance(1_000);
    const lock = await waiting;
    // Every later round begins with 'b' (a round that finds it still busy touches nothing else); the last
    // one takes the rest in sorted order.
    expect(asked.slice(0, 2)).toEqual(['a', 'b']);
    expect(asked.slice(2, -2).every((key) => key === 'b')).toBe(true);
    expect(asked.slice(-3)).toEqual(['b', 'a', 'c']);
    expect(given).toEqual(['a']);
    expect(lock.keys).toEqual(['a', 'b', 'c']);
    expect(lock.fencingTokenFor('b')).toBeGreaterThan(holdB.fencingToken);
    await lock.release();
  });

  it('rejects at once for an already aborted signal, asking the store nothing', async () => {
    const { locks, memory } = memoryFixture();
    const controller = new AbortController();
    controller.abort(new Error('no'));
    await expect(locks.acquire('k', { signal: controller.signal })).rejects.toThrow('no');
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('wraps a store failure in LockBackendError with the cause, taking nothing', async () => {
    const failure = new Error('ECONNREFUSED 127.0.0.1:6390');
    const { locks, memory } = memoryFixture({}, (inner) => {
      const broken = new BendableBackend(inner);
      broken.interfere = (operation) => (operation === 'acquire' ? Promise.reject(failure) : undefined);
      return broken;
    });
    const error = await locks.acquire('k').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'LOCK_BACKEND', backend: 'default', cause: failure });
    expect((error as Error).message).toMatch(/failed to acquire a lock/);
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('tryAcquire never waits, whatever the defaults say', async () => {
    const { locks } = memoryFixture({ defaults: { waitTimeout: 60_000 } });
    await locks.acquire('k');
    const blocked = deferred<unknown>();
    void locks.tryAcquire('k').then(blocked.resolve);
    await expect(blocked.promise).resolves.toBeNull();
  });
});
