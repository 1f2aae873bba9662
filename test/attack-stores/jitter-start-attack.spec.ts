import { randomUUID } from 'node:crypto';
import {
  type AcquireOutcome,
  type AcquireRequest,
  type LeaseRef,
  LockBackendClosedError,
  LockService,
  LockUnavailableError,
  ManualClock,
  MemoryLockBackend,
  type MemoryLockBackendOptions,
  type StoreCall,
  type WaitForRelease,
} from '../../lib';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DataSource } from 'typeorm';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { SharedStart } from '../../lib/core/shared-start';
import { untilAborted } from '../../lib/core/until-aborted';
import { RedisProcesses } from '../redis/support/redis-processes';
import { settle } from '../support/memory-fixture';
import { cleanUpAfterTests, Opened, sleep, timed, unhandledRejections } from './redis-attack-support';

/**
 * Attacks on two changes: the random pause after a multi-key round that gave keys back (lib/core/acquisition.ts),
 * and the shared start of init() (lib/core/shared-start.ts, used by the Redis and TypeORM backends).
 */

const SLOW_POLL = { delay: 60_000, maxDelay: 60_000, jitter: 0 };
const TTL = 60_000;

/**
 * A memory store whose acquire of key `slowKey` (no keyPrefix) waits for `delay` the first `slowTimes` times,
 * and whose grants are provisional, like a key a release hands straight to a waiter.
 */
class SlowRoundBackend extends MemoryLockBackend {
  slowKey = 'b';
  slowTimes = 1;
  waits = 0;
  releases = 0;

  constructor(
    private readonly delay: (request: AcquireRequest) => Promise<void>,
    options: MemoryLockBackendOptions = {},
  ) {
    super(options);
  }

  override async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    if (this.slowTimes > 0 && request.key === this.slowKey) {
      this.slowTimes--;
      await this.delay(request);
    }
    const outcome = await super.acquire(request);
    // Grants as a store that hands keys straight to waiters makes them (provisional): the pause is only taken
    // after a round that gave such a key back.
    return outcome.acquired ? { ...outcome, provisionalForMs: request.ttl } : outcome;
  }

  override release(lease: LeaseRef, call: StoreCall): Promise<boolean> {
    this.releases++;
    return super.release(lease, call);
  }

  override waitForRelease(wait: WaitForRelease): Promise<void> {
    this.waits++;
    return super.waitForRelease(wait);
  }
}

/** Records how `promise` ended, without awaiting it. */
function track<T>(promise: Promise<T>): { readonly state: () => 'pending' | 'resolved' | 'rejected'; error?: unknown } {
  const out: { state: () => 'pending' | 'resolved' | 'rejected'; error?: unknown } = { state: () => state };
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  promise.then(
    () => void (state = 'resolved'),
    (error: unknown) => {
      state = 'rejected';
      out.error = error;
    },
  );
  return out;
}

