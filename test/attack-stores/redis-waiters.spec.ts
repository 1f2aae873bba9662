import Redis from 'ioredis';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { LockError, LockUnavailableError } from '../../lib';
import { RedisProcesses } from '../redis/support/redis-processes';
import { never, Opened, owner, request, sleep, timed, unhandledRejections, waitUntil } from './redis-attack-support';

/**
 * The FIFO line of waiters: places left behind by waiters that died or gave up, services and backends closed
 * under waiting callers, and the subscription connection that carries the wake-ups dropping while they wait.
 * Waiters here poll every 5 s or more, so only the line and its announcements can move the lock on in time.
 */
describe('attack: Redlock waiters', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const rejections = unhandledRejections();
  const HANDOFF = 100;
  /** A polling pause far beyond what any hand-off here may take. */
  const SLOW_POLL = { delay: 5_000, maxDelay: 5_000 };
  let port = 0;
  let admin: Redis;
  const line = (key: string): Promise<string[]> => admin.zrange(`${key}\u0000line`, 0, -1);

  beforeAll(async () => {
    [port] = await servers.start(1);
    admin = opened.client(port);
  }, 30_000);
  afterEach(async () => {
    await opened.closeAll();
    admin = opened.client(port);
  });
  afterAll(async () => {
    await opened.closeAll();
    rejections.stop();
    await servers.stopAll();
    expect(rejections.seen).toEqual([]);
  });

  const serviceOn = async (options: { handoffTimeout?: number } = {}) => {
    const backend = opened.backendOn([port], { handoffTimeout: HANDOFF, ...options });
    await backend.init(never);
    return { backend, locks: opened.service({ backends: { default: backend } }) };
  };

  it('a waiter killed (SIGKILL) while first in line holds the next one up for about handoffTimeout, not a polling pause', async () => {
    const key = `killed-waiter:${randomUUID()}`;
    const holder = await serviceOn();
    const next = await serviceOn();
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    const child = spawn(process.execPath, [join(__dirname, 'redis-waiter-child.js'), String(port), key], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await waitUntil('the child waits in line', async () => (await line(key)).length === 1, 10_000);
      const waiting = next.locks.acquire(key, { ttl: 10_000, waitTimeout: 8_000, retry: SLOW_POLL });
      await waitUntil('the next waiter is in line behind it', async () => (await line(key)).length === 2);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const releasedAt = Date.now();
      await held.release();
      const lock = await waiting;
      const tookMs = Date.now() - releasedAt;
      console.log(`after a dead first waiter, the next one got the key ${tookMs} ms after the release`);
      expect(tookMs).toBeLessThan(HANDOFF + 250);
      await lock.release();
    } finally {
      child.kill('SIGKILL');
    }
  }, 20_000);

  it('two places in a row left behind (owners gone without withdrawing) delay the next waiter by about 2 × handoffTimeout', async () => {
    const key = `ghosts:${randomUUID()}`;
    const holder = await serviceOn();
    const next = await serviceOn();
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    for (const ghost of [owner(), owner()]) {
      expect(await holder.backend.acquire(request(key, ghost, true))).toMatchObject({ queued: true });
    }
    const waiting = next.locks.acquire(key, { ttl: 10_000, waitTimeout: 8_000, retry: SLOW_POLL });
    await waitUntil('the waiter is in line', async () => (await line(key)).length === 3);
    const releasedAt = Date.now();
    await held.release();
    const lock = await waiting;
    const tookMs = Date.now() - releasedAt;
    console.log(`after two dead places, the next waiter got the key ${tookMs} ms after the release`);
    expect(tookMs).toBeLessThan(2 * HANDOFF + 300);
    await lock.release();
  }, 20_000);

  it('waiters giving up (short waitTimeout) among ones that keep waiting: their places go, the line does not stall', async () => {
    const key = `giving-up:${randomUUID()}`;
    const holder = await serviceOn();
    const services = await Promise.all(Array.from({ length: 4 }, () => serviceOn()));
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    const order: string[] = [];
    const outcomes: Promise<string>[] = [];
    for (let i = 0; i < 12; i++) {
      const { locks } = services[Math.floor(i / 3) % services.length]!;
      const patient = i % 4 === 3;
      outcomes.push(
        locks
          .using(key, async () => void order.push(`w${i}`), {
            ttl: 5_000,
            waitTimeout: patient ? 8_000 : 150 + i * 10,
            retry: SLOW_POLL,
          })
          .then(
            () => 'got',
            (e: unknown) => (e instanceof LockUnavailableError ? 'gave up' : String(e)),
          ),
      );
      await sleep(5);
    }
    await sleep(400); // every impatient waiter has given up
    const releasedAt = Date.now();
    await held.release();
    const results = await Promise.all(outcomes);
    const tookMs = Date.now() - releasedAt;
    expect(results.filter((r) => r === 'got')).toHaveLength(3);
    expect(results.filter((r) => r === 'gave up')).toHaveLength(9);
    // In the order they came, each straight after the one before.
    expect(order).toEqual(['w3', 'w7', 'w11']);
    expect(tookMs).toBeLessThan(1_000);
    await waitUntil('the line is empty', async () => (await line(key)).length === 0, 2_000);
  }, 20_000);

  it('the releaser coming straight back queues behind the waiter (it gets "promised", the waiter gets the key)', async () => {
    const key = `re-take:${randomUUID()}`;
    const a = await serviceOn();
    const b = await serviceOn();
    const held = await a.locks.acquire(key, { ttl: 10_000 });
    const waiting = b.locks.acquire(key, { ttl: 10_000, waitTimeout: 5_000, retry: SLOW_POLL });
    await waitUntil('the waiter is in line', async () => (await line(key)).length === 1);
    await held.release();
    const again = await timed(() => a.locks.acquire(key, { ttl: 10_000 }));
    expect(again.error).toBeInstanceOf(LockUnavailableError);
    const lock = await waiting;
    await lock.release();
  });

  it('LockService.close() under waiting callers: each ends at once with a typed error, and their places are withdrawn', async () => {
    const key = `service-close:${randomUUID()}`;
    const holder = await serviceOn();
    const waiters = await serviceOn();
    await holder.locks.acquire(key, { ttl: 10_000 });
    const calls = [1, 2, 3].map(() => timed(() => waiters.locks.acquire(key, { waitTimeout: 8_000 })));
    await waitUntil('three waiters in line', async () => (await line(key)).length === 3);
    await waiters.locks.close();
    for (const { error, ms } of await Promise.all(calls)) {
      expect(error).toBeInstanceOf(LockError);
      expect(ms).toBeLessThan(1_000);
    }
    expect(await line(key)).toEqual([]);
  });

  it('backend.close() under waiting callers: each ends with a typed error, and their places are withdrawn', async () => {
    const key = `backend-close:${randomUUID()}`;
    const holder = await serviceOn();
    const waiters = await serviceOn();
    await holder.locks.acquire(key, { ttl: 10_000 });
    const calls = [1, 2, 3].map(() => timed(() => waiters.locks.acquire(key, { waitTimeout: 1_500 })));
    await waitUntil('three waiters in line', async () => (await line(key)).length === 3);
    await waiters.backend.close();
    // Withdrawn by the close itself: a place left behind would hold up the holder's next waiter.
    expect(await line(key)).toEqual([]);
    for (const { error } of await Promise.all(calls)) expect(error).toBeInstanceOf(LockError);
  });

  it('no subscription is left behind: channels of finished waits go after their linger (5 s), and close() drops the rest', async () => {
    const prefix = `channels:${randomUUID()}:`;
    const ours = async (): Promise<string[]> => (await admin.pubsub('CHANNELS', `${prefix}*`)) as string[];
    const holder = await serviceOn();
    const waiter = await serviceOn();
    const keys = Array.from({ length: 10 }, (_, i) => `${prefix}${i}`);
    for (const key of keys) {
      const held = await holder.locks.acquire(key);
      const waiting = waiter.locks.acquire(key, { waitTimeout: 5_000 });
      await waitUntil('the waiter is in line', async () => (await line(key)).length === 1);
      await held.release();
      await (await waiting).release();
    }
    expect((await ours()).length).toBeGreaterThan(0);
    await waitUntil('every channel is unsubscribed', async () => (await ours()).length === 0, 6_500);
    // A wait still on at close: its channel goes with the backend.
    const held = await holder.locks.acquire(`${prefix}last`);
    void waiter.locks.acquire(`${prefix}last`, { waitTimeout: 5_000 }).catch(() => undefined);
    await waitUntil('the last wait listens', async () => (await ours()).length === 1);
    await waiter.locks.close();
    await waiter.backend.close();
    await waitUntil('its channel is gone', async () => (await ours()).length === 0, 1_000);
    await held.release();
  }, 15_000);

  it.each([
    ['ioredis defaults', {}],
    ['a client with autoResubscribe off', { autoResubscribe: false }],
  ])(
    'the subscription connection killed (CLIENT KILL TYPE pubsub) while a waiter waits: it is still woken (%s)',
    async (_, clientOptions) => {
      const key = `pubsub-kill:${randomUUID()}`;
      const holder = await serviceOn();
      const backend = opened.backend({ clients: [opened.client(port, clientOptions)], handoffTimeout: HANDOFF });
      await backend.init(never);
      const locks = opened.service({ backends: { default: backend } });
      const held = await holder.locks.acquire(key, { ttl: 10_000 });
      const waiting = timed(() =>
        locks.acquire(key, { waitTimeout: 4_000, retry: { delay: 60_000, maxDelay: 60_000 } }),
      );
      await waitUntil('the waiter is in line', async () => (await line(key)).length === 1);
      await sleep(50); // it listens now
      expect(await admin.client('KILL', 'TYPE', 'pubsub')).toBeGreaterThanOrEqual(1);
      await sleep(200); // reconnected (retry after 50 ms) by now
      const releasedAt = Date.now();
      await held.release();
      const { error, value } = await waiting;
      expect(error).toBeUndefined();
      const tookMs = Date.now() - releasedAt;
      expect(tookMs).toBeLessThan(1_000);
      await value!.release();
    },
    10_000,
  );

  it('the subscription connection killed right at the release (no time to reconnect first): the waiter is still woken', async () => {
    const key = `pubsub-race:${randomUUID()}`;
    const holder = await serviceOn();
    const waiter = await serviceOn();
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    const waiting = timed(() =>
      waiter.locks.acquire(key, { waitTimeout: 4_000, retry: { delay: 60_000, maxDelay: 60_000 } }),
    );
    await waitUntil('the waiter is in line', async () => (await line(key)).length === 1);
    await sleep(50);
    const releasedAt = Date.now();
    await Promise.all([admin.client('KILL', 'TYPE', 'pubsub'), held.release()]);
    const { error, value } = await waiting;
    expect(error).toBeUndefined();
    expect(Date.now() - releasedAt).toBeLessThan(1_000);
    await value!.release();
  }, 10_000);
});
