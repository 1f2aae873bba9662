import type Redis from 'ioredis';
import type { Cluster } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LockService, type Lock } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { hashSlot, lockKeyNames } from '../../lib/backends/redis/key-names';
import { scripts } from '../../lib/backends/redis/scripts';
import { client, clusterClient, redisClusterPorts, sleep } from './support/redis-env';

/**
 * The backend on the real Redis Cluster of test/services/redis.sh (3 masters, no replicas), the Cluster given
 * as one node. Where each key lives is read from the servers themselves (CLUSTER KEYSLOT, CLUSTER SLOTS), and
 * checked with plain clients on each master, which answer MOVED for a key the master does not serve.
 */

interface Master {
  readonly port: number;
  readonly id: string;
  /** A plain (non-cluster) connection to this master. */
  readonly admin: Redis;
}

/** A polling pause far beyond every wait here: only a release announcement can wake a waiter in time. */
const NO_POLLING = { delay: 60_000, maxDelay: 60_000, jitter: 0 };

describe('Redlock on a Redis Cluster of 3 masters', () => {
  let ports: number[] = [];
  let admins: Redis[] = [];
  const opened: Array<{ cluster: Cluster; backend: RedlockBackend; service: LockService }> = [];

  beforeAll(() => {
    ports = redisClusterPorts();
    admins = ports.map(client);
  });
  afterEach(async () => {
    const open = opened.splice(0);
    await Promise.all(open.map(({ service }) => service.close()));
    await Promise.all(open.map(({ backend }) => backend.close()));
    await Promise.all(open.map(({ cluster }) => cluster.quit()));
  });
  afterAll(async () => {
    await Promise.all(admins.map((a) => a.quit()));
  });

  /** A service on a backend of its own, over a Cluster client of its own (as another app instance would have). */
  const open = async (prefix: string, name = `cluster-spec-${randomUUID()}`): Promise<LockService> => {
    const cluster = clusterClient(ports, name);
    const backend = new RedlockBackend({ clients: [cluster] });
    await backend.init(new AbortController().signal);
    const service = new LockService({ backends: { default: backend }, keyPrefix: prefix });
    opened.push({ cluster, backend, service });
    return service;
  };

  /** The masters and, by slot, which one serves it, as the cluster says now. */
  const topology = async (): Promise<{ masters: Master[]; masterOf(slot: number): Master }> => {
    const masters = await Promise.all(
      admins.map(async (admin, i) => ({ port: ports[i]!, id: String(await admin.cluster('MYID')), admin })),
    );
    const ranges = await admins[0]!.cluster('SLOTS');
    return {
      masters,
      masterOf(slot: number): Master {
        const range = ranges.find(([from, to]) => slot >= from && slot <= to);
        const master = masters.find((m) => m.id === range?.[2]?.[2]);
        if (!master) throw new Error(`no master serves slot ${slot}`);
        return master;
      },
    };
  };

  const keySlot = async (key: string): Promise<number> => Number(await admins[0]!.cluster('KEYSLOT', key));

  /** A key (without prefix) whose stored key `prefix + key` lives on `master`. */
  const keyOn = async (
    master: Master,
    prefix: string,
    masterOf: (slot: number) => Master,
    stem = 'k',
  ): Promise<string> => {
    for (let i = 0; i < 1000; i++) {
      const key = `${stem}${i}`;
      if (masterOf(await keySlot(prefix + key)) === master) return key;
    }
    throw new Error(`no key found on master ${master.port}`);
  };

  /** Until `what` holds, polling every 10 ms for at most 5 s. */
  const eventually = async (what: string, check: () => Promise<boolean> | boolean): Promise<void> => {
    for (let i = 0; i < 500; i++) {
      if (await check()) return;
      await sleep(10);
    }
    throw new Error(`timed out waiting until ${what}`);
  };

  it('computes the slot of a key as the servers do: hash tags, empty tags, stray braces, UTF-8', async () => {
    const alphabet = ['a', 'b', '{', '}', 'x', '锁', '🔒', '\u0000'];
    const keys = ['', 'a{x}b', '{}', '{', '}', '}{', '{}{x}', 'x{}y{z}', '{a}{b}', '{{a}}', '锁{🔒}', 'plain'];
    for (let n = 0; n < 300; n++) {
      const length = 1 + (n % 9);
      keys.push(Array.from({ length }, (_, i) => alphabet[(n * 7 + i * 13 + n * i) % alphabet.length]).join(''));
    }
    const pipeline = admins[0]!.pipeline();
    for (const key of keys) pipeline.cluster('KEYSLOT', key);
    const answers = (await pipeline.exec())!.map(([error, slot]) => {
      if (error) throw error;
      return Number(slot);
    });
    expect(keys.map(hashSlot)).toEqual(answers);
  });

  it.each(['a{x}b', '{}', '{', '}{', '{}{x}', 'x{}y{z}', '{a}{b}', '锁{🔒}', 'plain'])(
    'keeps the counter, line and channel of key %p in its slot, and its wait line works there',
    async (key) => {
      const prefix = `cluster:${randomUUID()}:`;
      const stored = prefix + key;
      const { keys, channel } = lockKeyNames(stored, true);
      const slot = await keySlot(stored);
      for (const name of [...keys, channel]) expect(await keySlot(name)).toBe(slot);

      const { masterOf } = await topology();
      const master = masterOf(slot);
      const [holderSide, waiterSide] = await Promise.all([open(prefix), open(prefix)]);
      const holder = await holderSide.acquire(key, { ttl: 10_000 });
      // Where the servers keep them: a plain connection to the master answers MOVED for keys it does not serve.
      expect(await master.admin.exists(stored)).toBe(1);
      expect(await master.admin.get(keys[1])).toBe(holder.fencingToken.toString());
      let woke = false;
      const waiting = waiterSide.acquire(key, { ttl: 10_000, waitTimeout: 20_000, retry: NO_POLLING }).then((l) => {
        woke = true;
        return l;
      });
      await eventually('the waiter has its place in line', async () => (await master.admin.zcard(keys[2])) === 1);
      expect(woke).toBe(false);
      await holder.release();
      const next = await waiting;
      expect(next.fencingToken).toBeGreaterThan(holder.fencingToken);
      await next.release();
      expect(await master.admin.exists(stored, keys[2], keys[3])).toBe(0);
    },
  );

  it('takes a lock on keys of all three masters, one by one in sorted order, and hands it on whole', async () => {
    const prefix = `cluster:${randomUUID()}:`;
    const { masters, masterOf } = await topology();
    const keys = await Promise.all(masters.map((m, i) => keyOn(m, prefix, masterOf, `multi${i}-`)));
    const [a, b, c] = await Promise.all([open(prefix), open(prefix), open(prefix)]);
    const first = await a.acquire([keys[2]!, keys[0]!, keys[1]!], { ttl: 10_000 });
    expect([...first.keys]).toEqual([...keys].sort());
    for (const [i, master] of masters.entries()) expect(await master.admin.exists(prefix + keys[i]!)).toBe(1);
    for (const key of keys) expect(await c.tryAcquire(key)).toBeNull();

    let woke = false;
    const waiting = b.acquire(keys, { ttl: 10_000, waitTimeout: 20_000, retry: NO_POLLING }).then((l) => {
      woke = true;
      return l;
    });
    await sleep(50);
    expect(woke).toBe(false);
    await first.release();
    const second = await waiting;
    expect([...second.keys]).toEqual([...keys].sort());
    for (const key of keys) expect(await c.isLocked(key)).toBe(true);
    await second.release();
    for (const key of keys) expect(await c.isLocked(key)).toBe(false);
  });

  it('raises the fencing counter, keeps the line in order and wakes waiters by announcement, on every master', async () => {
    const prefix = `cluster:${randomUUID()}:`;
    const { masters, masterOf } = await topology();
    const waiterName = `cluster-spec-waiters-${randomUUID()}`;
    const [holderSide, waiters] = await Promise.all([open(prefix), open(prefix, waiterName)]);
    const wakeMs: number[] = [];
    for (const master of masters) {
      const key = await keyOn(master, prefix, masterOf);
      const line = lockKeyNames(prefix + key, true).keys[2];
      const holder = await holderSide.acquire(key, { ttl: 10_000 });
      const order: string[] = [];
      const wait = (who: string): Promise<Lock> =>
        waiters.acquire(key, { ttl: 10_000, waitTimeout: 20_000, retry: NO_POLLING }).then((lock) => {
          order.push(who);
          return lock;
        });
      const first = wait('first');
      await eventually('the first waiter is in line', async () => (await master.admin.zcard(line)) === 1);
      const second = wait('second');
      await eventually('the second waiter is in line', async () => (await master.admin.zcard(line)) === 2);

      const releasedAt = Date.now();
      await holder.release();
      const one = await first;
      wakeMs.push(Date.now() - releasedAt);
      expect(order).toEqual(['first']);
      await one.release();
      const two = await second;
      expect(order).toEqual(['first', 'second']);
      expect(one.fencingToken).toBeGreaterThan(holder.fencingToken);
      expect(two.fencingToken).toBeGreaterThan(one.fencingToken);
      await two.release();
    }
    // Release announcements are plain PUBLISH, which a cluster passes to every node: the waiters' one
    // subscription, on whichever node it sits, heard the releases on the other masters too.
    const subscribedOn = await Promise.all(
      admins.map(async (admin) => String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).includes(waiterName)),
    );
    expect(subscribedOn.filter(Boolean)).toHaveLength(1);
    // Far below the 60 s polling pause: woken by the release itself (generous: the machine is shared).
    expect(Math.max(...wakeMs)).toBeLessThan(5_000);
  });

  it('loads its scripts on every master, so no call meets NOSCRIPT', async () => {
    // As after a restart of every master: no script cached anywhere.
    await Promise.all(admins.map((admin) => admin.script('FLUSH')));
    const noscript = async (admin: Redis): Promise<number> => {
      const info = await admin.info('errorstats');
      return Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(info)?.[1] ?? 0);
    };
    const before = await Promise.all(admins.map(noscript));
    const prefix = `cluster:${randomUUID()}:`;
    const locks = await open(prefix);
    const shas = Object.values(scripts).map((s) => s.sha);
    await eventually('every master has every script', async () =>
      (await Promise.all(admins.map((admin) => admin.script('EXISTS', ...shas)))).every((known) =>
        (known as number[]).every((k) => k === 1),
      ),
    );
    const { masters, masterOf } = await topology();
    for (const master of masters) {
      const lock = await locks.acquire(await keyOn(master, prefix, masterOf));
      await lock.extend();
      await lock.release();
    }
    expect(await Promise.all(admins.map(noscript))).toEqual(before);
  });

  it('follows a slot moved to another master while a lock is held and a waiter waits (MOVED)', async () => {
    const prefix = `cluster:${randomUUID()}:`;
    const { masters, masterOf } = await topology();
    const from = masters[0]!;
    const to = masters[1]!;
    const key = await keyOn(from, prefix, masterOf);
    const slot = await keySlot(prefix + key);
    const [holderSide, waiterSide, other] = await Promise.all([open(prefix), open(prefix), open(prefix)]);
    const holder = await holderSide.acquire(key, { ttl: 10_000, autoExtend: false });
    let woke = false;
    const waiting = waiterSide.acquire(key, { ttl: 10_000, waitTimeout: 20_000, retry: NO_POLLING }).then((l) => {
      woke = true;
      return l;
    });
    const line = lockKeyNames(prefix + key, true).keys[2];
    await eventually('the waiter is in line', async () => (await from.admin.zcard(line)) === 1);
    try {
      await moveSlot(slot, from, to, masters);
      expect(await to.admin.exists(prefix + key, line)).toBe(2);
      // Every client still routes the slot to the old master: each call is answered MOVED and resent.
      await holder.extend();
      expect(holder.isHeld).toBe(true);
      expect(await other.tryAcquire(key)).toBeNull();
      expect(woke).toBe(false);
      await holder.release();
      const next = await waiting;
      expect(next.fencingToken).toBeGreaterThan(holder.fencingToken);
      expect(await to.admin.get(lockKeyNames(prefix + key, true).keys[1])).toBe(next.fencingToken.toString());
      await next.release();
      expect(await other.isLocked(key)).toBe(false);
    } finally {
      await moveSlot(slot, to, from, masters);
    }
  });

  it('keeps one holder at a time while the slot of a contended key moves back and forth', async () => {
    const prefix = `cluster:${randomUUID()}:`;
    const { masters, masterOf } = await topology();
    const [a, b] = [masters[0]!, masters[2]!];
    const key = await keyOn(a, prefix, masterOf);
    const slot = await keySlot(prefix + key);
    const services = await Promise.all([open(prefix), open(prefix), open(prefix)]);
    let inside = 0;
    let overlaps = 0;
    let moving = true;
    const tokens: bigint[] = [];
    const failures: string[] = [];
    const contender = async (locks: LockService): Promise<void> => {
      while (moving) {
        try {
          await locks.using(
            key,
            async (lock) => {
              if (++inside !== 1) overlaps++;
              tokens.push(lock.fencingToken);
              await sleep(1);
              inside--;
            },
            { ttl: 5_000, waitTimeout: 10_000, retry: { delay: 5, maxDelay: 20 } },
          );
        } catch (error) {
          failures.push(error instanceof Error ? error.message : String(error));
        }
      }
    };
    const running = Array.from({ length: 9 }, (_, i) => contender(services[i % 3]!));
    try {
      for (let round = 0; round < 3; round++) {
        await sleep(100);
        await moveSlot(slot, a, b, masters);
        await sleep(100);
        await moveSlot(slot, b, a, masters);
      }
    } finally {
      moving = false;
      await Promise.all(running);
    }
    // While a slot moves, the scripts are answered TRYAGAIN (their keys are partly absent on both sides) and
    // ioredis resends them after retryDelayOnTryAgain: slower, never an error within waitTimeout.
    expect(failures).toEqual([]);
    expect(overlaps).toBe(0);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    expect(tokens.length).toBeGreaterThan(20);
  });

  it('wakes a waiter whose subscription connection was replaced after its last attempt', async () => {
    // ioredis's Cluster replaces a dropped subscription connection (to the same or another node) without any
    // event: announcements sent meanwhile are lost, and the waiter must not trust that it saw them all.
    const key = `cluster:${randomUUID()}:k`;
    const name = `cluster-spec-${randomUUID()}`;
    const holderClient = clusterClient(ports);
    const waiterClient = clusterClient(ports, name);
    const holder = new RedlockBackend({ clients: [holderClient] });
    const waiter = new RedlockBackend({ clients: [waiterClient] });
    const never = new AbortController().signal;
    const attempt = (backend: RedlockBackend, owner: string) =>
      backend.acquire({ key, owner, ttl: 10_000, keepPlace: true, onLost: () => undefined, signal: never });
    const [h, w] = ['a'.repeat(32), 'b'.repeat(32)];
    try {
      await Promise.all([holder.init(never), waiter.init(never)]);
      expect(await attempt(holder, h)).toMatchObject({ acquired: true });
      expect(await attempt(waiter, w)).toMatchObject({ acquired: false, queued: true });
      // Subscribes the key's channel (it stays subscribed a while), then an attempt that knows it is.
      await waiter.waitForRelease({ key, owner: w, timeoutMs: 20, signal: never });
      expect(await attempt(waiter, w)).toMatchObject({ acquired: false, queued: true });
      const kill = await subscriptionKiller(admins, name);
      // Sent together: the release is announced while the replacement connection is still being made.
      const [killed, released] = await Promise.all([kill(), holder.release({ key, owner: h }, { signal: never })]);
      expect([killed, released]).toEqual([1, true]);
      const startedAt = Date.now();
      await waiter.waitForRelease({ key, owner: w, timeoutMs: 10_000, signal: never });
      expect(Date.now() - startedAt).toBeLessThan(2_000);
      expect(await attempt(waiter, w)).toMatchObject({ acquired: true });
      expect(await waiter.release({ key, owner: w }, { signal: never })).toBe(true);
    } finally {
      await Promise.all([holder.close(), waiter.close()]);
      await Promise.all([holderClient.quit(), waiterClient.quit()]);
    }
  });

  it('a master that stops answering fails calls on its own keys only, and serves them again when back', async () => {
    const prefix = `cluster:${randomUUID()}:`;
    const { masters, masterOf } = await topology();
    const [stalled, healthy] = [masters[1]!, masters[2]!];
    const onStalled = await keyOn(stalled, prefix, masterOf);
    const onHealthy = await keyOn(healthy, prefix, masterOf);
    const [holderSide, other] = await Promise.all([open(prefix), open(prefix)]);
    const held = await holderSide.acquire(onStalled, { ttl: 10_000, autoExtend: false });
    const pid = Number(readFileSync(join(process.env.REDIS_STATE_DIR!, 'cluster', `${stalled.port}.pid`), 'utf8'));
    // Paused for less than the cluster's node timeout (2 s): the cluster keeps it as a master, only clients wait.
    process.kill(pid, 'SIGSTOP');
    let failedAfter: number;
    try {
      const healthyLock = await other.tryAcquire(onHealthy);
      expect(healthyLock).not.toBeNull();
      await healthyLock!.release();
      const startedAt = Date.now();
      await expect(other.tryAcquire(onStalled)).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
      failedAfter = Date.now() - startedAt;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Bound by nodeTimeout (500 ms), with room for a loaded machine.
    expect(failedAfter).toBeLessThan(1_500);
    expect(await other.tryAcquire(onStalled)).toBeNull();
    expect(held.isHeld).toBe(true);
    await held.release();
    const next = await other.tryAcquire(onStalled);
    expect(next!.fencingToken).toBeGreaterThan(held.fencingToken);
    await next!.release();
  });
});