/** Runs the ManualClock's pending work until the multi-key round gave `a` back (the round is over). */
async function untilRoundOver(clock: ManualClock, backend: SlowRoundBackend): Promise<void> {
  for (let i = 0; i < 50 && backend.releases === 0; i++) await settle(clock);
  expect(backend.releases).toBe(1);
  await settle(clock);
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

describe('attack: the random pause after a multi-key round that gave keys back (ManualClock, memory store)', () => {
  let random: jest.SpyInstance | undefined;
  afterEach(() => {
    random?.mockRestore();
    random = undefined;
  });

  /** A service on a memory store whose first acquire of `…:b` moves the ManualClock on by `roundMs`. */
  function setup(roundMs: number) {
    const clock = new ManualClock();
    const backend: SlowRoundBackend = new SlowRoundBackend(() => clock.advance(roundMs), { clock });
    const locks = new LockService({ backends: { default: backend }, clock, shutdownTimeout: 0 });
    const holderService = new LockService({ backends: { default: backend }, clock, shutdownTimeout: 0 });
    return { clock, backend, locks, holderService };
  }

  it('the pause happens (round of 400 ms), and the acquisition still fails by its waitTimeout, not after it', async () => {
    random = jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const { clock, backend, locks, holderService } = setup(400);
    backend.slowTimes = 0;
    const holder = await holderService.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    const startedAt = clock.now();
    const result = track(locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 1_000, retry: SLOW_POLL }));
    await untilRoundOver(clock, backend);
    // The round took 400 ms (the slow acquire of b): it gave a back and now pauses before waiting for b.
    expect(clock.now() - startedAt).toBe(400);
    expect(result.state()).toBe('pending');
    // Up to the deadline, and 1 ms past it: a waitTimeout of 1000 must be over by now.
    await clock.advance(startedAt + 1_001 - clock.now());
    const at1001ms = result.state();
    // Let it finish in any case, to report how late it was.
    for (let i = 0; i < 20 && result.state() === 'pending'; i++) await clock.advance(100);
    expect({ at1001ms, endedAfterMs: clock.now() - startedAt }).toEqual({ at1001ms: 'rejected', endedAfterMs: 1_001 });
    expect(result.error).toBeInstanceOf(LockUnavailableError);
    expect(await holderService.isLocked('a')).toBe(false);
    await holder.release();
    await Promise.all([locks.close(), holderService.close()]);
  });

  it('a slow round (400 ms, a hung store) pauses 100 ms at most, not twice its length', async () => {
    random = jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const { clock, backend, locks, holderService } = setup(400);
    backend.slowTimes = 0;
    const holder = await holderService.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    const taking = locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 10_000, retry: SLOW_POLL });
    const result = track(taking);
    await untilRoundOver(clock, backend);
    expect(backend.waits).toBe(0); // in the pause
    await clock.advance(100);
    await settle(clock);
    // Waiting for b now: the pause was capped (uncapped it would run 799 ms).
    expect(backend.waits).toBe(1);
    await holder.release();
    await settle(clock);
    expect(result.state()).toBe('resolved');
    await (await taking).release();
    await Promise.all([locks.close(), holderService.close()]);
  });

  it('the caller signal ends the pause at once, and the key given back stays free', async () => {
    random = jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const { clock, backend, locks, holderService } = setup(400);
    backend.slowTimes = 0;
    const holder = await holderService.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    const controller = new AbortController();
    const result = track(
      locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 10_000, retry: SLOW_POLL, signal: controller.signal }),
    );
    await untilRoundOver(clock, backend);
    expect(backend.waits).toBe(0); // in the pause
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await settle(clock);
    expect(result.state()).toBe('rejected');
    expect(result.error).toBe(reason);
    expect(backend.waits).toBe(0);
    expect(await holderService.isLocked('a')).toBe(false);
    expect(locks.heldLocks()).toEqual([]);
    // The released holder hands b on to nobody: the acquisition's place in b's line is gone too.
    await holder.release();
    await settle(clock);
    expect(await holderService.isLocked('b')).toBe(false);
    await Promise.all([locks.close(), holderService.close()]);
  });

  it('close() ends the pause at once', async () => {
    random = jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const { clock, backend, locks, holderService } = setup(400);
    backend.slowTimes = 0;
    const holder = await holderService.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    const result = track(locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 10_000, retry: SLOW_POLL }));
    await untilRoundOver(clock, backend);
    expect(backend.waits).toBe(0);
    const closing = track(locks.close());
    await settle(clock);
    expect(result.state()).toBe('rejected');
    expect(closing.state()).toBe('resolved');
    expect(await holderService.isLocked('a')).toBe(false);
    await holder.release();
    await settle(clock);
    expect(await holderService.isLocked('b')).toBe(false);
    await holderService.close();
  });

  it('a round that takes no time on the ManualClock: the multi-key acquisition gets the keys when b is released, without advancing the clock', async () => {
    const { clock, backend, locks, holderService } = setup(0);
    backend.slowTimes = 0;
    const holder = await holderService.acquire('b', { ttl: TTL });
    const startedAt = clock.now();
    const taking = locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 1_000, retry: SLOW_POLL });
    const result = track(taking);
    await settle(clock);
    expect(backend.waits).toBe(1);
    await holder.release();
    await settle(clock);
    expect(result.state()).toBe('resolved');
    expect(clock.now()).toBe(startedAt);
    await (await taking).release();
    await Promise.all([locks.close(), holderService.close()]);
  });
});

