import type Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { LockBackendError, LockError, LockUnavailableError, type LockEvent, type LockService } from '../../lib';
import type { RedlockBackend } from '../../lib/backends/redis';
import { scripts } from '../../lib/backends/redis/scripts';
import { RedisProcesses } from '../redis/support/redis-processes';
import {
  never,
  Opened,
  owner,
  request,
  sleep,
  TcpLink,
  timed,
  unhandledRejections,
  waitUntil,
} from './redis-attack-support';

/**
 * Connections that drop, nodes that come back empty or without their scripts, and clients and backends closed
 * by their owner at awkward moments: the lock must be reported lost before anyone else can hold it, nothing
 * may be left held by nobody, and no call may hang or crash the process.
 */
describe('attack: Redlock connections and lifecycles', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const links: TcpLink[] = [];
  const rejections = unhandledRejections();
  const NODE_TIMEOUT = 250;
  let ports: number[] = [];
  let admins: Redis[] = [];

  const link = async (port: number): Promise<TcpLink> => {
    const l = await TcpLink.open(port);
    links.push(l);
    return l;
  };
  /** Connections the server has, other than the test's own admin connection. */
  const connectionsOn = async (admin: Redis): Promise<number> =>
    String(await admin.client('LIST'))
      .split('\n')
      .filter((l) => l.trim() !== '').length - 1;

  beforeAll(async () => {
    ports = await servers.start(3);
  }, 30_000);
  beforeEach(() => {
    admins = ports.map((p) => opened.client(p));
  });
  afterEach(async () => {
    await opened.closeAll();
    await Promise.all(links.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    rejections.stop();
    await servers.stopAll();
    expect(rejections.seen).toEqual([]);
  });

  describe.each([
    ['1 node, its link black-holed', 1, 'hold'],
    ['1 node, its link reset and refused', 1, 'refuse'],
    ['3 nodes, 2 links black-holed', 3, 'hold'],
  ] as const)('a holder cut off from the store (%s)', (setting, nodes, how) => {
    it('knows it lost the lock (signal, onLost, event) before another owner can take it', async () => {
      const cutOff = await Promise.all(ports.slice(0, nodes).map((p) => link(p)));
      const holderBackend = opened.backend({
        clients: cutOff.map((l) => opened.client(l.port)),
        nodeTimeout: NODE_TIMEOUT,
      });
      const holder = opened.service({ backends: { default: holderBackend }, operationTimeout: 1_000 });
      const other = opened.service({ backends: { default: opened.backendOn(ports.slice(0, nodes)) } });
      const key = `cut-off:${randomUUID()}`;
      const ttl = 900;
      let lostAt = 0;
      let onLostAt = 0;
      let abortedAt = 0;
      let token = 0n;
      holder.events$.subscribe((e: LockEvent) => void (e.type === 'lost' && (lostAt = Date.now())));
      let cut: () => void = () => undefined;
      const isCut = new Promise<void>((resolve) => (cut = resolve));
      const work = holder.using(
        key,
        async (lock) => {
          token = lock.fencingToken;
          lock.signal.addEventListener('abort', () => (abortedAt = Date.now()));
          const victims = nodes === 1 ? cutOff : cutOff.slice(0, 2);
          for (const l of victims) {
            if (how === 'hold') l.hold();
            else {
              l.refuse();
              l.cut();
            }
          }
          cut();
          await new Promise<void>((resolve) => lock.signal.addEventListener('abort', () => resolve()));
        },
        { ttl, onLost: () => void (onLostAt = Date.now()) },
      );
      await isCut;
      // The other owner tries every 10 ms until it holds the key (the holder's ttl must run out first).
      let takenAt = 0;
      let next: Awaited<ReturnType<LockService['acquire']>> | undefined;
      while (!next) {
        next = await other.acquire(key, { ttl: 5_000 }).catch(() => undefined);
        takenAt = Date.now();
        if (!next) await sleep(10);
      }
      await work;
      console.log(`cut off (${setting}): lost ${takenAt - lostAt} ms before another owner took the key`);
      expect(lostAt).toBeGreaterThan(0);
      expect(onLostAt).toBeGreaterThan(0);
      expect(abortedAt).toBeGreaterThan(0);
      expect(lostAt).toBeLessThanOrEqual(takenAt);
      expect(abortedAt).toBeLessThanOrEqual(takenAt);
      expect(next.fencingToken).toBeGreaterThan(token);
      await next.release();
    }, 10_000);
  });

  it('an acquire whose connection drops before its answer leaves nothing held once the node is reachable again', async () => {
    const flaky = await link(ports[0]!);
    const client = opened.client(flaky.port);
    const backend = opened.backend({ clients: [client], nodeTimeout: NODE_TIMEOUT });
    await backend.init(never);
    const locks = opened.service({ backends: { default: backend } });
    const key = `resent:${randomUUID()}`;
    flaky.hold();
    const attempt = timed(() => locks.acquire(key, { ttl: 10_000 }));
    await sleep(20);
    flaky.refuse(); // the client reconnects only once the attempt and its give-back have failed
    flaky.cut();
    expect((await attempt).error).toBeInstanceOf(LockBackendError);
    await sleep(NODE_TIMEOUT);
    flaky.pass();
    // ioredis sends the unanswered acquire again on the new connection: it must not leave the key held by nobody.
    await waitUntil('the client is back', () => client.status === 'ready', 2_000);
    await sleep(100);
    expect(await admins[0]!.get(key)).toBeNull();
    const lock = await locks.acquire(key, { ttl: 10_000 });
    await lock.release();
  });

  it('a node restarted empty while a lock is held on 3: the holder keeps it through extensions, nobody else gets it', async () => {
    const a = opened.service({ backends: { default: opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }) } });
    const b = opened.service({ backends: { default: opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }) } });
    const key = `restarted:${randomUUID()}`;
    let lost = 0;
    a.events$.subscribe((e: LockEvent) => void (e.type === 'lost' && lost++));
    const lock = await a.acquire(key, { ttl: 600, autoExtend: true });
    await servers.stop(ports[1]!);
    await servers.restart(ports[1]!);
    await sleep(1_000); // five extensions, some while the node reconnects
    expect(lost).toBe(0);
    expect(lock.isHeld).toBe(true);
    expect((await timed(() => b.acquire(key))).error).toBeInstanceOf(LockUnavailableError);
    await lock.release();
    const next = await b.acquire(key, { waitTimeout: 2_000 });
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    await next.release();
  });

  it('the only node restarted empty under a holder: it learns at its next extension that the lock is gone', async () => {
    const locks = opened.service({
      backends: { default: opened.backendOn([ports[2]!], { nodeTimeout: NODE_TIMEOUT }) },
    });
    const key = `single-restart:${randomUUID()}`;
    const lock = await locks.acquire(key, { ttl: 900, autoExtend: true });
    let lostAt = 0;
    lock.signal.addEventListener('abort', () => (lostAt = Date.now()));
    await servers.stop(ports[2]!);
    await servers.restart(ports[2]!);
    const backAt = Date.now();
    await waitUntil('the loss is reported', () => lostAt > 0, 2_000);
    // One extension every ttl/3 (300 ms), plus the client's reconnection (50 ms).
    expect(lostAt - backAt).toBeLessThan(300 + 300);
    await lock.release().catch(() => undefined);
  });

  it('a node that refuses writes (maxmemory reached, or turned into a read-only replica): LockBackendError with what Redis said', async () => {
    const port = ports[2]!;
    const admin = admins[2]!;
    const locks = opened.service({ backends: { default: opened.backendOn([port], { nodeTimeout: NODE_TIMEOUT }) } });
    const causeOf = async (): Promise<string> => {
      const { error } = await timed(() => locks.acquire(`refused:${randomUUID()}`));
      expect(error).toBeInstanceOf(LockBackendError);
      return String((error as LockBackendError).nodeFailures[0]?.error);
    };
    await locks.init();
    try {
      await admin.config('SET', 'maxmemory', '1');
      expect(await causeOf()).toMatch(/OOM/);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    try {
      await admin.replicaof('127.0.0.1', ports[1]!);
      expect(await causeOf()).toMatch(/READONLY/);
    } finally {
      await admin.replicaof('NO', 'ONE');
    }
    const lock = await locks.acquire(`writable-again:${randomUUID()}`);
    await lock.release();
  });

  it('a Redis user whose ACL denies INFO and other @dangerous commands can still lock', async () => {
    const user = `locker-${randomUUID().slice(0, 8)}`;
    await Promise.all(admins.map((a) => a.acl('SETUSER', user, 'on', '>secret', '~*', '&*', '+@all', '-@dangerous')));
    try {
      const backend = opened.backend({
        clients: ports.map((p) => opened.client(p, { username: user, password: 'secret', enableReadyCheck: false })),
      });
      await backend.init(never);
      const locks = opened.service({ backends: { default: backend } });
      const lock = await locks.acquire(`acl:${randomUUID()}`);
      await lock.release();
    } finally {
      await Promise.all(admins.map((a) => a.acl('DELUSER', user)));
    }
  });

  it("nodes that lost their scripts keep one owner's calls in order: a failed round's undo cannot delete the owner's next grant", async () => {
    // Without the release script cached, the undo of a failed round (EVALSHA) comes back NOSCRIPT and is sent again
    // as EVAL once that answer arrives — behind the owner's next attempt, which was sent meanwhile and found the
    // acquire script cached. Node X and Y are frozen so that both calls wait on the wire together.
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const other = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await Promise.all([backend.init(never), other.init(never)]);
    const [x, y, z] = admins as [Redis, Redis, Redis];
    const key = `noscript:${randomUUID()}`;
    const a = owner();
    for (const admin of [x, y]) {
      await admin.script('FLUSH');
      await admin.script('LOAD', scripts.acquire.source);
    }
    await z.set(key, owner(), 'PX', 10_000); // a third owner holds z
    servers.pause(ports[0]!);
    servers.pause(ports[1]!);
    try {
      // Round 1: z says busy, x and y do not answer in time: busy, and its undo is queued for x and y.
      expect(await backend.acquire(request(key, a, true))).toMatchObject({ acquired: false });
      await z.del(key);
      // Round 2: queued behind the undo on x and y; granted once they answer.
      const round2 = backend.acquire(request(key, a, true));
      await sleep(20);
      servers.resume(ports[0]!);
      servers.resume(ports[1]!);
      expect(await round2).toMatchObject({ acquired: true });
    } finally {
      servers.resume(ports[0]!);
      servers.resume(ports[1]!);
    }
    await sleep(100); // every resent EVAL has run
    // The owner holds the lock on a quorum: nobody else may get it.
    const holders = await Promise.all([x, y, z].map((admin) => admin.get(key)));
    expect(holders.filter((h) => h === a).length).toBeGreaterThanOrEqual(2);
    expect(await other.acquire(request(key, owner()))).toMatchObject({ acquired: false });
  });

  it('Lua scripts flushed (SCRIPT FLUSH) on every node again and again under contention: no error, no overlap', async () => {
    const services = Array.from({ length: 4 }, () =>
      opened.service({ backends: { default: opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }) } }),
    );
    const key = `flushed:${randomUUID()}`;
    const deadline = Date.now() + 1_500;
    let inside = 0;
    let overlaps = 0;
    let done = 0;
    const tokens: bigint[] = [];
    const flusher = (async () => {
      while (Date.now() < deadline) {
        await Promise.all(admins.map((a) => a.script('FLUSH')));
        await sleep(20);
      }
    })();
    await Promise.all(
      services.map(async (locks) => {
        while (Date.now() < deadline) {
          await locks.using(
            key,
            async (lock) => {
              if (++inside !== 1) overlaps++;
              tokens.push(lock.fencingToken);
              await sleep(1);
              inside--;
            },
            { ttl: 2_000, waitTimeout: 5_000 },
          );
          done++;
        }
      }),
    );
    await flusher;
    expect(overlaps).toBe(0);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    expect(done).toBeGreaterThan(20);
  });

  it("a user's client closed (quit) under the backend: calls fail fast with LockBackendError naming the nodes, a held lock is let go", async () => {
    const clients = ports.map((p) => opened.client(p));
    const backend = opened.backend({ clients, nodeTimeout: NODE_TIMEOUT });
    const locks = opened.service({ backends: { default: backend } });
    const key = `quit:${randomUUID()}`;
    const held = await locks.acquire(key, { ttl: 800, autoExtend: true });
    await clients[0]!.quit();
    // Still a quorum of 2 of 3: the lock is kept and others can be taken.
    await sleep(400);
    expect(held.isHeld).toBe(true);
    const other = await locks.acquire(`${key}:other`);
    await other.release();
    await clients[1]!.quit();
    const { error, ms } = await timed(() => locks.acquire(`${key}:third`));
    expect(error).toBeInstanceOf(LockBackendError);
    expect((error as LockBackendError).nodeFailures.map((f) => f.node).sort()).toEqual(
      [ports[0], ports[1]].map((p) => `127.0.0.1:${p}`).sort(),
    );
    expect(ms).toBeLessThan(100);
    // Without a quorum the held lock cannot be extended: lost within its ttl.
    await waitUntil('the held lock is reported lost', () => !held.isHeld, 1_000);
    expect(held.signal.aborted).toBe(true);
  });

  it('two apps in one process on the same clients: they exclude each other, and closing one leaves the other working', async () => {
    const clients = ports.map((p) => opened.client(p));
    const listenersBefore = clients.map((c) => c.listenerCount('ready') + c.listenerCount('close'));
    const first = opened.backend({ clients });
    const second = opened.backend({ clients });
    const one = opened.service({ backends: { default: first } });
    const two = opened.service({ backends: { default: second } });
    const shared = opened.service({ backends: { default: first } }); // one backend instance in two services
    const key = `two-apps:${randomUUID()}`;
    const held = await one.acquire(key);
    expect((await timed(() => two.acquire(key))).error).toBeInstanceOf(LockUnavailableError);
    expect((await timed(() => shared.acquire(key))).error).toBeInstanceOf(LockUnavailableError);
    await held.release();
    await one.close();
    await first.close();
    const after = await two.acquire(key);
    await after.release();
    await two.close();
    await second.close();
    // Closing the backends took their listeners off the user's clients.
    expect(clients.map((c) => c.listenerCount('ready') + c.listenerCount('close'))).toEqual(listenersBefore);
  });

  it('close() twice, then init, acquire, wait after close: typed errors or nothing, never a reconnection', async () => {
    const backend: RedlockBackend = opened.backendOn(ports);
    await backend.init(never);
    await Promise.all([backend.close(), backend.close()]);
    await backend.close();
    await expect(backend.init(never)).rejects.toBeInstanceOf(LockBackendError);
    await expect(backend.acquire(request('k', owner()))).rejects.toBeInstanceOf(LockBackendError);
    await expect(backend.release({ key: 'k', owner: owner() }, { signal: never })).rejects.toBeInstanceOf(
      LockBackendError,
    );
    await expect(backend.isLocked('k', { signal: never })).rejects.toBeInstanceOf(LockError);
    const { ms } = await timed(() =>
      backend.waitForRelease({ key: 'k', owner: owner(), timeoutMs: 5_000, signal: never }),
    );
    expect(ms).toBeLessThan(50);
  });

  it('a backend over nodes it connects itself leaves no connection behind after close()', async () => {
    const before = await Promise.all(admins.map(connectionsOn));
    const backend = opened.backend({ nodes: ports.map((port) => ({ host: '127.0.0.1', port })) });
    const locks = opened.service({ backends: { default: backend } });
    const key = `own-nodes:${randomUUID()}`;
    const held = await locks.acquire(key);
    const waiter = locks.acquire(key, { waitTimeout: 2_000 });
    await sleep(100);
    await held.release();
    await (await waiter).release();
    expect((await Promise.all(admins.map(connectionsOn))).every((n, i) => n > before[i]!)).toBe(true);
    await locks.close();
    await backend.close();
    await waitUntil('every connection is closed', async () => {
      const now = await Promise.all(admins.map(connectionsOn));
      return now.every((n, i) => n <= before[i]!);
    });
  });

  it("the user closing their clients closes the backend's own connections too (a script then exits by itself)", async () => {
    const before = await Promise.all(admins.map(connectionsOn));
    const clients = ports.map((p) => opened.client(p));
    const backend = opened.backend({ clients });
    const locks = opened.service({ backends: { default: backend } });
    const lock = await locks.acquire(`user-closes:${randomUUID()}`);
    await lock.release();
    await locks.close(); // an instance passed in stays open: the user closes their clients, not the backend
    await Promise.all(clients.map((c) => c.quit()));
    await waitUntil(
      'only connections of others are left',
      async () => {
        const now = await Promise.all(admins.map(connectionsOn));
        return now.every((n, i) => n <= before[i]!);
      },
      2_000,
    );
  });
});
