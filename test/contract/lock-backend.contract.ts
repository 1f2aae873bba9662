import { randomUUID } from 'node:crypto';
import type { LockBackend, LockClock } from '../../lib';
import { LockBackendClosedError, LockService, type LockServiceConfig } from '../../lib';

/** What a backend's test file provides to run the contract against a real store. */
export interface ContractHarness {
  readonly backend: LockBackend;
  /** The clock the LockService uses: a ManualClock for the memory backend, the system clock for real stores. */
  readonly clock: LockClock;
  /** A ttl the store honours reliably and that elapse() can outlast quickly, in ms. */
  readonly ttl: number;
  /** Lets `ms` pass: advances a manual clock, or really waits. */
  elapse(ms: number): Promise<void>;
  /** A second backend instance on the same store, as a restarted app would open: fencing must survive it. */
  reopen(): Promise<LockBackend>;
  /** Ends the holder's session (session-bound backends only): the store must free the key by itself. */
  loseSession?(backend: LockBackend): Promise<void>;
  close(): Promise<void>;
}

/** A store call nobody cancels. */
const call = { signal: new AbortController().signal };

const EDGE_KEYS: ReadonlyArray<readonly [string, string]> = [
  ['unicode', '锁:🔒:ключ:ü'],
  ['1 000 characters', `k${'x'.repeat(999)}`],
  ['a relative path', '../../etc/passwd'],
  ['an absolute path', '/locks/a/./b//c/'],
  ['SQL', `'; DROP TABLE locks; --`],
  ['Lua', `]] redis.call('FLUSHALL') --[[`],
  ['glob and format characters', '*?[a-z] %s %d {0} $1'],
  ['white space', ' \t\n '],
];

/**
 * The behaviour every backend must show, run unchanged by each backend's test file:
 * `describeLockBackendContract('memory', async () => harness)`.
 */