describe('attack: the random pause under fake timers and on the system clock', () => {
  afterEach(() => {
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  it('modern fake timers (Date faked): a multi-key acquisition that gave keys back completes on release without advancing timers', async () => {
    jest.useFakeTimers();
    const backend = new MemoryLockBackend();
    const locks = new LockService({ backends: { default: backend }, shutdownTimeout: 0 });
    const holder = await locks.acquire('b', { ttl: TTL });
    let done = false;
    const taking = locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 5_000, retry: SLOW_POLL }).then((lock) => {
      done = true;
      return lock;
    });
    await Promise.resolve();
    await holder.release();
    for (let i = 0; i < 20 && !done; i++) await Promise.resolve();
    await jest.advanceTimersByTimeAsync(0);
    expect(done).toBe(true);
    await (await taking).release();
    jest.useRealTimers();
    await locks.close();
  });

  it('legacy fake timers (Date real): after a round that gave a handed key back, the pause runs on the fake timers; advancing them completes the acquisition', async () => {
    // The pause is a timer of the lock clock like the library's others (validity, backoff): with timers faked
    // and Date real, a round that took real time pauses on a fake timer. Taken only after a handed key went
    // back (one Redis node, a multi-key lock), so a plain store is not concerned (see the test above).
    jest.useFakeTimers({ legacyFakeTimers: true });
    jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const backend = new SlowRoundBackend(() => {
      const until = Date.now() + 3;
      while (Date.now() < until) {
        // a store call that takes real time, as a network round trip does
      }
      return Promise.resolve();
    }, {});
    backend.slowTimes = 0;
    const locks = new LockService({ backends: { default: backend }, shutdownTimeout: 0 });
    const holder = await locks.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    let done = false;
    const taking = locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 5_000, retry: SLOW_POLL }).then((lock) => {
      done = true;
      return lock;
    });
    taking.catch(() => undefined);
    // Real turns of the event loop (setImmediate is not faked by legacy timers), no fake time advanced.
    await flush();
    const waitsBeforeRelease = backend.waits;
    await holder.release();
    await flush();
    const doneWithoutAdvancing = done;
    jest.runOnlyPendingTimers();
    await flush();
    const doneAfterAdvancing = done;
    jest.useRealTimers();
    expect({ waitsBeforeRelease, doneWithoutAdvancing, doneAfterAdvancing }).toEqual({
      waitsBeforeRelease: 0,
      doneWithoutAdvancing: false,
      doneAfterAdvancing: true,
    });
    await (await taking).release();
    expect(await backend.isLocked('a', { signal: new AbortController().signal })).toBe(false);
    await locks.close();
  });

  it('system clock: a slow first round (300 ms) with waitTimeout 500 fails by ~500 ms, not 500 + the pause', async () => {
    jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const backend = new SlowRoundBackend(() => sleep(300), {});
    backend.slowTimes = 0;
    const locks = new LockService({ backends: { default: backend }, shutdownTimeout: 0 });
    const holderService = new LockService({ backends: { default: backend }, shutdownTimeout: 0 });
    const holder = await holderService.acquire('b', { ttl: TTL });
    backend.slowTimes = 1;
    const { ms, error } = await timed(() =>
      locks.acquire(['a', 'b'], { ttl: TTL, waitTimeout: 500, retry: SLOW_POLL }),
    );
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(ms).toBeLessThan(500 + 80);
    await holder.release();
    await Promise.all([locks.close(), holderService.close()]);
  });
});

