import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  type ConnectionChange,
  DEFAULT_OPERATION_TIMEOUT,
  type LockBackend,
  LockBackendError,
  type LockEvent,
  LockService,
  LockUnavailableError,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend, deferred, memoryFixture, settle } from '../support/memory-fixture';
import { StrictQueueBackend } from '../support/strict-queue-backend';

/** Regression tests for ways the core could give two holders, leak, hang or crash. Each failed before its fix. */
describe('safety', () => {
  it('fire-and-forget work does not borrow a lease that is being released: it takes the key itself', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const releaseGate = deferred();
    const trigger = deferred();
    let late: Promise<unknown> | undefined;
    // The release of the outer lock is slow, as a store's round trip is.
    backend.interfere = (operation) => (operation === 'release' ? (releaseGate.promise as Promise<never>) : undefined);
    const outer = locks.using('k', async () => {
      // Started under the lock, never awaited: it runs after the scope's work has finished.
      late = trigger.promise.then(() => locks.using('k', async () => 'ran under a dying lease'));
    });
    await settle(clock);
    trigger.resolve();
    await expect(late).rejects.toBeInstanceOf(LockUnavailableError);
    backend.interfere = () => undefined;
    releaseGate.resolve();
    await outer.catch(() => undefined);
  });

  it('reentrancy is scoped to one service and store: another service on another store really takes the key', async () => {
    const a = memoryFixture();
    const b = memoryFixture();
    await a.locks.using('k', async () => {
      await b.locks.using('k', async () => {
        expect(await b.memory.isLocked('k')).toBe(true);
      });
    });
    expect(await b.memory.isLocked('k')).toBe(false);
  });

  it('shutdown cancels an acquisition in flight and gives back a grant that lands afterwards', async () => {
    let backend!: BendableBackend;
    const { locks, clock, memory } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const granting = deferred();
    backend.acquire = async (request) => {
      await granting.promise;
      return backend.inner.acquire(request);
    };
    const pending = locks.acquire('k').catch((e: unknown) => e);
    await settle(clock);
    const closing = locks.close();
    expect(await pending).toBeInstanceOf(LockBackendError);
    granting.resolve();
    await closing;
    await settle(clock);
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('a hung store cannot hold a caller past waitTimeout + operationTimeout, nor shutdown', async () => {
    let backend!: BendableBackend;
    const { locks, clock } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const held = await locks.acquire('k');
    backend.interfere = () => new Promise<never>(() => undefined);
    let outcome: unknown;
    void locks.acquire('k', { waitTimeout: 100 }).then(
      (lock) => (outcome = lock),
      (error: unknown) => (outcome = error),
    );
    await clock.advance(100 + DEFAULT_OPERATION_TIMEOUT);
    expect(outcome).toBeInstanceOf(LockBackendError);
    expect((outcome as Error).message).toMatch(/did not answer within 5000 ms/);
    let closed = false;
    void locks.close().then(() => (closed = true));
    void held.release().catch(() => undefined);
    await clock.advance(DEFAULT_OPERATION_TIMEOUT * 3);
    expect(closed).toBe(true);
  });

  it('one store error during a wait with time left is retried, not reported', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    const holder = await peer().acquire('k');
    let failures = 1;
    backend.interfere = (operation) =>
      operation === 'acquire' && failures-- > 0 ? Promise.reject(new Error('a node blinked')) : undefined;
    const waiting = locks.acquire('k', { waitTimeout: 5_000 });
    await clock.advance(200);
    await holder.release();
    await clock.advance(200);
    const lock = await waiting;
    expect(lock.isHeld).toBe(true);
  });

  it('a store that never answers a wait is a LockBackendError with its cause; one that answered busy is unavailable', async () => {
    let backend!: BendableBackend;
    const { locks, clock, peer } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
    backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('down')) : undefined);
    const down = locks.acquire('k', { waitTimeout: 1_000 }).catch((e: unknown) => e);
    await clock.advance(1_500);
    expect(await down).toMatchObject({ code: 'LOCK_BACKEND', cause: new Error('down') });

    backend.interfere = () => undefined;
    await peer().acquire('k', { ttl: 60_000 });
    const busy = locks.acquire('k', { waitTimeout: 1_000 }).catch((e: unknown) => e);
    await clock.advance(1_500);
    expect(await busy).toBeInstanceOf(LockUnavailableError);
  });

  it('a multi-key acquisition waiting on one key keeps no place on another (a strict queue would make it a hold)', async () => {
    const store = new StrictQueueBackend();
    const make = (): LockService => new LockService({ backends: { default: store } });
    const [s1, p, q, r] = [make(), make(), make(), make()];
    const holdsB = await p.acquire('b');
    const waiting = s1.acquire(['a', 'b'], { waitTimeout: 10_000, retry: { delay: 5, maxDelay: 20 } });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // s1 gave `a` back while it waits for `b`, so another owner can take it.
    const holdsA = await q.acquire('a');
    await holdsB.release();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // s1 now waits for `a`: its place on `b` must be gone, or it holds `b` while waiting.
    const b = await r.tryAcquire('b');
    expect(b).not.toBeNull();
    await b!.release();
    await holdsA.release();
    const both = await waiting;
    expect(both.keys).toEqual(['a', 'b']);
    await both.release();
    expect(store.holder('a')).toBeUndefined();
    expect(store.holder('b')).toBeUndefined();
  });

  it('lock.extend(ttl) with autoExtend moves the watchdog to the new ttl', async () => {
    const { locks, clock, memory } = memoryFixture();
    const lock = await locks.acquire('k', { ttl: 30_000, autoExtend: true });
    await lock.extend(1_000);
    await clock.advance(1_500);
    expect(lock.isHeld).toBe(true);
    expect(await memory.isLocked('k')).toBe(true);
    await clock.advance(10_000);
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  it('a pending acquisition holds the process open (a plain script must not exit mid-wait)', async () => {
    const memory = new MemoryLockBackend();
    const locks = new LockService({ backends: { default: memory } });
    const holder = await locks.acquire('k');
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const waiting = locks.acquire('k', { waitTimeout: 2_000, retry: { delay: 1_000, maxDelay: 1_000 } });
    await new Promise((resolve) => setImmediate(resolve));
    expect(timers()).toBeGreaterThan(before);
    await holder.release();
    await (await waiting).release();
    await new Promise((resolve) => setImmediate(resolve));
    // The count is process-wide: in one Jest process, a timer an earlier test file left running (ioredis's
    // disconnect timer, say) may end meanwhile. A timer of ours left behind would still put it above `before`.
    expect(timers()).toBeLessThanOrEqual(before);
  });

  it('does not grow the heap with calls that pass one long-lived signal (no AbortSignal.any on Node 20)', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const locks = new LockService({ backends: { default: new MemoryLockBackend() } });
    const signal = new AbortController().signal;
    const cycles = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await locks.using('k', () => i, { signal });
    };
    await cycles(20_000);
    gc();
    const before = process.memoryUsage().heapUsed;
    await cycles(200_000);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // AbortSignal.any kept ≈ 80 bytes per call: 16 MB here.
    expect(grown).toBeLessThan(2 * 1024 * 1024);
  }, 60_000);

  describe('connection state', () => {
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
    const setup = (sessionBound: boolean) => {
      let backend!: Reporting;
      const fixture = memoryFixture({}, (inner) => {
        backend = new Reporting(inner, sessionBound ? { expiring: false, sessionBound: true } : {});
        return backend as LockBackend;
      });
      return { ...fixture, backend };
    };

    it("'wait' keeps a session-bound lock while the store vouches for it, and resumes on reconnection", async () => {
      const { locks, clock, backend, events } = setup(true);
      const lock = await locks.acquire('k');
      backend.report({ state: 'suspended', reason: 'disconnected', validForMs: 1_000 });
      await clock.advance(900);
      expect(lock.isHeld).toBe(true);
      backend.report({ state: 'reconnected' });
      await clock.advance(60_000);
      expect(lock.isHeld).toBe(true);
      expect(
        events.filter((e: LockEvent) => e.type === 'connection').map((e) => (e as { state: string }).state),
      ).toEqual(['suspended', 'reconnected']);
      backend.report({ state: 'suspended', reason: 'disconnected', validForMs: 1_000 });
      await clock.advance(1_000);
      expect(lock.isHeld).toBe(false);
      expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
    });

    it("'abort' loses it at once; 'lost' loses every lock; a session-bound store that cannot vouch loses it", async () => {
      const { locks, backend } = setup(true);
      const abort = await locks.acquire('a', { onSuspended: 'abort' });
      const wait = await locks.acquire('b');
      backend.report({ state: 'suspended', reason: 'disconnected', validForMs: 5_000 });
      expect(abort.isHeld).toBe(false);
      expect(wait.isHeld).toBe(true);
      backend.report({ state: 'lost', reason: 'session expired' });
      expect(wait.isHeld).toBe(false);
      const unvouched = await locks.acquire('c');
      backend.report({ state: 'suspended', reason: 'disconnected' });
      expect(unvouched.isHeld).toBe(false);
    });
  });

  describe('messages', () => {
    it('a store error during a wait reports the real wait in its failed event', async () => {
      let backend!: BendableBackend;
      const { locks, clock, events } = memoryFixture({}, (inner) => (backend = new BendableBackend(inner)));
      backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('down')) : undefined);
      const failing = locks.acquire('k', { waitTimeout: 700 }).catch(() => undefined);
      await clock.advance(1_000);
      await failing;
      const failed = events.find((e) => e.type === 'failed');
      expect(failed).toMatchObject({ operation: 'acquire' });
      expect((failed as { waitedMs: number }).waitedMs).toBeGreaterThanOrEqual(700);
    });

    it('isLocked agrees with tryAcquire on a key promised to a waiter, and the refusal says so', async () => {
      const { locks, clock, peer } = memoryFixture();
      const holder = await locks.acquire('k');
      const waiter = peer().acquire('k', { waitTimeout: 10_000 });
      await settle(clock);
      await holder.release();
      const newcomer = peer();
      expect(await newcomer.isLocked('k')).toBe(true);
      await expect(newcomer.acquire('k')).rejects.toThrow(/promised to an owner waiting ahead in line/);
      await (await waiter).release();
    });

    it('the timeout message quotes the waitTimeout option, not the time measured', async () => {
      const { locks, clock, peer } = memoryFixture();
      await peer().acquire('k', { ttl: 60_000 });
      const failing = locks.acquire('k', { waitTimeout: 2_000 }).catch((e: unknown) => e);
      await clock.advance(2_100);
      expect(((await failing) as Error).message).toMatch(/within the 2000 ms waitTimeout/);
    });

    it('refuses keys that are not well-formed UTF-16 (they collide once encoded as UTF-8)', async () => {
      const { locks } = memoryFixture();
      await expect(locks.acquire('a\uD800b')).rejects.toThrow(/lone surrogate/);
      await expect(locks.acquire('\uDC00')).rejects.toThrow(/lone surrogate/);
      const whole = await locks.acquire('🔒');
      await whole.release();
    });

    it('memory fencing tokens stay within safe integers, so Number(token) is exact', async () => {
      const { locks } = memoryFixture();
      const lock = await locks.acquire('k');
      expect(lock.fencingToken).toBeLessThanOrEqual(BigInt(Number.MAX_SAFE_INTEGER));
      expect(BigInt(Number(lock.fencingToken))).toBe(lock.fencingToken);
      await lock.release();
    });
  });
});
