import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { LockBackendError, LockService, type Lock } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { MAX_BATCH, WriteBatcher } from '../../lib/backends/redis/write-batcher';
import { client, redisPorts, sleep } from './support/redis-env';

/**
 * Many locks taken at once over one connection: the script calls made in one tick go to the socket in a few
 * writes instead of one system call each (write-batcher.ts). A lone call is written at once, and nothing is
 * ever left unsent.
 */
describe('Redlock: script calls made in one tick share socket writes', () => {
  const [port] = redisPorts(1);
  const cleanup: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step().catch(() => undefined);
  });

  /** A LockService on a client of its own, and that client's socket writes as the kernel sees them. */
  async function app(): Promise<{ locks: LockService; redis: Redis; writes: () => number; corks: () => number }> {
    const redis = client(port!);
    const backend = new RedlockBackend({ clients: [redis] });
    const locks = new LockService({ backends: { default: backend } });
    cleanup.push(
      () => redis.quit(),
      () => backend.close(),
      () => locks.close(),
    );
    await locks.init();
    let writes = 0;
    let corks = 0;
    // Counted on the socket the client uses now: one _write or _writev call is one write to the kernel.
    const socket = redis.stream as typeof redis.stream & {
      _write: (...args: unknown[]) => void;
      _writev: (...args: unknown[]) => void;
    };
    const write = socket._write.bind(socket);
    const writev = socket._writev.bind(socket);
    const cork = socket.cork.bind(socket);
    socket._write = (...args) => {
      writes++;
      write(...args);
    };
    socket._writev = (...args) => {
      writes++;
      writev(...args);
    };
    socket.cork = () => {
      corks++;
      cork();
    };
    return { locks, redis, writes: () => writes, corks: () => corks };
  }

  it('64 locks taken and released at once go out in a few writes each way, every one granted and freed', async () => {
    const { locks, redis, writes } = await app();
    const keys = Array.from({ length: 64 }, (_, i) => `batched:${randomUUID()}:${i}`);
    const before = writes();
    const handles = await Promise.all(keys.map((key) => locks.acquire(key, { ttl: 10_000 })));
    const acquireWrites = writes() - before;
    expect(handles.every((h) => h.isHeld)).toBe(true);
    expect(await redis.exists(...keys)).toBe(64);
    await Promise.all(handles.map((h) => h.release()));
    const releaseWrites = writes() - before - acquireWrites;
    expect(await redis.exists(...keys)).toBe(0);
    // One write for the call made while nothing was outstanding, then batches of at most MAX_BATCH: 64 script
    // calls each way, far from 64 writes (a few more when the calls spread over more than one tick).
    const most = Math.ceil(64 / MAX_BATCH) + 4;
    expect(acquireWrites).toBeLessThanOrEqual(most);
    expect(releaseWrites).toBeLessThanOrEqual(most);
  });

  it('a lone call is written at once: nothing outstanding, nothing held for the end of the tick', async () => {
    const { locks, corks, writes } = await app();
    const key = `lone:${randomUUID()}`;
    // Once the scripts init() loads are answered: until then a call has their replies outstanding.
    await locks.using(key, async () => undefined, { ttl: 10_000 });
    const corked = corks();
    const before = writes();
    for (let i = 0; i < 5; i++) await locks.using(key, async () => undefined, { ttl: 10_000 });
    expect(corks()).toBe(corked);
    expect(writes() - before).toBe(10);
  });

  it("the user's own commands on the shared client, sent in the same ticks, keep their order and all get answers", async () => {
    const { locks, redis } = await app();
    const counter = `batched-counter:${randomUUID()}`;
    const keys = Array.from({ length: 40 }, (_, i) => `shared:${randomUUID()}:${i}`);
    const counts: Promise<number>[] = [];
    const taken = keys.map(async (key) => {
      counts.push(redis.incr(counter));
      const handle = await locks.acquire(key, { ttl: 10_000 });
      counts.push(redis.incr(counter));
      await handle.release();
      counts.push(redis.incr(counter));
    });
    await Promise.all(taken);
    const answers = await Promise.all(counts);
    // INCRs answered in the order they were sent: 1, 2, 3, …
    expect(answers).toEqual(answers.map((_, i) => i + 1));
    expect(redis.stream.writableCorked).toBe(0);
    expect(await redis.exists(...keys)).toBe(0);
  });

  it('a connection dropped with calls held in a batch: every call settles, and no lock is left behind', async () => {
    const { locks, redis } = await app();
    const keys = Array.from({ length: 48 }, (_, i) => `dropped:${randomUUID()}:${i}`);
    // The socket goes while the batch is held: after the batch started, before the end of its tick.
    const socket = redis.stream;
    const cork = socket.cork.bind(socket);
    let heldWhenDropped = -1;
    socket.cork = () => {
      cork();
      if (heldWhenDropped >= 0) return;
      heldWhenDropped = 0;
      queueMicrotask(() => {
        heldWhenDropped = socket.writableLength;
        socket.destroy();
      });
    };
    const outcomes = keys.map((key) =>
      locks.acquire(key, { ttl: 10_000, waitTimeout: 2_000 }).then(
        (handle): Lock | Error => handle,
        (error: unknown): Lock | Error => error as Error,
      ),
    );
    const settled = await Promise.all(outcomes);
    expect(heldWhenDropped).toBeGreaterThan(0);
    const held = settled.filter((o): o is Lock => !(o instanceof Error));
    for (const error of settled.filter((o): o is Error => o instanceof Error)) {
      expect(error).toBeInstanceOf(LockBackendError);
    }
    await Promise.all(held.map((h) => h.release()));
    // Calls that failed may have been applied (resent by ioredis after it reconnected): the core gives them
    // back by owner. Nothing may stay held.
    const deadline = Date.now() + 5_000;
    while ((await redis.exists(...keys)) > 0 && Date.now() < deadline) await sleep(20);
    expect(await redis.exists(...keys)).toBe(0);
  });

  it('timers already faked when the library loaded: nothing is held, since the faked tick might never end a batch', async () => {
    jest.useFakeTimers();
    let faked: typeof WriteBatcher | undefined;
    try {
      await jest.isolateModulesAsync(async () => {
        faked = (await import('../../lib/backends/redis/write-batcher')).WriteBatcher;
      });
    } finally {
      jest.useRealTimers();
    }
    const redis = client(port!);
    cleanup.push(() => redis.quit());
    await redis.ping();
    // A reply outstanding: with a real tick, a call now is held until the tick ends…
    const first = redis.ping();
    WriteBatcher.for(redis).beforeSend();
    expect(redis.stream.writableCorked).toBe(1);
    await first;
    expect(redis.stream.writableCorked).toBe(0);
    // …with the tick faked before the module loaded, it is written at once.
    const second = redis.ping();
    faked!.for(redis).beforeSend();
    const corked = redis.stream.writableCorked;
    // Let go of a batch the faked tick would never end, so that a failure here fails rather than hangs.
    while (redis.stream.writableCorked > 0) redis.stream.uncork();
    expect(corked).toBe(0);
    await second;
  });
});