describe('attack: SharedStart and untilAborted', () => {
  const rejections = unhandledRejections();
  afterAll(() => {
    rejections.stop();
    expect(rejections.seen).toEqual([]);
  });

  it('a start function that throws synchronously: join() rejects (does not throw), and the next join starts afresh', async () => {
    let calls = 0;
    const shared = new SharedStart(() => {
      calls++;
      if (calls === 1) throw new Error('sync boom');
      return Promise.resolve();
    });
    let joined: Promise<void> | undefined;
    expect(() => {
      joined = shared.join(new AbortController().signal);
    }).not.toThrow();
    await expect(joined).rejects.toThrow('sync boom');
    await expect(shared.join(new AbortController().signal)).resolves.toBeUndefined();
    expect(shared.started).toBe(true);
    expect(calls).toBe(2);
  });

  it('a start that never settles: the last waiter leaving stops it, and a later caller waits with its own signal (no hang)', async () => {
    const signals: AbortSignal[] = [];
    const shared = new SharedStart((signal) => {
      signals.push(signal);
      return new Promise<void>(() => undefined); // ignores its signal
    });
    const first = new AbortController();
    const joined = shared.join(first.signal);
    first.abort(new Error('first gave up'));
    await expect(joined).rejects.toThrow('first gave up');
    expect(signals[0]!.aborted).toBe(true);
    const second = new AbortController();
    const late = track(shared.join(second.signal));
    await flush();
    expect(late.state()).toBe('pending');
    expect(signals).toHaveLength(1); // no overlapping start
    const reason = new Error('second gave up');
    second.abort(reason);
    await flush();
    expect(late.state()).toBe('rejected');
    expect(late.error).toBe(reason);
  });

  it('a caller joining in the same tick as the last waiter leaves shares the start, which is not stopped', async () => {
    let release!: () => void;
    const signals: AbortSignal[] = [];
    const shared = new SharedStart((signal) => {
      signals.push(signal);
      return new Promise<void>((resolve) => (release = resolve));
    });
    const first = new AbortController();
    const firstJoin = track(shared.join(first.signal));
    first.abort(new Error('gone'));
    const second = shared.join(new AbortController().signal);
    await flush();
    expect(firstJoin.state()).toBe('rejected');
    expect(signals).toHaveLength(1);
    expect(signals[0]!.aborted).toBe(false);
    release();
    await expect(second).resolves.toBeUndefined();
    expect(shared.started).toBe(true);
  });

  it('a stopped start is replaced only after it settles, once, for all callers waiting', async () => {
    const running: number[] = [];
    let concurrent = 0;
    let maxConcurrent = 0;
    const finishers: (() => void)[] = [];
    const shared = new SharedStart((signal) => {
      running.push(1);
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      return new Promise<void>((resolve, reject) => {
        finishers.push(() => {
          concurrent--;
          if (signal.aborted) reject(signal.reason as Error);
          else resolve();
        });
      });
    });
    const first = new AbortController();
    const j1 = shared.join(first.signal);
    first.abort(new Error('left'));
    await expect(j1).rejects.toThrow('left');
    const waiting = [shared.join(new AbortController().signal), shared.join(new AbortController().signal)];
    await flush();
    expect(running).toHaveLength(1);
    finishers[0]!(); // the stopped start settles (rejects)
    await flush();
    expect(running).toHaveLength(2);
    finishers[1]!();
    await Promise.all(waiting);
    expect(maxConcurrent).toBe(1);
    expect(shared.started).toBe(true);
  });

  it('stop() while a caller waits for a stopped start to wind down: that caller must not begin a new start afterwards', async () => {
    const finishers: (() => void)[] = [];
    const shared = new SharedStart(
      (signal) =>
        new Promise<void>((resolve, reject) => {
          finishers.push(() => (signal.aborted ? reject(signal.reason as Error) : resolve()));
        }),
    );
    const first = new AbortController();
    const j1 = shared.join(first.signal);
    first.abort(new Error('left'));
    await expect(j1).rejects.toThrow('left');
    const waiting = track(shared.join(new AbortController().signal));
    shared.stop(new Error('closed'));
    finishers[0]!();
    await flush();
    // stop() is what close() calls: a start begun after it would connect a closed backend again.
    expect({ startsAfterStop: finishers.length - 1, waiting: waiting.state() }).toEqual({
      startsAfterStop: 0,
      waiting: 'rejected',
    });
    for (const finish of finishers.slice(1)) finish();
    await flush();
  });

  it('untilAborted: work that settles first leaves no listener on the signal; a later abort is not an unhandled rejection', async () => {
    const controller = new AbortController();
    let added = 0;
    let removed = 0;
    const add = controller.signal.addEventListener.bind(controller.signal);
    const remove = controller.signal.removeEventListener.bind(controller.signal);
    controller.signal.addEventListener = ((...args: Parameters<AbortSignal['addEventListener']>) => {
      added++;
      add(...args);
    }) as AbortSignal['addEventListener'];
    controller.signal.removeEventListener = ((...args: Parameters<AbortSignal['removeEventListener']>) => {
      removed++;
      remove(...args);
    }) as AbortSignal['removeEventListener'];
    for (let i = 0; i < 100; i++) await untilAborted(Promise.resolve(i), controller.signal);
    expect({ added, removed }).toEqual({ added: 100, removed: 100 });
    controller.abort(new Error('late'));
    await flush();
  });
});

