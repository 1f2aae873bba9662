import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { lockKeyNames } from '../../lib/backends/redis/key-names';
import { scripts } from '../../lib/backends/redis/scripts';
import { client, redisPorts, sleep } from './support/redis-env';

/**
 * Who hears a release. A waiter leaves the channel of its own process's wake-up connection with its place, and
 * the scripts tell it its turn there: a release under contention wakes one process, not every process waiting
 * on the key (with 16 processes on one key, every release used to reach all 16, twice). A place left without a
 * channel (a waiter on an earlier version, during a rolling upgrade) is told on the key's channel, as before.
 */
describe('Redlock wake-up channels', () => {
  const [port] = redisPorts(1);
  const opened: Redis[] = [];
  const open = (): Redis => {
    const c = client(port!);
    opened.push(c);
    return c;
  };
  afterAll(async () => {
    await Promise.all(opened.map((c) => c.quit().catch(() => undefined)));
  });

  /** Counts messages by channel kind: the keys' channels, and the processes' own channels. */
  async function listenAll(): Promise<{ keyChannel: string[]; own: string[]; stop(): Promise<void> }> {
    const sub = open();
    const keyChannel: string[] = [];
    const own: string[] = [];
    await sub.psubscribe('*\u0000released', 'nestjs-distributed-lock\u0000wake\u0000*');
    sub.on('pmessage', (pattern: string, _channel: string, message: string) =>
      (pattern.endsWith('released') ? keyChannel : own).push(message),
    );
    return { keyChannel, own, stop: async () => void (await sub.punsubscribe()) };
  }

  const ACQUIRE_ARGS = (owner: string, ownChannel: string, keyChannel: string): (string | number)[] => [
    owner,
    10_000,
    '1',
    String(Date.now() * 1000),
    60_000,
    100,
    keyChannel,
    ownChannel,
  ];

  it('a release tells the first waiter on its own channel, and the key channel hears nothing', async () => {
    const redis = open();
    const names = lockKeyNames(`wake-own:${randomUUID()}`, false);
    const holder = randomUUID().replace(/-/g, '');
    const waiter = randomUUID().replace(/-/g, '');
    const ownChannel = `nestjs-distributed-lock\u0000wake\u0000test-${randomUUID()}`;
    const heard = await listenAll();
    try {
      expect(
        await redis.eval(scripts.acquire.source, 4, ...names.keys, ...ACQUIRE_ARGS(holder, '', names.channel)),
      ).toEqual([1, expect.any(Number)]);
      const refused = (await redis.eval(
        scripts.acquire.source,
        4,
        ...names.keys,
        ...ACQUIRE_ARGS(waiter, ownChannel, names.channel),
      )) as [number, number];
      expect(refused[0]).toBe(0);
      expect(await redis.eval(scripts.release.source, 4, ...names.keys, holder, '', '0', 100, names.channel)).toBe(1);
      await sleep(50);
      expect(heard.own).toEqual([`${names.channel}\u0000${waiter}`]);
      expect(heard.keyChannel).toEqual([]);
    } finally {
      await heard.stop();
    }
  });

  it('a waiter that left no channel of its own (an earlier version) is told on the key channel', async () => {
    const redis = open();
    const names = lockKeyNames(`wake-old:${randomUUID()}`, false);
    const holder = randomUUID().replace(/-/g, '');
    const waiter = randomUUID().replace(/-/g, '');
    const heard = await listenAll();
    try {
      await redis.eval(scripts.acquire.source, 4, ...names.keys, ...ACQUIRE_ARGS(holder, '', names.channel));
      // As the earlier acquire script joined: 7 arguments, no own channel.
      await redis.eval(
        scripts.acquire.source,
        4,
        ...names.keys,
        ...ACQUIRE_ARGS(waiter, '', names.channel).slice(0, 7),
      );
      await redis.eval(scripts.release.source, 4, ...names.keys, holder, '', '0', 100, names.channel);
      await sleep(50);
      expect(heard.keyChannel).toEqual([waiter]);
      expect(heard.own).toEqual([]);
    } finally {
      await heard.stop();
    }
  });

  it('under contention (8 processes, one key) each lock costs at most 5 messages, none on the key channel while the line is full', async () => {
    const workers = 8;
    const rounds = 6;
    const backends = Array.from({ length: workers }, () => new RedlockBackend({ clients: [open()] }));
    const services = backends.map((backend) => new LockService({ backends: { default: backend } }));
    const key = `wake-count:${randomUUID()}`;
    let inside = 0;
    let overlaps = 0;
    const heard = await listenAll();
    try {
      await Promise.all(services.map((s) => s.init()));
      // Everyone in line first, so that every release in the run has waiters behind it.
      const gate = await services[0]!.acquire(key, { ttl: 10_000 });
      const runs = services.map(async (locks) => {
        for (let round = 0; round < rounds; round++) {
          await locks.using(
            key,
            async () => {
              if (++inside !== 1) overlaps++;
              await sleep(1);
              inside--;
            },
            // No polling to speak of: every hand-off must come from a message.
            { ttl: 10_000, waitTimeout: 30_000, retry: { delay: 60_000, maxDelay: 60_000 } },
          );
        }
      });
      await sleep(200);
      await gate.release();
      await Promise.all(runs);
      const locks = workers * rounds;
      expect(overlaps).toBe(0);
      // On one node: the hand-over to the first in line, the next two told of it, and told again when the first
      // confirms it — 5 at most, whatever the crowd.
      expect(heard.own.length).toBeLessThanOrEqual(5 * locks);
      // Only releases that find nobody in line announce on the key channel (the last few of the run).
      expect(heard.keyChannel.length).toBeLessThanOrEqual(workers);
    } finally {
      await heard.stop();
      await Promise.all(services.map((s) => s.close()));
      await Promise.all(backends.map((b) => b.close()));
    }
  }, 30_000);
});