/**
 * Moves one slot and its keys between masters the way redis-cli --cluster reshard does: IMPORTING and
 * MIGRATING, MIGRATE of its keys (their ttls go along), then every master told the new owner.
 */
async function moveSlot(slot: number, from: Master, to: Master, masters: readonly Master[]): Promise<void> {
  await to.admin.cluster('SETSLOT', slot, 'IMPORTING', from.id);
  await from.admin.cluster('SETSLOT', slot, 'MIGRATING', to.id);
  for (;;) {
    const keys = (await from.admin.cluster('GETKEYSINSLOT', slot, 100)) as string[];
    if (keys.length === 0) break;
    await from.admin.migrate('127.0.0.1', to.port, '', 0, 5_000, 'KEYS', ...keys);
  }
  for (const master of [to, from, ...masters.filter((m) => m !== to && m !== from)]) {
    await master.admin.cluster('SETSLOT', slot, 'NODE', to.id);
  }
}

/** A function that closes, server side, the one pub/sub connection named `name` (found now), answering 1. */
async function subscriptionKiller(admins: readonly Redis[], name: string): Promise<() => Promise<number>> {
  for (const admin of admins) {
    const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
    const line = list.split('\n').find((l) => l.includes(`name=ioredis-cluster(subscriber):${name} `));
    const id = line && /\bid=(\d+)/.exec(line)?.[1];
    if (id) return async () => Number(await admin.call('CLIENT', 'KILL', 'ID', id));
  }
  throw new Error(`no subscription connection named ${name}`);
}