describe('attack: Redis init() racing close(), and the pause on real servers', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const paused = new Set<number>();
  const rejections = unhandledRejections();
  let ports: number[] = [];

  beforeAll(async () => {
    ports = await servers.start(3);
  }, 30_000);
  cleanUpAfterTests(servers, opened, paused, rejections);

  it('close() while init() waits out a hung node past the quorum: init() learns the backend closed, at once', async () => {
    servers.pause(ports[2]!);
    paused.add(ports[2]!);
    // The quorum (2 of 3) answers at once; the start then gives the hung node its nodeTimeout (1.5 s), signal or not.
    const backend = opened.backendOn(ports, { nodeTimeout: 1_500 });
    const starting = timed(() => backend.init());
    await sleep(200);
    const closedAt = performance.now();
    await backend.close();
    const { error } = await starting;
    const afterCloseMs = performance.now() - closedAt;
    expect({ error: error?.constructor.name, settledWithin300msOfClose: afterCloseMs < 300 }).toEqual({
      error: LockBackendClosedError.name,
      settledWithin300msOfClose: true,
    });
    // And the backend does not count itself started.
    await expect(backend.init()).rejects.toBeInstanceOf(LockBackendClosedError);
  });

  it('a caller waiting for a stopped start to wind down when close() comes: it learns the backend closed', async () => {
    servers.pause(ports[2]!);
    paused.add(ports[2]!);
    const backend = opened.backendOn(ports, { nodeTimeout: 1_500 });
    const first = new AbortController();
    const firstInit = backend.init(first.signal);
    await sleep(200);
    // The only waiter leaves: the start is stopped, but winds down only after the hung node's nodeTimeout.
    first.abort(new Error('first caller gave up'));
    await expect(firstInit).rejects.toThrow('first caller gave up');
    const second = timed(() => backend.init());
    await backend.close();
    const { ms, error } = await second;
    expect(error).toBeInstanceOf(LockBackendClosedError);
    expect(ms).toBeLessThan(1_000);
  });

  it('init() after close(), and init() in the same tick as close(): both reject with LockBackendClosedError, none hangs', async () => {
    const backend = opened.backendOn([ports[0]!], { nodeTimeout: 250 });
    const racing = backend.init();
    const closing = backend.close();
    const after = backend.init();
    const results = await Promise.allSettled([racing, after, closing]);
    expect(results[1]).toMatchObject({ status: 'rejected' });
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(LockBackendClosedError);
    expect(results[0]).toMatchObject({ status: 'rejected' });
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(LockBackendClosedError);
    expect(results[2]).toMatchObject({ status: 'fulfilled' });
  });

  it('two callers taking [x, y] and [y, x] over and over on one node: never two holders, none stalls, nothing left held', async () => {
    const key = (k: string): string => `jitter-${k}:${randomUUID()}`;
    const [x, y] = [key('x'), key('y')];
    const services = Array.from({ length: 4 }, () => {
      const backend = opened.backend({ clients: [opened.client(ports[1]!)], handoffTimeout: 100 });
      return opened.service({ backends: { default: backend } });
    });
    await Promise.all(services.map((s) => s.init()));
    let inside = 0;
    let overlaps = 0;
    const failures: unknown[] = [];
    const { ms } = await timed(() =>
      Promise.all(
        services.map(async (locks, i) => {
          for (let round = 0; round < 15; round++) {
            await locks
              .using(
                (i + round) % 2 === 0 ? [x, y] : [y, x],
                async () => {
                  if (++inside !== 1) overlaps++;
                  await sleep(round % 3);
                  inside--;
                },
                { ttl: 10_000, waitTimeout: 4_000, retry: { delay: 60_000, maxDelay: 60_000 } },
              )
              .catch((error: unknown) => failures.push(error));
          }
        }),
      ),
    );
    expect({ overlaps, failures }).toEqual({ overlaps: 0, failures: [] });
    expect(ms).toBeLessThan(15_000);
    const probe = opened.client(ports[1]!);
    const left = [...(await probe.keys(`${x}*`)), ...(await probe.keys(`${y}*`))].filter(
      (k) => !k.endsWith('\u0000fence'),
    );
    expect(left).toEqual([]);
  }, 30_000);
});

