import type Redis from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { LockError } from '../../lib';
import { lockKeyNames } from '../../lib/backends/redis/key-names';
import { scripts } from '../../lib/backends/redis/scripts';
import { clusterClient, redisClusterPorts } from '../redis/support/redis-env';
import { RedisProcesses } from '../redis/support/redis-processes';
import {
  never,
  Opened,
  owner,
  sleep,
  timed,
  unhandledRejections,
  waitUntil,
  cleanUpAfterTests,
} from './redis-attack-support';

/**
 * Attack on the per-process wake-up channels (a release tells the waiter whose turn it is on its own process's
 * channel, and the next two in line): restricted ACL users, dead waiters in line, the subscription connection
 * killed under contention, places of an earlier version, a line that differs between Redlock nodes, a Redis
 * Cluster, and an acquire cancelled while nodes hang. Waiters here poll every 60 s: only the line and its
 * messages can move the lock on in time.
 */
describe('attack: Redlock wake-up channels', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const paused = new Set<number>();
  const rejections = unhandledRejections();
  const HANDOFF = 100;
  const SLOW_POLL = { delay: 60_000, maxDelay: 60_000 };
  let ports: number[] = [];
  let admins: Redis[] = [];
  const line = (port: number, key: string): Promise<string[]> =>
    admins[ports.indexOf(port)]!.zrange(lockKeyNames(key, false).keys[2], 0, -1);

  beforeAll(async () => {
    ports = await servers.start(5);
  }, 30_000);
  beforeEach(() => {
    admins = ports.map((p) => opened.client(p));
  });
  cleanUpAfterTests(servers, opened, paused, rejections);

  const serviceOn = async (nodes: readonly number[], extra: { nodeTimeout?: number } = {}) => {
    const backend = opened.backendOn(nodes, { handoffTimeout: HANDOFF, ...extra });
    await backend.init(never);
    return { backend, locks: opened.service({ backends: { default: backend } }) };
  };

  /** Runs `rounds` using() calls per service on one key; counts overlaps; every hand-off must come from a message. */
  async function contend(
    services: { locks: ReturnType<Opened['service']> }[],
    key: string,
    rounds: number,
    waitTimeout = 20_000,
  ) {
    let inside = 0;
    let overlaps = 0;
    const errors: unknown[] = [];
    await Promise.all(
      services.map(async ({ locks }) => {
        for (let round = 0; round < rounds; round++) {
          await locks
            .using(
              key,
              async () => {
                if (++inside !== 1) overlaps++;
                await sleep(2);
                inside--;
              },
              { ttl: 10_000, waitTimeout, retry: SLOW_POLL },
            )
            .catch((e: unknown) => void errors.push(e));
        }
      }),
    );
    return { overlaps, errors };
  }

  /** A user of node 0 with `channels` (ACL selectors), and a backend-and-service maker on it. */
  async function aclUser(channels: string, prefix: string, clientOptions: RedisOptions = {}) {
    const user = `locker-${randomUUID().slice(0, 8)}`;
    await admins[0]!.acl('SETUSER', user, 'on', '>secret', `~${prefix}*`, channels, '+@all', '-@dangerous');
    const make = async () => {
      const client = opened.client(ports[0]!, {
        username: user,
        password: 'secret',
        enableReadyCheck: false,
        ...clientOptions,
      });
      const backend = opened.backend({ clients: [client], handoffTimeout: HANDOFF });
      await backend.init(never);
      return { backend, locks: opened.service({ backends: { default: backend } }) };
    };
    const remove = async (): Promise<void> => {
      await opened.closeAll();
      await opened.client(ports[0]!).acl('DELUSER', user);
    };
    return { make, remove };
  }

  it('a Redis user allowed only its own prefix of keys and channels (~app:* &app:*) can still hand a lock to a waiter', async () => {
    // Before per-process channels every channel the backend used was "<key> NUL released", inside the user's
    // prefix. The own channel "nestjs-distributed-lock NUL wake NUL <uuid>" is not: a script's PUBLISH to it fails
    // (after the script's writes: the release deleted the key, then reports failure), and SUBSCRIBE to it is refused.
    const prefix = `acl${randomUUID().slice(0, 8)}:`;
    const acl = await aclUser(`&${prefix}*`, prefix);
    try {
      const holder = await acl.make();
      const waiter = await acl.make();
      const key = `${prefix}k`;
      const held = await holder.locks.acquire(key, { ttl: 10_000 });
      const waiting = timed(() => waiter.locks.acquire(key, { ttl: 10_000, waitTimeout: 3_000, retry: SLOW_POLL }));
      await waitUntil('the waiter is in line', async () => (await line(ports[0]!, key)).length === 1);
      await sleep(50);
      const releasedAt = Date.now();
      expect((await timed(() => held.release())).error).toBeUndefined();
      const { error, value } = await waiting;
      expect(error).toBeUndefined();
      expect(Date.now() - releasedAt).toBeLessThan(HANDOFF + 400);
      await value?.release();
    } finally {
      await acl.remove();
    }
  }, 15_000);

  it('a restricted user (~app:* &app:*): a line of waiters in several services is handed on in turn, without errors', async () => {
    // The first in line taking the key tells the next '+owner' on its own channel: refused for this user, the
    // script fails after taking the waiter out of line, and every later attempt fails the same way.
    const prefix = `acl${randomUUID().slice(0, 8)}:`;
    const acl = await aclUser(`&${prefix}*`, prefix);
    try {
      const services = await Promise.all([1, 2, 3, 4].map(() => acl.make()));
      const { ms, value } = await timed(() => contend(services, `${prefix}line`, 3, 3_000));
      expect(value!.errors).toEqual([]);
      expect(value!.overlaps).toBe(0);
      expect(ms).toBeLessThan(5_000);
    } finally {
      await acl.remove();
    }
  }, 30_000);

  it("users of different rights on one node: a restricted user's release still hands the key to an unrestricted user's waiter", async () => {
    const prefix = `acl${randomUUID().slice(0, 8)}:`;
    const restricted = await aclUser(`&${prefix}*`, prefix);
    const free = await aclUser('&*', prefix);
    try {
      const holder = await restricted.make();
      const waiter = await free.make();
      const key = `${prefix}mixed`;
      const held = await holder.locks.acquire(key, { ttl: 10_000 });
      const waiting = timed(() => waiter.locks.acquire(key, { ttl: 10_000, waitTimeout: 3_000, retry: SLOW_POLL }));
      await waitUntil('the waiter is in line', async () => (await line(ports[0]!, key)).length === 1);
      await sleep(50);
      const releasedAt = Date.now();
      expect((await timed(() => held.release())).error).toBeUndefined();
      const { error, value } = await waiting;
      expect(error).toBeUndefined();
      expect(Date.now() - releasedAt).toBeLessThan(HANDOFF + 400);
      await value?.release();
    } finally {
      await restricted.remove();
      await free.remove();
    }
  }, 15_000);

  it.each([
    ['ioredis defaults', {}],
    ['a client with autoResubscribe off', { autoResubscribe: false }],
  ])(
    'a restricted user (&app:*), the subscription connection killed (CLIENT KILL TYPE pubsub) while a waiter waits: it is still woken (%s)',
    async (_, clientOptions) => {
      // After a drop the hub subscribes its own channel and the keys' channels again in one SUBSCRIBE: refused as
      // a whole for this user, so the keys' channels are not confirmed and the waiters are not woken to look again.
      const prefix = `acl${randomUUID().slice(0, 8)}:`;
      const acl = await aclUser(`&${prefix}*`, prefix, clientOptions);
      try {
        const holder = await acl.make();
        const waiter = await acl.make();
        const key = `${prefix}pubsub-kill`;
        const held = await holder.locks.acquire(key, { ttl: 10_000 });
        const waiting = timed(() => waiter.locks.acquire(key, { waitTimeout: 4_000, retry: SLOW_POLL }));
        await waitUntil('the waiter is in line', async () => (await line(ports[0]!, key)).length === 1);
        await sleep(50);
        expect(await admins[0]!.client('KILL', 'TYPE', 'pubsub')).toBeGreaterThanOrEqual(1);
        await sleep(200); // reconnected (retry after 50 ms) by now
        const releasedAt = Date.now();
        await held.release();
        const { error, value } = await waiting;
        expect(error).toBeUndefined();
        expect(Date.now() - releasedAt).toBeLessThan(1_000);
        await value?.release();
      } finally {
        await acl.remove();
      }
    },
    15_000,
  );

  /** A child process waiting in line on `key` through its own backend on `port`. */
  function waiterChild(port: number, key: string): ChildProcess {
    return spawn(process.execPath, [join(__dirname, 'redis-waiter-child.js'), String(port), key], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  }
  const killed = (child: ChildProcess): Promise<void> => {
    child.kill('SIGKILL');
    return new Promise((resolve) =>
      child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
    );
  };

  it.each([
    [1, [0]],
    [2, [0, 1]],
    [2, [0, 2]],
    [2, [1, 2]],
  ])(
    'waiters killed (SIGKILL) in line: %i dead at positions %j, the live ones still get the key in turn, each within about handoffTimeout per dead place',
    async (deadCount, deadAt) => {
      const [port] = ports;
      const key = `dead-line:${randomUUID()}`;
      const holder = await serviceOn([port!]);
      const held = await holder.locks.acquire(key, { ttl: 10_000 });
      const children: ChildProcess[] = [];
      const live: { locks: ReturnType<Opened['service']> }[] = [];
      const gotAt: number[] = [];
      const waits: Promise<unknown>[] = [];
      try {
        // Positions 0..3: children where deadAt says (to be killed), services of this process elsewhere.
        for (let position = 0; position < 4; position++) {
          if (deadAt.includes(position)) {
            children.push(waiterChild(port!, key));
          } else {
            const s = await serviceOn([port!]);
            live.push(s);
            waits.push(
              s.locks
                .using(key, async () => void gotAt.push(Date.now()), {
                  ttl: 10_000,
                  waitTimeout: 8_000,
                  retry: SLOW_POLL,
                })
                .catch((e: unknown) => e),
            );
          }
          await waitUntil('it is in line', async () => (await line(port!, key)).length === position + 1, 10_000);
        }
        await Promise.all(children.map(killed));
        const releasedAt = Date.now();
        await held.release();
        const results = await Promise.all(waits);
        for (const r of results) expect(r).toBeUndefined();
        const tookMs = Math.max(...gotAt) - releasedAt;
        console.log(
          `dead at ${JSON.stringify(deadAt)}: the last live waiter got the key ${tookMs} ms after the release`,
        );
        expect(tookMs).toBeLessThan(deadCount * HANDOFF + 600);
      } finally {
        await Promise.all(children.map(killed));
      }
    },
    30_000,
  );

  it('the subscription connections killed (CLIENT KILL TYPE pubsub) again and again under contention on 5 nodes: no overlap, nobody stalls', async () => {
    const services = await Promise.all(Array.from({ length: 5 }, () => serviceOn(ports)));
    const key = `pubsub-churn:${randomUUID()}`;
    let stop = false;
    const killer = (async () => {
      let round = 0;
      while (!stop) {
        await sleep(37 + (round % 5) * 11);
        // Alternate: all five nodes at once, or two (a minority), or three (a majority).
        const which = round % 3 === 0 ? admins : round % 3 === 1 ? admins.slice(0, 2) : admins.slice(2);
        await Promise.all(which.map((a) => a.client('KILL', 'TYPE', 'pubsub').catch(() => 0)));
        round++;
      }
    })();
    const { ms, value } = await timed(() => contend(services, key, 8));
    stop = true;
    await killer;
    expect(value!.errors).toEqual([]);
    expect(value!.overlaps).toBe(0);
    console.log(`5 services x 8 rounds with pubsub connections killed throughout: ${ms.toFixed(0)} ms`);
    expect(ms).toBeLessThan(15_000);
  }, 40_000);

  it("an earlier version's place (no channel of its own) first in line and gone: the new waiter behind it gets the key within about handoffTimeout", async () => {
    const [port] = ports;
    const key = `old-place:${randomUUID()}`;
    const names = lockKeyNames(key, false);
    const holder = await serviceOn([port!]);
    const waiter = await serviceOn([port!]);
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    // As an earlier version joined the line: 7 arguments, no own channel.
    const old = owner();
    const args = [old, 10_000, '1', String(Date.now() * 1000), 60_000, HANDOFF, names.channel];
    expect(await admins[0]!.eval(scripts.acquire.source, 4, ...names.keys, ...args)).toEqual([0, expect.any(Number)]);
    expect(await admins[0]!.hkeys(names.keys[3])).toEqual([old]);
    const waiting = timed(() => waiter.locks.acquire(key, { ttl: 10_000, waitTimeout: 3_000, retry: SLOW_POLL }));
    await waitUntil('the waiter is in line behind it', async () => (await line(port!, key)).length === 2);
    await sleep(50);
    const releasedAt = Date.now();
    await held.release();
    const { error, value } = await waiting;
    expect(error).toBeUndefined();
    expect(Date.now() - releasedAt).toBeLessThan(HANDOFF + 400);
    await value!.release();
  }, 15_000);

  it('5 nodes, lines that differ: a waiter missing from 2 nodes, another first there, both get the key in time and never together', async () => {
    const holder = await serviceOn(ports);
    const a = await serviceOn(ports);
    const b = await serviceOn(ports);
    const key = `differing-lines:${randomUUID()}`;
    const names = lockKeyNames(key, false);
    const held = await holder.locks.acquire(key, { ttl: 10_000 });
    let inside = 0;
    let overlaps = 0;
    const run = (locks: ReturnType<Opened['service']>) =>
      timed(() =>
        locks.using(
          key,
          async () => {
            if (++inside !== 1) overlaps++;
            await sleep(20);
            inside--;
          },
          { ttl: 10_000, waitTimeout: 5_000, retry: SLOW_POLL },
        ),
      );
    const first = run(a.locks);
    await waitUntil('a is in line', async () => (await line(ports[0]!, key)).length === 1);
    const second = run(b.locks);
    await waitUntil('b is in line', async () => (await line(ports[0]!, key)).length === 2);
    // a's place goes from nodes 0 and 1 (as if its join never reached them): there b is first.
    const [aOwner] = await line(ports[0]!, key);
    for (const admin of admins.slice(0, 2)) {
      await admin.zrem(names.keys[2], aOwner!);
      await admin.hdel(names.keys[3], aOwner!, `${aOwner}\u0000c`);
    }
    await sleep(50);
    const releasedAt = Date.now();
    await held.release();
    const results = await Promise.all([first, second]);
    for (const r of results) expect(r.error).toBeUndefined();
    expect(overlaps).toBe(0);
    expect(Date.now() - releasedAt).toBeLessThan(2 * HANDOFF + 600);
  }, 15_000);

  it('Redis Cluster: a line of waiters in several processes is handed on by messages (60 s polling pause), 0 overlaps', async () => {
    const clusterPorts = redisClusterPorts();
    const services = Array.from({ length: 4 }, () => {
      const cluster = clusterClient(clusterPorts);
      const backend = opened.backend({ clients: [cluster], handoffTimeout: HANDOFF });
      return { backend, cluster, locks: opened.service({ backends: { default: backend } }) };
    });
    try {
      await Promise.all(services.map((s) => s.backend.init(never)));
      for (const suffix of ['a', 'b{x}', '}{', 'ünï cødé ✓']) {
        const key = `cluster-wake:${randomUUID()}:${suffix}`;
        const { ms, value } = await timed(() => contend(services, key, 5));
        expect(value!.errors).toEqual([]);
        expect(value!.overlaps).toBe(0);
        expect(ms).toBeLessThan(8_000);
      }
    } finally {
      await Promise.all(services.map((s) => s.locks.close()));
      await Promise.all(services.map((s) => s.backend.close()));
      await Promise.all(services.map((s) => s.cluster.quit().catch(() => s.cluster.disconnect())));
    }
  }, 60_000);

  it('an acquire cancelled (AbortSignal) while 3 of 5 nodes hang returns at once, and once they answer again nothing is left held', async () => {
    const NODE_TIMEOUT = 300;
    const { locks } = await serviceOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const other = await serviceOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const key = `cancel-hung:${randomUUID()}`;
    for (const p of ports.slice(2)) {
      servers.pause(p);
      paused.add(p);
    }
    const controller = new AbortController();
    const call = timed(() => locks.acquire(key, { ttl: 5_000, waitTimeout: 2_000, signal: controller.signal }));
    await sleep(50);
    controller.abort(new Error('caller left'));
    const { ms, error } = await call;
    expect(error).toBeDefined();
    expect(ms).toBeLessThan(200);
    // The backend's own call ends by nodeTimeout; nothing of it may be held on the live nodes afterwards.
    await sleep(NODE_TIMEOUT + 100);
    for (const admin of admins.slice(0, 2)) expect(await admin.get(key)).toBeNull();
    for (const p of paused) servers.resume(p);
    paused.clear();
    await waitUntil(
      'the key is free on every node',
      async () => (await Promise.all(admins.map((a) => a.exists(key)))).every((n) => n === 0),
      3_000,
    );
    for (const admin of admins) expect(await admin.zcard(lockKeyNames(key, false).keys[2])).toBe(0);
    const lock = await other.locks.acquire(key, { ttl: 5_000 });
    await lock.release();
  }, 15_000);

  it('LockService.close() while 3 of 5 nodes hang under an acquire in flight: close ends within its bounds, and nothing is held once the nodes answer', async () => {
    const NODE_TIMEOUT = 300;
    const { locks } = await serviceOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const other = await serviceOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const key = `close-hung:${randomUUID()}`;
    const held = await other.locks.acquire(key, { ttl: 10_000 });
    const call = timed(() => locks.acquire(key, { ttl: 5_000, waitTimeout: 5_000 }));
    await waitUntil('in line', async () => (await line(ports[0]!, key)).length === 1);
    for (const p of ports.slice(2)) {
      servers.pause(p);
      paused.add(p);
    }
    const closed = await timed(() => locks.close());
    expect(closed.ms).toBeLessThan(NODE_TIMEOUT + 1_500);
    const { error } = await call;
    expect(error).toBeInstanceOf(LockError);
    for (const p of paused) servers.resume(p);
    paused.clear();
    await held.release();
    await waitUntil(
      'the line is empty on every node',
      async () =>
        (await Promise.all(admins.map((a) => a.zcard(lockKeyNames(key, false).keys[2])))).every((n) => n === 0),
      3_000,
    );
    const lock = await other.locks.acquire(key, { ttl: 5_000 });
    await lock.release();
  }, 20_000);
});