export function describeLockBackendContract(name: string, makeHarness: () => Promise<ContractHarness>): void {
  describe(`LockBackend contract: ${name}`, () => {
    let harness: ContractHarness;
    const services: LockService[] = [];

    beforeAll(async () => {
      harness = await makeHarness();
    });
    afterAll(async () => {
      await harness?.close();
    });
    afterEach(async () => {
      // Services share the harness's backend: closing them would close it, so only their locks are released.
      await Promise.all(services.splice(0).map((s) => s.releaseAll()));
    });

    /** A LockService over the harness backend with a fresh key prefix, so tests never see each other's keys. */
    const service = (backend: LockBackend = harness.backend, prefix = `contract:${randomUUID()}:`): LockService => {
      const config: LockServiceConfig = { backends: { default: backend }, clock: harness.clock, keyPrefix: prefix };
      const created = new LockService(config);
      services.push(created);
      return created;
    };

    it('lets only one owner hold a key', async () => {
      const locks = service();
      const first = await locks.acquire('k', { ttl: harness.ttl * 10 });
      expect(await locks.tryAcquire('k')).toBeNull();
      await expect(locks.acquire('k')).rejects.toMatchObject({ code: 'LOCK_UNAVAILABLE', key: 'k' });
      expect(await locks.isLocked('k')).toBe(true);
      await first.release();
      expect(await locks.isLocked('k')).toBe(false);
      const second = await locks.tryAcquire('k');
      expect(second).not.toBeNull();
      await second!.release();
    });

    it('keeps different keys independent, including keys that prefix one another', async () => {
      const locks = service();
      const a = await locks.acquire('a');
      const ab = await locks.acquire('a/b');
      const upper = await locks.acquire('A');
      expect([a.isHeld, ab.isHeld, upper.isHeld]).toEqual([true, true, true]);
      await Promise.all([a.release(), ab.release(), upper.release()]);
    });

    it('releases and extends only for the owner (compare-and-delete)', async () => {
      const prefix = `contract:${randomUUID()}:`;
      const locks = service(harness.backend, prefix);
      const lock = await locks.acquire('k', { ttl: harness.ttl * 10 });
      const stored = { key: `${prefix}k`, owner: 'f'.repeat(32) };
      expect(await harness.backend.release(stored, call)).toBe(false);
      expect(await harness.backend.extend(stored, harness.ttl * 10, call)).toBe(false);
      expect(await locks.isLocked('k')).toBe(true);
      expect(lock.isHeld).toBe(true);
      await lock.release();
      expect(await harness.backend.release(stored, call)).toBe(false);
    });

    it('tells the owner when a release finds the lock already gone', async () => {
      const locks = service();
      const lock = await locks.acquire('k', { ttl: harness.ttl * 10 });
      await lock.release();
      await lock.release();
      expect(lock.isHeld).toBe(false);
      expect(await locks.isLocked('k')).toBe(false);
    });

    it('does not free a key that another owner took after ours expired', async () => {
      const locks = service();
      if (!harness.backend.capabilities.expiring) return expectSessionBound(harness);
      const stale = await locks.acquire('k', { ttl: harness.ttl, autoExtend: false });
      await harness.elapse(harness.ttl * 2);
      const fresh = await locks.acquire('k', { ttl: harness.ttl * 20 });
      await stale.release();
      expect(await locks.isLocked('k')).toBe(true);
      expect(fresh.isHeld).toBe(true);
      expect(stale.signal.aborted).toBe(true);
      await fresh.release();
    });

    it("frees a dead holder's key by itself (ttl expiry or session end)", async () => {
      const locks = service();
      if (harness.backend.capabilities.expiring) {
        const dead = await locks.acquire('k', { ttl: harness.ttl, autoExtend: false });
        await harness.elapse(harness.ttl * 2);
        expect(dead.signal.aborted).toBe(true);
        expect(dead.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
        expect(await locks.isLocked('k')).toBe(false);
        const next = await locks.tryAcquire('k');
        expect(next).not.toBeNull();
        expect(next!.fencingToken).toBeGreaterThan(dead.fencingToken);
        await next!.release();
        return;
      }
      expect(harness.loseSession).toBeDefined();
      const other = await harness.reopen();
      const dying = service(other);
      const dead = await dying.acquire('k');
      await harness.loseSession!(other);
      expect(dead.signal.aborted).toBe(true);
      const next = await service(harness.backend).tryAcquire('k');
      expect(next).not.toBeNull();
      await next!.release();
    });

    it('keeps a lock past its ttl while it is extended', async () => {
      if (!harness.backend.capabilities.expiring) return expectSessionBound(harness);
      const locks = service();
      const lock = await locks.acquire('k', { ttl: harness.ttl, autoExtend: false });
      for (let i = 0; i < 3; i++) {
        await harness.elapse(Math.floor(harness.ttl * 0.6));
        await lock.extend();
      }
      expect(lock.isHeld).toBe(true);
      expect(await locks.isLocked('k')).toBe(true);
      await lock.release();
    });

    it('hands out strictly increasing fencing tokens per key, across release, expiry, owners and a restart', async () => {
      const prefix = `contract:${randomUUID()}:`;
      const tokens: bigint[] = [];
      const take = async (locks: LockService, ttl = harness.ttl * 10): Promise<void> => {
        const lock = await locks.acquire('k', { ttl, autoExtend: false });
        tokens.push(lock.fencingToken);
        await lock.release();
      };
      const a = service(harness.backend, prefix);
      const b = service(harness.backend, prefix);
      await take(a);
      await take(b);
      await take(a);
      if (harness.backend.capabilities.expiring) {
        const expiring = await a.acquire('k', { ttl: harness.ttl, autoExtend: false });
        tokens.push(expiring.fencingToken);
        await harness.elapse(harness.ttl * 2);
        await take(b);
      }
      await harness.elapse(1);
      const restarted = service(await harness.reopen(), prefix);
      await take(restarted);
      await take(restarted);
      expect(tokens.every((t) => typeof t === 'bigint')).toBe(true);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    });

    it('wakes a waiter when the key is released', async () => {
      const locks = service();
      const holder = await locks.acquire('k', { ttl: harness.ttl * 100 });
      const native = harness.backend.capabilities.nativeWait;
      // With notifications the waiter must not depend on its (long) polling pause to notice the release.
      const pause = native ? harness.ttl * 50 : Math.max(5, Math.floor(harness.ttl / 10));
      let woke = false;
      const waiter = locks
        .acquire('k', { waitTimeout: harness.ttl * 100, retry: { delay: pause, maxDelay: pause, jitter: 0 } })
        .then((lock) => {
          woke = true;
          return lock;
        });
      await harness.elapse(1);
      expect(woke).toBe(false);
      await holder.release();
      for (let i = 0; i < 20 && !woke; i++) await harness.elapse(native ? 1 : pause);
      expect(woke).toBe(true);
      const lock = await waiter;
      expect(lock.fencingToken).toBeGreaterThan(holder.fencingToken);
      await lock.release();
    });

    it('never lets two of 50 concurrent contenders hold a key at once', async () => {
      const prefix = `contract:${randomUUID()}:`;
      const instances = Array.from({ length: 5 }, () => service(harness.backend, prefix));
      const rounds = 8;
      let inside = 0;
      let overlaps = 0;
      const grants: bigint[] = [];
      const intervals: Array<[number, number]> = [];
      let tick = 0;
      const contender = async (locks: LockService): Promise<void> => {
        for (let round = 0; round < rounds; round++) {
          await locks.using(
            'hot',
            async (lock) => {
              if (++inside !== 1) overlaps++;
              const start = tick++;
              grants.push(lock.fencingToken);
              await new Promise<void>((resolve) => setImmediate(resolve));
              if (!(await locks.isLocked('hot'))) overlaps++;
              intervals.push([start, tick++]);
              inside--;
            },
            { ttl: harness.ttl * 100, waitTimeout: 600_000, retry: { delay: 5, maxDelay: 50 } },
          );
        }
      };
      await Promise.all(Array.from({ length: 50 }, (_, i) => contender(instances[i % instances.length]!)));
      expect(overlaps).toBe(0);
      expect(grants).toHaveLength(50 * rounds);
      for (let i = 1; i < grants.length; i++) expect(grants[i]!).toBeGreaterThan(grants[i - 1]!);
      const sorted = [...intervals].sort((x, y) => x[0] - y[0]);
      for (let i = 1; i < sorted.length; i++) expect(sorted[i]![0]).toBeGreaterThan(sorted[i - 1]![1]);
    }, 120_000);

    it('starts idempotently (init at every bootstrap) and reports its health', async () => {
      const locks = service();
      await locks.init();
      await locks.init();
      const signal = new AbortController().signal;
      await harness.backend.init?.(signal);
      await harness.backend.init?.(signal);
      // As a plain script calls it: no signal.
      await harness.backend.init?.();
      expect(await locks.health()).toEqual([{ backend: 'default', kind: harness.backend.kind, up: true }]);
      const lock = await locks.acquire('k');
      await lock.release();
    });

    it('leaves nothing behind when a wait is cancelled: no hold, no place in line', async () => {
      const prefix = `contract:${randomUUID()}:`;
      const holder = await service(harness.backend, prefix).acquire('k', { ttl: harness.ttl * 100 });
      const controller = new AbortController();
      const waiting = service(harness.backend, prefix)
        .acquire('k', { waitTimeout: harness.ttl * 100, signal: controller.signal })
        .catch((e: unknown) => e);
      await harness.elapse(Math.max(1, Math.floor(harness.ttl / 10)));
      controller.abort(new Error('caller gave up'));
      expect(await waiting).toEqual(new Error('caller gave up'));
      await holder.release();
      await harness.elapse(1);
      const other = service(harness.backend, prefix);
      expect(await other.isLocked('k')).toBe(false);
      const next = await other.tryAcquire('k');
      expect(next).not.toBeNull();
      await next!.release();
    });

    it('a multi-key acquisition gives back what it took and keeps no place on a key it is not waiting for', async () => {
      const prefix = `contract:${randomUUID()}:`;
      const [s1, p, q, r] = [1, 2, 3, 4].map(() => service(harness.backend, prefix));
      const holdsB = await p!.acquire('b', { ttl: harness.ttl * 100 });
      const pause = Math.max(2, Math.floor(harness.ttl / 20));
      const waiting = s1!.acquire(['a', 'b'], {
        ttl: harness.ttl * 100,
        waitTimeout: harness.ttl * 200,
        retry: { delay: pause, maxDelay: pause, jitter: 0 },
      });
      await harness.elapse(pause * 2);
      // No holding while waiting: `a` was given back.
      const holdsA = await q!.tryAcquire('a', { ttl: harness.ttl * 100 });
      expect(holdsA).not.toBeNull();
      await holdsB.release();
      for (let i = 0; i < 4; i++) await harness.elapse(pause);
      // s1 now waits for `a`; a place it kept on `b` must not have turned into a hold.
      const b = await r!.tryAcquire('b');
      expect(b).not.toBeNull();
      await b!.release();
      await holdsA!.release();
      const both = await waiting;
      expect([...both.keys]).toEqual(['a', 'b']);
      await both.release();
      expect(await r!.isLocked('a')).toBe(false);
      expect(await r!.isLocked('b')).toBe(false);
    });

    describe.each(EDGE_KEYS)('a key with %s', (_label, key) => {
      it('locks, excludes and releases it without touching other keys', async () => {
        const locks = service();
        const neighbour = await locks.acquire(`${key}x`);
        const lock = await locks.acquire(key);
        expect(await locks.tryAcquire(key)).toBeNull();
        expect(await locks.isLocked(key)).toBe(true);
        await lock.release();
        expect(await locks.isLocked(key)).toBe(false);
        expect(await locks.isLocked(`${key}x`)).toBe(true);
        await neighbour.release();
      });
    });

    describe('primitives, as the core relies on them', () => {
      const lease = () => ({ key: `contract:${randomUUID()}:k`, owner: randomUUID().replace(/-/g, '') });
      const request = (ref: { key: string; owner: string }, keepPlace = false) => ({
        ...ref,
        ttl: harness.ttl * 10,
        keepPlace,
        onLost: () => undefined,
        signal: call.signal,
      });

      it('acquire grants a positive bigint token, then reports the key busy to others', async () => {
        const mine = lease();
        const granted = await harness.backend.acquire(request(mine));
        expect(granted.acquired).toBe(true);
        if (!granted.acquired) return;
        expect(typeof granted.fencingToken).toBe('bigint');
        expect(granted.fencingToken).toBeGreaterThan(0n);
        const theirs = { key: mine.key, owner: 'e'.repeat(32) };
        const busy = await harness.backend.acquire(request(theirs));
        expect(busy.acquired).toBe(false);
        if (!busy.acquired && busy.retryAfterMs !== undefined) {
          expect(busy.retryAfterMs).toBeGreaterThan(0);
          expect(busy.retryAfterMs).toBeLessThanOrEqual(harness.ttl * 10);
        }
        expect(await harness.backend.release(mine, call)).toBe(true);
      });

      it('keeps a place in line for a waiter exactly when capabilities.queued says so', async () => {
        const mine = lease();
        await harness.backend.acquire(request(mine));
        const waiter = { key: mine.key, owner: 'd'.repeat(32) };
        const busy = await harness.backend.acquire(request(waiter, true));
        expect(busy.acquired).toBe(false);
        expect(Boolean(!busy.acquired && busy.queued)).toBe(harness.backend.capabilities.queued);
        const tryOnce = await harness.backend.acquire(request({ key: mine.key, owner: 'c'.repeat(32) }, false));
        expect(!tryOnce.acquired && tryOnce.queued).toBeFalsy();
        // Withdrawing a claim is a release that finds no lock: false, and the holder keeps the key.
        expect(await harness.backend.release(waiter, call)).toBe(false);
        expect(await harness.backend.isLocked(mine.key, call)).toBe(true);
        expect(await harness.backend.release(mine, call)).toBe(true);
      });

      it('release and extend of a key nobody holds answer false', async () => {
        const nobody = lease();
        expect(await harness.backend.release(nobody, call)).toBe(false);
        expect(await harness.backend.extend(nobody, harness.ttl, call)).toBe(false);
        expect(await harness.backend.isLocked(nobody.key, call)).toBe(false);
      });

      it('waitForRelease resolves at once for a free key, on abort, and by its timeout', async () => {
        const free = lease();
        const never = new AbortController().signal;
        let done = false;
        const waitFree = harness.backend
          .waitForRelease({ ...free, timeoutMs: harness.ttl * 100, signal: never })
          .then(() => (done = true));
        // "At once" on a real store is a round trip or two (subscribe, then look), far below the 100 × ttl timeout.
        for (let i = 0; i < 50 && !done; i++) await harness.elapse(1);
        expect(done).toBe(true);
        await waitFree;

        const held = lease();
        await harness.backend.acquire(request(held));
        const controller = new AbortController();
        let aborted = false;
        const waitAbort = harness.backend
          .waitForRelease({
            key: held.key,
            owner: 'b'.repeat(32),
            timeoutMs: harness.ttl * 100,
            signal: controller.signal,
          })
          .then(() => (aborted = true));
        await harness.elapse(1);
        expect(aborted).toBe(false);
        controller.abort();
        await harness.elapse(1);
        expect(aborted).toBe(true);
        await waitAbort;

        let timedOut = false;
        const timeoutMs = Math.max(10, Math.floor(harness.ttl / 4));
        const waitTimeout = harness.backend
          .waitForRelease({ key: held.key, owner: 'b'.repeat(32), timeoutMs, signal: never })
          .then(() => (timedOut = true));
        await harness.elapse(1);
        expect(timedOut).toBe(false);
        for (let i = 0; i < 20 && !timedOut; i++) await harness.elapse(timeoutMs);
        expect(timedOut).toBe(true);
        await waitTimeout;
        expect(await harness.backend.release(held, call)).toBe(true);
      });
    });

    it('ends a caller waiting through a backend that is closed under it, at once, with LockBackendClosedError', async () => {
      // The backend is the caller's to close (an instance it passed in): the service does not own it.
      const spare = await harness.reopen();
      const prefix = `contract:${randomUUID()}:`;
      await service(spare, prefix).acquire('k', { ttl: harness.ttl * 10 });
      let outcome: unknown;
      const waiting = service(spare, prefix)
        .acquire('k', { waitTimeout: 10_000 })
        .then(
          (lock) => (outcome = lock),
          (error: unknown) => (outcome = error),
        );
      await harness.elapse(20);
      await spare.close();
      // A closed backend never answers again: retrying it until waitTimeout would end in a false "busy".
      for (let i = 0; i < 40 && outcome === undefined; i++) await harness.elapse(50);
      await waiting;
      expect(outcome).toBeInstanceOf(LockBackendClosedError);
    });

    it('closes idempotently', async () => {
      const spare = await harness.reopen();
      await spare.close();
      await spare.close();
    });
  });
}

/** A session-bound backend covers expiry through its session instead; the harness must be able to end one. */
function expectSessionBound(harness: ContractHarness): void {
  expect(harness.backend.capabilities.sessionBound).toBe(true);
  expect(harness.loseSession).toBeDefined();
}