describe('attack: SQLite init() racing close() through a start stopped by its last waiter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'jitter-start-'));
  const rejections = unhandledRejections();
  afterAll(() => {
    rejections.stop();
    rmSync(dir, { recursive: true, force: true });
    expect(rejections.seen).toEqual([]);
  });

  it('a caller joining a stopped start, then close(): every init() settles, a closed backend never reports started, no DataSource left open', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 24; i++) {
      const backend = new TypeOrmLockBackend({
        connection: { type: 'better-sqlite3', database: join(dir, `db-${i}.sqlite`) },
        createTable: true,
      });
      const first = new AbortController();
      const firstInit = backend.init(first.signal).catch(() => undefined);
      // Give up at different points of the start: before, during and after connecting.
      if (i % 4 === 1) await Promise.resolve();
      if (i % 4 === 2) await new Promise<void>((resolve) => setImmediate(resolve));
      if (i % 4 === 3) await sleep(1);
      first.abort(new Error('first gave up'));
      await firstInit;
      const second = timed(() => backend.init());
      if (i % 2 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      await backend.close();
      const { ms, error } = await second;
      // Resolving is right only if the start had succeeded before close(); afterwards init() must say closed.
      outcomes.push(error === undefined ? 'resolved' : (error as Error).constructor.name);
      expect(ms).toBeLessThan(5_000);
      await sleep(5);
      const dataSource = (backend as unknown as { dataSource: DataSource }).dataSource;
      expect({ i, open: dataSource.isInitialized }).toEqual({ i, open: false });
      await expect(backend.init()).rejects.toBeInstanceOf(LockBackendClosedError);
    }
    expect(outcomes.filter((o) => o !== 'resolved' && o !== LockBackendClosedError.name)).toEqual([]);
  }, 30_000);
});
