import { LockService, ManualClock, MemoryLockBackend } from '../../lib';
import { BendableBackend, settle } from '../support/memory-fixture';

/** The memory backend's line: first come, first served, one wake-up per release, no barging, no ghosts. */
describe('MemoryLockBackend fairness', () => {
  const setup = () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const counted = new BendableBackend(memory);
    const apps = [0, 1, 2, 3].map(() => new LockService({ backends: { default: counted }, clock }));
    return { clock, memory, counted, apps };
  };
  const wait = { waitTimeout: 60_000, ttl: 60_000, retry: { delay: 30_000, maxDelay: 30_000 } };

  it('grants a busy key to its waiters in the order they came', async () => {
    const { clock, apps } = setup();
    const holder = await apps[0]!.acquire('k', { ttl: 60_000 });
    const order: number[] = [];
    const waiters = [3, 1, 2].map((i) =>
      apps[i]!.acquire('k', wait).then(async (lock) => {
        order.push(i);
        await settle(clock);
        await lock.release();
      }),
    );
    await settle(clock);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([3, 1, 2]);
  });

  it('does not let the releaser, or a one-shot try, take the key past the line', async () => {
    const { clock, apps } = setup();
    const holder = await apps[0]!.acquire('k', { ttl: 60_000 });
    const waiting = apps[1]!.acquire('k', wait);
    await settle(clock);
    await holder.release();
    expect(await apps[0]!.tryAcquire('k')).toBeNull();
    expect(await apps[2]!.tryAcquire('k')).toBeNull();
    const next = await waiting;
    expect(next.isHeld).toBe(true);
  });

  it('wakes only the first in line on release, not every waiter', async () => {
    const { clock, counted, apps } = setup();
    const holder = await apps[0]!.acquire('k', { ttl: 60_000 });
    const work = { current: Promise.resolve() };
    let gate!: () => void;
    work.current = new Promise<void>((resolve) => (gate = resolve));
    const waiters = Array.from({ length: 12 }, (_, i) => apps[i % 4]!.using('k', () => work.current, wait));
    await settle(clock);
    counted.calls.length = 0;
    await holder.release();
    await settle(clock);
    // One release, one attempt: the head's. (Waking everyone would make all 12 try.)
    expect(counted.calls.filter((c) => c === 'acquire')).toHaveLength(1);
    gate();
    await Promise.all(waiters);
    // Each later handoff also cost one attempt: 11 more, plus the first.
    expect(counted.calls.filter((c) => c === 'acquire')).toHaveLength(12);
  });

  it('passes over a place whose owner left without a word, after a short grace', async () => {
    const { clock, memory, apps } = setup();
    const holder = await apps[0]!.acquire('k', { ttl: 60_000 });
    // A waiter that joined the line and vanished (its withdrawal failed, say).
    const ghost = await memory.acquire({
      key: 'k',
      owner: 'a'.repeat(32),
      ttl: 1_000,
      keepPlace: true,
      onLost: () => undefined,
      signal: new AbortController().signal,
    });
    expect(ghost).toMatchObject({ acquired: false, queued: true });
    const waiting = apps[1]!.acquire('k', wait);
    let got = false;
    void waiting.then(() => (got = true));
    await settle(clock);
    await holder.release();
    await settle(clock);
    expect(got).toBe(false);
    await clock.advance(10);
    await settle(clock);
    expect(got).toBe(true);
  });

  it('withdraws a place when its owner releases it, waking the next in line', async () => {
    const { clock, memory, apps } = setup();
    const holder = await apps[0]!.acquire('k', { ttl: 60_000 });
    const claim = { key: 'k', owner: 'b'.repeat(32) };
    await memory.acquire({
      ...claim,
      ttl: 1_000,
      keepPlace: true,
      onLost: () => undefined,
      signal: new AbortController().signal,
    });
    const waiting = apps[1]!.acquire('k', wait);
    await settle(clock);
    expect(await memory.release(claim)).toBe(false);
    await holder.release();
    const lock = await waiting;
    expect(lock.isHeld).toBe(true);
    expect(clock.now() - lock.acquiredAt).toBe(0);
  });
});
