import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import type { Command } from 'ioredis';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { lockKeyNames } from '../../lib/backends/redis/key-names';
import { scripts } from '../../lib/backends/redis/scripts';
import { client, redisPorts, sleep } from './support/redis-env';

/**
 * On one node a release hands the key straight to the first waiter in line, for handoffTimeout ms: the waiter
 * starts its work on that provisional grant without asking Redis again, and confirms it at once by extending
 * it to its ttl (AcquiredOutcome.provisionalForMs). A waiter that died after joining the line therefore holds
 * the line up for handoffTimeout, never for its ttl.
 */
describe('Redlock on 1 node: keys handed straight to the first waiter', () => {
  const [port] = redisPorts(1);
  const HANDOFF = 100;
  const TTL = 10_000;
  const SLOW_POLL = { delay: 60_000, maxDelay: 60_000 };
  const cleanup: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step().catch(() => undefined);
  });

  /** A LockService on its own client, counting the commands that client sends. */
  function app(handoffTimeout = HANDOFF): { locks: LockService; redis: Redis; sent: string[] } {
    const redis = client(port!);
    const sent: string[] = [];
    const send = redis.sendCommand.bind(redis);
    redis.sendCommand = ((command: Command, stream?: Parameters<Redis['sendCommand']>[1]) => {
      // Script calls by script name: what the waiter asked Redis for.
      const sha = command.name === 'evalsha' ? String(command.args[0]) : '';
      sent.push(Object.values(scripts).find((script) => script.sha === sha)?.name ?? command.name);
      return send(command, stream);
    }) as Redis['sendCommand'];
    const backend = new RedlockBackend({ clients: [redis], handoffTimeout });
    const locks = new LockService({ backends: { default: backend } });
    cleanup.push(
      () => redis.quit(),
      () => backend.close(),
      () => locks.close(),
    );
    return { locks, redis, sent };
  }

  async function waitUntil(what: string, check: () => Promise<boolean>, ms = 5_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await sleep(10);
    }
  }

  it('the waiter gets the key without asking again, with a higher fencing token, and confirms it to its ttl', async () => {
    const admin = client(port!);
    cleanup.push(() => admin.quit());
    const key = `handed:${randomUUID()}`;
    // A hand-over of 1 s: on a loaded machine the waiter's wait and round trips may eat much of 100 ms, and with
    // less than two round trips left it rightly takes the key the usual way, which is not what this test is about.
    const holder = app(1_000);
    const waiter = app(1_000);
    await Promise.all([holder.locks.init(), waiter.locks.init()]);
    const held = await holder.locks.acquire(key, { ttl: TTL });
    const waiting = waiter.locks.acquire(key, { ttl: TTL, waitTimeout: 5_000, retry: SLOW_POLL });
    await waitUntil('the waiter is in line', async () => (await admin.zcard(lockKeyNames(key, false).keys[2])) === 1);
    const before = waiter.sent.filter((name) => name === 'acquire').length;
    await held.release();
    const lock = await waiting;
    // Granted by the release: no acquire of its own after the wake-up (the polling pause is a minute), only
    // the confirmation.
    expect(waiter.sent.filter((name) => name === 'acquire').length).toBe(before);
    await waitUntil('the confirmation is sent', async () => waiter.sent.includes('extend'));
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await waitUntil('the grant is confirmed', async () => (await admin.pttl(key)) > TTL / 2);
    expect(await admin.get(key)).not.toBeNull();
    expect(lock.isHeld).toBe(true);
    expect(lock.expiresAt - lock.acquiredAt).toBeGreaterThan(TTL / 2);
    await lock.release();
    expect(await admin.exists(key)).toBe(0);
  });

  it('a waiter gone after joining the line holds the key for handoffTimeout only: the one behind gets it next', async () => {
    const admin = client(port!);
    cleanup.push(() => admin.quit());
    const key = `handed-ghost:${randomUUID()}`;
    const names = lockKeyNames(key, false);
    const holder = app();
    const waiter = app();
    await Promise.all([holder.locks.init(), waiter.locks.init()]);
    const held = await holder.locks.acquire(key, { ttl: TTL });
    // A waiter that takes keys straight from a release, whose process is gone: nobody listens on its channel.
    const ghost = randomUUID().replace(/-/g, '');
    const arrival = String(Date.now() * 1000);
    const ghostChannel = `nestjs-distributed-lock\u0000wake\u0000ghost-${randomUUID()}`;
    const args = [ghost, TTL, '1', arrival, 60_000, HANDOFF, names.channel, ghostChannel, '1'];
    expect(((await admin.eval(scripts.acquire.source, 4, ...names.keys, ...args)) as number[])[0]).toBe(0);
    const waiting = waiter.locks.acquire(key, { ttl: TTL, waitTimeout: 5_000, retry: SLOW_POLL });
    await waitUntil('the waiter is in line behind the ghost', async () => (await admin.zcard(names.keys[2])) === 2);
    const releasedAt = Date.now();
    await held.release();
    // Handed to the ghost, for handoffTimeout, not its ttl.
    expect(await admin.get(key)).toBe(ghost);
    expect(await admin.pttl(key)).toBeLessThanOrEqual(HANDOFF);
    const lock = await waiting;
    const tookMs = Date.now() - releasedAt;
    expect(tookMs).toBeGreaterThanOrEqual(HANDOFF - 5);
    expect(tookMs).toBeLessThan(HANDOFF + 400);
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  it('a hand-over noticed too late (the event loop was blocked past handoffTimeout) is not trusted: the waiter takes the key the usual way', async () => {
    const admin = client(port!);
    cleanup.push(() => admin.quit());
    const key = `handed-late:${randomUUID()}`;
    const names = lockKeyNames(key, false);
    const waiter = app();
    await waiter.locks.init();
    // Held by an owner outside this process's LockServices, released by a script call sent just before this
    // process blocks: nothing in it can hear of the hand-over until the block is over.
    const holder = randomUUID().replace(/-/g, '');
    const [, heldToken] = (await admin.eval(
      scripts.acquire.source,
      4,
      ...names.keys,
      ...[holder, TTL, '0', String(Date.now() * 1000), 60_000, HANDOFF, names.channel, '', '0'],
    )) as [number, number];
    const waiting = waiter.locks.acquire(key, { ttl: TTL, waitTimeout: 5_000, retry: SLOW_POLL });
    await waitUntil('the waiter is in line', async () => (await admin.zcard(names.keys[2])) === 1);
    const before = waiter.sent.filter((name) => name === 'acquire').length;
    const released = admin.eval(scripts.release.source, 4, ...names.keys, holder, '', '0', HANDOFF, names.channel);
    // Nothing in this process runs meanwhile: the hand-over lapses in Redis before the waiter hears of it.
    const blockedUntil = Date.now() + HANDOFF * 2.5;
    while (Date.now() < blockedUntil) {
      // busy
    }
    expect(await released).toBe(1);
    const lock = await waiting;
    // It asked Redis (the script found the key free again and gave it the lock for its full ttl).
    expect(waiter.sent.filter((name) => name === 'acquire').length).toBeGreaterThan(before);
    expect(lock.isHeld).toBe(true);
    expect(await admin.pttl(key)).toBeGreaterThan(HANDOFF * 5);
    expect(lock.fencingToken).toBeGreaterThan(BigInt(heldToken));
    await lock.release();
  });

  it('a confirmed hand-over tells the two behind, so a long hold costs them no attempt when handoffTimeout is over', async () => {
    const admin = client(port!);
    cleanup.push(() => admin.quit());
    const key = `handed-long:${randomUUID()}`;
    const holder = app();
    const [first, second, third] = [app(), app(), app()];
    await Promise.all([holder, first, second, third].map((a) => a.locks.init()));
    const held = await holder.locks.acquire(key, { ttl: TTL });
    const options = { ttl: TTL, waitTimeout: 10_000, retry: SLOW_POLL };
    const inLine = (n: number) => async () => (await admin.zcard(lockKeyNames(key, false).keys[2])) === n;
    const firstGets = first.locks.acquire(key, options);
    await waitUntil('the first is in line', inLine(1));
    const secondGets = second.locks.acquire(key, options);
    await waitUntil('the second is in line', inLine(2));
    const thirdGets = third.locks.acquire(key, options);
    await waitUntil('the third is in line', inLine(3));
    const attempts = (a: { sent: string[] }): number => a.sent.filter((name) => name === 'acquire').length;
    const before = [attempts(second), attempts(third)];
    await held.release();
    const lock = await firstGets;
    // Held well past handoffTimeout: the two behind were told of the hand-over, then that it was confirmed.
    await sleep(HANDOFF * 4);
    expect([attempts(second), attempts(third)]).toEqual(before);
    await lock.release();
    await (await secondGets).release();
    await (await thirdGets).release();
  });

  it('under contention no two holders, and each lock costs the waiter no acquire after its wake-up', async () => {
    const workers = 6;
    const rounds = 10;
    const apps = Array.from({ length: workers }, app);
    await Promise.all(apps.map((a) => a.locks.init()));
    const key = `handed-contention:${randomUUID()}`;
    let inside = 0;
    let overlaps = 0;
    let lost = 0;
    for (const a of apps) a.locks.events$.subscribe((e) => (e.type === 'lost' ? lost++ : undefined));
    await Promise.all(
      apps.map(async ({ locks }) => {
        for (let round = 0; round < rounds; round++) {
          await locks.using(
            key,
            async () => {
              if (++inside !== 1) overlaps++;
              await sleep(1);
              inside--;
            },
            { ttl: TTL, waitTimeout: 30_000, retry: SLOW_POLL },
          );
        }
      }),
    );
    expect(overlaps).toBe(0);
    expect(lost).toBe(0);
    // Per lock: a refused attempt (joining the line), the confirmation, the release; no acquire after waking.
    const count = (script: string): number => apps.reduce((n, a) => n + a.sent.filter((s) => s === script).length, 0);
    const locks = workers * rounds;
    expect(count('acquire') / locks).toBeLessThan(1.5);
    expect(count('extend')).toBeGreaterThan(locks * 0.8);
    expect(count('release')).toBe(locks);
  }, 30_000);

  it('a key handed over before the first wait on it has subscribed its channel still counts: no attempt of its own', async () => {
    const admin = client(port!);
    cleanup.push(() => admin.quit());
    const key = `handed-early:${randomUUID()}`;
    const holder = app();
    const waiter = app();
    const backend = new RedlockBackend({ clients: [waiter.redis], handoffTimeout: 5_000 });
    cleanup.push(() => backend.close());
    await Promise.all([holder.locks.init(), backend.init()]);
    // The backend's wake-up connection, with its own channel (where its waiters are told their turn) subscribed.
    const hub = (backend as unknown as { hubs: { own: string; ownSeq: number }[] }).hubs[0]!;
    await waitUntil('the own channel is subscribed', async () => {
      const [, listeners] = (await admin.pubsub('NUMSUB', hub.own)) as [string, number];
      return listeners === 1;
    });
    const held = await holder.locks.acquire(key, { ttl: TTL });
    const owner = randomUUID().replace(/-/g, '');
    const call = {
      key,
      owner,
      ttl: TTL,
      keepPlace: true,
      onLost: () => undefined,
      signal: new AbortController().signal,
    };
    expect(await backend.acquire(call)).toMatchObject({ acquired: false, queued: true });
    // Released and handed to the waiter before its first wait on the key began (so before the key's channel was
    // subscribed): the announcement reaches only the own channel, ahead of any listener for the key.
    const told = hub.ownSeq;
    await held.release();
    expect(await admin.get(key)).toBe(owner);
    await waitUntil("the waiter's process heard of it", async () => hub.ownSeq > told);
    const attempts = waiter.sent.filter((name) => name === 'acquire').length;
    await backend.waitForRelease({ key, owner, timeoutMs: 5_000, signal: new AbortController().signal });
    const outcome = await backend.acquire(call);
    expect(outcome).toMatchObject({ acquired: true });
    // Taken from the hand-over, not by asking Redis again.
    expect(outcome.acquired && outcome.provisionalForMs).toBeGreaterThan(0);
    expect(waiter.sent.filter((name) => name === 'acquire').length).toBe(attempts);
    await backend.release({ key, owner }, call);
    expect(await admin.exists(key)).toBe(0);
  });
});
