import type Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import type { AcquireOutcome } from '../../lib/backends/lock-backend';
import type { RedlockBackend } from '../../lib/backends/redis';
import { lockKeyNames } from '../../lib/backends/redis/key-names';
import { RedisProcesses } from '../redis/support/redis-processes';
import {
  never,
  Opened,
  owner,
  request,
  timed,
  unhandledRejections,
  waitUntil,
  cleanUpAfterTests,
} from './redis-attack-support';

/**
 * Attack on the replay of the own channel (483e21c): a wait whose key channel was not subscribed since its last
 * attempt replays what its hub heard on its own channel meanwhile (sinceOwn), and init() waits for the own
 * subscriptions. Foreign or stale hand-overs in the ring, the ring wrapping, a dropped subscription between the
 * mark and the wait, a user refused the own channel, a hung node at init and close() during init.
 */
describe('attack: Redlock own-channel replay', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const paused = new Set<number>();
  const rejections = unhandledRejections();
  // Long enough that a hand-over never lapses during a test: what decides is the message, not the clock.
  const HANDOFF = 5_000;
  let ports: number[] = [];
  let admin: Redis;

  interface Hub {
    readonly own: string;
    readonly ownSeq: number;
    readonly ownSubscribed: boolean;
    readonly epoch: number;
    readonly subscriber: Redis | undefined;
  }
  const hubs = (backend: RedlockBackend): Hub[] => (backend as unknown as { hubs: Hub[] }).hubs;
  const attempts = (backend: RedlockBackend): number => (backend as unknown as { attempts: number }).attempts;
  /** Counts the scripts a backend sends, by name. */
  const countRuns = (backend: RedlockBackend): Map<string, number> => {
    const counts = new Map<string, number>();
    const nodes = (
      backend as unknown as { nodes: { run: (script: { name: string }, ...rest: unknown[]) => unknown }[] }
    ).nodes;
    for (const node of nodes) {
      const run = node.run.bind(node);
      node.run = (script, ...rest) => {
        counts.set(script.name, (counts.get(script.name) ?? 0) + 1);
        return run(script, ...rest);
      };
    }
    return counts;
  };
  const ownReady = (backend: RedlockBackend): Promise<void> =>
    waitUntil('the own channel is subscribed', () => hubs(backend).every((hub) => hub.ownSubscribed));
  const channelOf = (key: string): string => lockKeyNames(key, false).channel;
  const provisional = (outcome: AcquireOutcome): number | undefined =>
    outcome.acquired ? outcome.provisionalForMs : undefined;

  beforeAll(async () => {
    ports = await servers.start(3);
  }, 30_000);
  beforeEach(() => {
    admin = opened.client(ports[0]!);
  });
  cleanUpAfterTests(servers, opened, paused, rejections);

  /** A holder backend holding `key`, and a waiter backend with `waiters` owners queued on it (in that order). */
  async function queued(key: string, waiters: number) {
    const holderBackend = opened.backendOn([ports[0]!], { handoffTimeout: HANDOFF });
    const backend = opened.backendOn([ports[0]!], { handoffTimeout: HANDOFF });
    await Promise.all([holderBackend.init(never), backend.init(never)]);
    await ownReady(backend);
    const holder = owner();
    expect((await holderBackend.acquire(request(key, holder))).acquired).toBe(true);
    const owners = Array.from({ length: waiters }, () => owner());
    for (const who of owners) {
      expect(await backend.acquire(request(key, who, true))).toMatchObject({ acquired: false, queued: true });
    }
    const release = () => holderBackend.release({ key, owner: holder }, { signal: never });
    return { backend, holder, owners, release, hub: hubs(backend)[0]! };
  }

  it("a hand-over to another owner of the same process, in the ring, is not taken by this owner's wait", async () => {
    const key = `foreign:${randomUUID()}`;
    const { backend, owners, release, hub } = await queued(key, 2);
    const [first, second] = owners as [string, string];
    const told = hub.ownSeq;
    expect(await release()).toBe(true);
    // '=first …' to the first, and the offer to first told to the second: both on the process's own channel.
    await waitUntil('both messages are heard', () => hub.ownSeq >= told + 2);
    expect(await admin.get(key)).toBe(first);
    await backend.waitForRelease({ key, owner: second, timeoutMs: 200, signal: never });
    const stolen = await backend.acquire(request(key, second, true));
    expect(stolen.acquired).toBe(false);
    // The one it was handed to takes it from the replay, without asking Redis.
    const runs = countRuns(backend);
    const waited = await timed(() => backend.waitForRelease({ key, owner: first, timeoutMs: 10_000, signal: never }));
    expect(waited.ms).toBeLessThan(5_000);
    const got = await backend.acquire(request(key, first, true));
    expect(got.acquired).toBe(true);
    expect(provisional(got)).toBeGreaterThan(0);
    expect(runs.get('acquire') ?? 0).toBe(0);
    expect(await admin.get(key)).toBe(first);
  });

  it("an earlier attempt's hand-over replayed after a later attempt is not trusted", async () => {
    const key = `stale:${randomUUID()}`;
    const { backend, holder, owners, hub } = await queued(key, 1);
    const [waiter] = owners as [string];
    const earlier = attempts(backend);
    // A later refused attempt: its mark is what the wait replays from.
    expect(await backend.acquire(request(key, waiter, true))).toMatchObject({ acquired: false, queued: true });
    expect(attempts(backend)).toBeGreaterThan(earlier);
    const told = hub.ownSeq;
    // A hand-over naming the earlier attempt, heard only now (late delivery of one that lapsed).
    await admin.publish(hub.own, `${channelOf(key)}\u0000=${waiter} 12345 ${earlier} ${HANDOFF}`);
    await waitUntil('it is heard', () => hub.ownSeq === told + 1);
    // The replay wakes the wait (nothing else would before its timeout)...
    const waited = await timed(() => backend.waitForRelease({ key, owner: waiter, timeoutMs: 10_000, signal: never }));
    expect(waited.ms).toBeLessThan(5_000);
    // ...but the key is not taken on its word: the attempt asks Redis, which still has the holder.
    const outcome = await backend.acquire(request(key, waiter, true));
    expect(outcome.acquired).toBe(false);
    expect(await admin.get(key)).toBe(holder);
  });

  it.each([
    [63, true],
    [64, false],
  ])(
    'the ring: a hand-over followed by %i other own messages before the wait is replayed: %s (else a fresh attempt, one holder)',
    async (others, replayed) => {
      const key = `ring:${randomUUID()}`;
      const { backend, owners, release, hub } = await queued(key, 1);
      const [waiter] = owners as [string];
      const told = hub.ownSeq;
      expect(await release()).toBe(true);
      await waitUntil('the hand-over is heard', () => hub.ownSeq === told + 1);
      // Other keys' messages to this process's waiters (many keys, many waiters in one process).
      for (let i = 0; i < others; i++) await admin.publish(hub.own, `other\u0000chan${i}\u0000+x`);
      await waitUntil('the others are heard', () => hub.ownSeq === told + 1 + others);
      const runs = countRuns(backend);
      const waited = await timed(() =>
        backend.waitForRelease({ key, owner: waiter, timeoutMs: 10_000, signal: never }),
      );
      // Replayed, or the nodes are asked: the waiter's place is gone (handed the key), so it tries again at once.
      expect(waited.ms).toBeLessThan(5_000);
      const outcome = await backend.acquire(request(key, waiter, true));
      expect(outcome.acquired).toBe(true);
      expect(provisional(outcome) !== undefined).toBe(replayed);
      expect((runs.get('acquire') ?? 0) > 0).toBe(!replayed);
      expect(await admin.get(key)).toBe(waiter);
      expect(await admin.pttl(key)).toBeGreaterThan(replayed ? 0 : HANDOFF);
    },
  );

  it('a subscription connection dropped between the attempt and the wait: what came after is not replayed on trust', async () => {
    const key = `epoch:${randomUUID()}`;
    const { backend, owners, release, hub } = await queued(key, 1);
    const [waiter] = owners as [string];
    const epoch = hub.epoch;
    const local = hub.subscriber!.stream.localPort;
    // Killed by the server, as a proxy or a failover would: ioredis reconnects and resubscribes.
    expect(await admin.client('KILL', 'ADDR', `127.0.0.1:${local}`)).toBe(1);
    await waitUntil('it is back', () => hub.epoch > epoch && hub.ownSubscribed && hub.subscriber?.status === 'ready');
    await waitUntil('the own channel is subscribed again', async () => {
      const [, listeners] = (await admin.pubsub('NUMSUB', hub.own)) as [string, number];
      return listeners === 1;
    });
    const told = hub.ownSeq;
    expect(await release()).toBe(true);
    await waitUntil('the hand-over is heard', () => hub.ownSeq === told + 1);
    const runs = countRuns(backend);
    const waited = await timed(() => backend.waitForRelease({ key, owner: waiter, timeoutMs: 10_000, signal: never }));
    expect(waited.ms).toBeLessThan(5_000);
    const outcome = await backend.acquire(request(key, waiter, true));
    expect(outcome.acquired).toBe(true);
    // Asked Redis: the mark's epoch is gone.
    expect(provisional(outcome)).toBeUndefined();
    expect(runs.get('acquire')).toBe(1);
    expect(await admin.get(key)).toBe(waiter);
  });

  it('a user refused the own channel (&app:* only): init does not wait for it, and waits still hand the lock on', async () => {
    const prefix = `acl${randomUUID().slice(0, 8)}:`;
    const user = `locker-${randomUUID().slice(0, 8)}`;
    await admin.acl('SETUSER', user, 'on', '>secret', `~${prefix}*`, `&${prefix}*`, '+@all', '-@dangerous');
    try {
      const make = async () => {
        const client = opened.client(ports[0]!, { username: user, password: 'secret', enableReadyCheck: false });
        const backend = opened.backend({ clients: [client], handoffTimeout: 100, nodeTimeout: 4_000 });
        const init = await timed(() => backend.init(never));
        expect(init.error).toBeUndefined();
        expect(init.ms).toBeLessThan(2_000);
        return backend;
      };
      const [holderBackend, backend] = [await make(), await make()];
      expect(hubs(backend)[0]!.ownSubscribed).toBe(false);
      const key = `${prefix}k`;
      const holder = owner();
      const waiter = owner();
      expect((await holderBackend.acquire(request(key, holder))).acquired).toBe(true);
      expect((await backend.acquire(request(key, waiter, true))).acquired).toBe(false);
      const waiting = timed(() => backend.waitForRelease({ key, owner: waiter, timeoutMs: 10_000, signal: never }));
      await waitUntil('the key channel is subscribed', async () => {
        const [, listeners] = (await admin.pubsub('NUMSUB', channelOf(key))) as [string, number];
        return listeners >= 1;
      });
      expect(await holderBackend.release({ key, owner: holder }, { signal: never })).toBe(true);
      expect((await waiting).ms).toBeLessThan(5_000);
      expect((await backend.acquire(request(key, waiter, true))).acquired).toBe(true);
    } finally {
      await opened.closeAll();
      await opened.client(ports[0]!).acl('DELUSER', user);
    }
  });

  it('init with 1 of 3 nodes hung takes about nodeTimeout, not twice', async () => {
    const NODE_TIMEOUT = 1_500;
    servers.pause(ports[2]!);
    paused.add(ports[2]!);
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT, handoffTimeout: 100 });
    const init = await timed(() => backend.init(never));
    expect(init.error).toBeUndefined();
    // Before 483e21c: the quorum, then nodeTimeout for the hung node's check. The wait for its own channel comes
    // on top of that.
    expect(init.ms).toBeLessThan(NODE_TIMEOUT + 700);
  }, 15_000);

  it("close() during init's wait for a hung node's own channel: both settle at once", async () => {
    const NODE_TIMEOUT = 4_000;
    servers.pause(ports[2]!);
    paused.add(ports[2]!);
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT, handoffTimeout: 100 });
    const init = timed(() => backend.init(never));
    // The hubs are started after the checks: the hung node's subscription connection is then waited for.
    await waitUntil('the hubs are started', () => hubs(backend).every((hub) => hub.subscriber !== undefined), 10_000);
    const closedAt = performance.now();
    const close = await timed(() => backend.close());
    expect(close.error).toBeUndefined();
    expect(close.ms).toBeLessThan(1_500);
    await init;
    // Not cut short by close() (ioredis ends the hung connection after its own 2 s), but within nodeTimeout.
    expect(performance.now() - closedAt).toBeLessThan(NODE_TIMEOUT);
    expect(hubs(backend).every((hub) => hub.subscriber === undefined)).toBe(true);
    await expect(backend.acquire(request(`after-close:${randomUUID()}`, owner()))).rejects.toThrow();
  }, 15_000);

  it('a hand-over heard after the wait listens finishes the wait once, and is taken once', async () => {
    const key = `live:${randomUUID()}`;
    const { backend, owners, release, hub } = await queued(key, 1);
    const [waiter] = owners as [string];
    let finished = 0;
    const waiting = backend
      .waitForRelease({ key, owner: waiter, timeoutMs: 10_000, signal: never })
      .then(() => finished++);
    await waitUntil('the key channel is subscribed', async () => {
      const [, listeners] = (await admin.pubsub('NUMSUB', channelOf(key))) as [string, number];
      return listeners === 1;
    });
    const told = hub.ownSeq;
    expect(await release()).toBe(true);
    await waiting;
    expect(hub.ownSeq).toBe(told + 1);
    const runs = countRuns(backend);
    const outcome = await backend.acquire(request(key, waiter, true));
    expect(provisional(outcome)).toBeGreaterThan(0);
    expect(runs.get('acquire') ?? 0).toBe(0);
    // A second wait on the same key (the key channel now subscribed, the same message in the ring) is not woken by
    // it again: the place was spent.
    const again = await timed(() => backend.waitForRelease({ key, owner: waiter, timeoutMs: 300, signal: never }));
    expect(again.ms).toBeGreaterThanOrEqual(250);
    expect(finished).toBe(1);
  });
});
