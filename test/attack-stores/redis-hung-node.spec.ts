import { randomUUID } from 'node:crypto';
import { LockBackendClosedError, LockBackendError, LockError, type LockEvent } from '../../lib';
import { RedisProcesses } from '../redis/support/redis-processes';
import { median, never, Opened, owner, request, sleep, timed, unhandledRejections } from './redis-attack-support';

/**
 * Hung nodes: a redis-server frozen with SIGSTOP keeps its connections open and answers nothing, so only the
 * backend's own timeouts can tell it from a slow one. One of five hung must not slow any call down (the quorum
 * is there without it); three of five must fail calls within their bounds, with every node named.
 */
describe('attack: Redlock with hung nodes (SIGSTOP)', () => {
  const servers = new RedisProcesses();
  const opened = new Opened();
  const paused = new Set<number>();
  const rejections = unhandledRejections();
  const NODE_TIMEOUT = 250;
  let ports: number[] = [];

  const pause = (...which: number[]): void => {
    for (const port of which) {
      servers.pause(port);
      paused.add(port);
    }
  };
  const resumeAll = (): void => {
    for (const port of paused) servers.resume(port);
    paused.clear();
  };

  beforeAll(async () => {
    ports = await servers.start(5);
  }, 30_000);
  afterEach(async () => {
    resumeAll();
    await opened.closeAll();
  });
  afterAll(async () => {
    rejections.stop();
    await servers.stopAll();
    expect(rejections.seen).toEqual([]);
  });

  it('1 of 5 hung: acquire, extend, isLocked, release and ping answer without waiting for it', async () => {
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await backend.init(never);
    pause(ports[2]!);
    const times: number[] = [];
    for (let i = 0; i < 8; i++) {
      const key = `one-hung:${randomUUID()}`;
      const who = owner();
      const lease = { key, owner: who };
      const calls: (() => Promise<unknown>)[] = [
        () => backend.acquire(request(key, who)),
        () => backend.extend(lease, 10_000, { signal: never }),
        () => backend.isLocked(key, { signal: never }),
        () => backend.release(lease, { signal: never }),
        () => backend.ping(never),
      ];
      for (const call of calls) {
        const { ms, value, error } = await timed(call);
        expect(error).toBeUndefined();
        if (typeof value === 'object') expect(value).toMatchObject({ acquired: true });
        times.push(ms);
      }
    }
    // Each call is decided by the four live nodes: a round trip, not the hung node's timeout.
    expect(Math.max(...times)).toBeLessThan(NODE_TIMEOUT);
    console.log(
      `1 of 5 hung: calls took median ${median(times).toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms`,
    );
  });

  it('1 of 5 hung: a wait on a key that is already free returns within nodeTimeout, not at its timeout', async () => {
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await backend.init(never);
    pause(ports[4]!);
    const { ms } = await timed(() =>
      backend.waitForRelease({ key: `free:${randomUUID()}`, owner: owner(), timeoutMs: 5_000, signal: never }),
    );
    expect(ms).toBeLessThan(NODE_TIMEOUT + 200);
  });

  it('1 of 5 hung: a release announced before the waiter listens is not missed', async () => {
    const holder = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const waiter = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await Promise.all([holder.init(never), waiter.init(never)]);
    pause(ports[1]!);
    const key = `missed:${randomUUID()}`;
    const [h, w] = [owner(), owner()];
    expect((await holder.acquire(request(key, h))).acquired).toBe(true);
    expect(await waiter.acquire(request(key, w, true))).toMatchObject({ acquired: false, queued: true });
    // The key is offered to the waiter before it starts listening: only its check after subscribing can see it.
    expect(await holder.release({ key, owner: h }, { signal: never })).toBe(true);
    const { ms } = await timed(() => waiter.waitForRelease({ key, owner: w, timeoutMs: 5_000, signal: never }));
    expect(ms).toBeLessThan(NODE_TIMEOUT + 200);
    expect((await waiter.acquire(request(key, w, true))).acquired).toBe(true);
  });

  it('1 of 5 hung: contention hands the lock on through announcements (60 s polling pause), and extensions keep it', async () => {
    const backends = Array.from({ length: 5 }, () => opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }));
    await Promise.all(backends.map((b) => b.init(never)));
    const services = backends.map((backend) => opened.service({ backends: { default: backend } }));
    pause(ports[3]!);
    const key = `hung-contention:${randomUUID()}`;
    let inside = 0;
    let overlaps = 0;
    let lost = 0;
    const tokens: bigint[] = [];
    for (const s of services) s.events$.subscribe((e: LockEvent) => void (e.type === 'lost' && lost++));
    const { ms } = await timed(() =>
      Promise.all(
        services.map(async (locks, i) => {
          for (let round = 0; round < 4; round++) {
            await locks.using(
              key,
              async (lock) => {
                if (++inside !== 1) overlaps++;
                tokens.push(lock.fencingToken);
                // One holder in each round stays past several extensions (ttl 300, one every 100 ms).
                await sleep(round === 0 && i === 0 ? 700 : 1);
                inside--;
              },
              { ttl: 300, waitTimeout: 15_000, retry: { delay: 60_000, maxDelay: 60_000 } },
            );
          }
        }),
      ),
    );
    expect(overlaps).toBe(0);
    expect(lost).toBe(0);
    expect(tokens).toHaveLength(20);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    expect(ms).toBeLessThan(5_000);
  }, 20_000);

  it('3 of 5 hung: acquire fails with a LockBackendError naming the 3 nodes, within waitTimeout + nodeTimeout', async () => {
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await backend.init(never);
    const locks = opened.service({ backends: { default: backend } });
    const hung = [ports[0]!, ports[2]!, ports[4]!];
    pause(...hung);
    const { ms, error } = await timed(() => locks.acquire('k', { waitTimeout: 800 }));
    expect(error).toBeInstanceOf(LockBackendError);
    const failures = (error as LockBackendError).nodeFailures;
    expect(failures.map((f) => f.node).sort()).toEqual(hung.map((p) => `127.0.0.1:${p}`).sort());
    for (const f of failures) expect(String(f.error)).toMatch(/no answer within 250 ms/);
    expect(ms).toBeLessThan(800 + NODE_TIMEOUT + 300);
  });

  it('3 of 5 hung while holding: the lock is lost by its validity (signal, onLost, event), nobody else takes it, release is bounded', async () => {
    const a = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const b = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    await Promise.all([a.init(never), b.init(never)]);
    const holder = opened.service({ backends: { default: a }, operationTimeout: 1_000 });
    const other = opened.service({ backends: { default: b } });
    const key = `hung-holder:${randomUUID()}`;
    const ttl = 600;
    let lostAt = 0;
    let onLostAt = 0;
    let acquiredAt = 0;
    let token = 0n;
    holder.events$.subscribe((e: LockEvent) => void (e.type === 'lost' && (lostAt = Date.now())));
    const work = holder.using(
      key,
      async (lock) => {
        acquiredAt = Date.now();
        token = lock.fencingToken;
        pause(ports[0]!, ports[1]!, ports[3]!);
        await new Promise<void>((resolve) => lock.signal.addEventListener('abort', () => resolve()));
      },
      { ttl, onLost: () => void (onLostAt = Date.now()) },
    );
    const { error } = await timed(() => work);
    const settledAt = Date.now();
    expect(error).toBeUndefined(); // onLost as a function: the result is returned
    expect(lostAt).toBeGreaterThan(0);
    // The release after the loss cannot reach a quorum: it gives up after nodeTimeout (the ttl frees the key).
    expect(settledAt - lostAt).toBeLessThan(NODE_TIMEOUT + 300);
    expect(onLostAt).toBeGreaterThan(0);
    expect(lostAt - acquiredAt).toBeLessThanOrEqual(ttl);
    // Nobody can take the key meanwhile (no quorum), and the attempt fails within its bounds.
    const attempt = await timed(() => other.acquire(key, { waitTimeout: 300 }));
    expect(attempt.error).toBeInstanceOf(LockError);
    expect(attempt.ms).toBeLessThan(300 + NODE_TIMEOUT + 300);
    resumeAll();
    const next = await other.acquire(key, { waitTimeout: 5_000 });
    expect(next.fencingToken).toBeGreaterThan(token);
    await next.release();
  });

  it('3 of 5 hung at startup: init fails within operationTimeout, health() says down within nodeTimeout', async () => {
    pause(ports[0]!, ports[1]!, ports[2]!);
    const locks = opened.service({
      backends: { default: opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }) },
      operationTimeout: 500,
    });
    const init = await timed(() => locks.init());
    expect(init.error).toBeInstanceOf(LockBackendError);
    expect(init.ms).toBeLessThan(500 + 700);
    const started = opened.service({
      backends: { default: opened.backendOn(ports.slice(2), { nodeTimeout: NODE_TIMEOUT }) },
    });
    resumeAll();
    await started.init();
    pause(ports[2]!, ports[3]!);
    const health = await timed(() => started.health());
    expect(health.value?.[0]?.up).toBe(false);
    expect(health.ms).toBeLessThan(NODE_TIMEOUT + 700);
  });

  it('a backend starts with 1 of 5 hung, and closes within about a second with 1 hung', async () => {
    pause(ports[1]!);
    const backend = opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT });
    const init = await timed(() => backend.init(never));
    expect(init.error).toBeUndefined();
    expect(init.ms).toBeLessThan(NODE_TIMEOUT + 500);
    const key = `init-hung:${randomUUID()}`;
    expect((await backend.acquire(request(key, owner()))).acquired).toBe(true);
    const close = await timed(() => backend.close());
    expect(close.error).toBeUndefined();
    expect(close.ms).toBeLessThan(1_500);
  });

  it('chaos: 1–2 nodes hung at a time for 50–400 ms under contention: no two holders, tokens rise, every call settles typed', async () => {
    const backends = Array.from({ length: 4 }, () => opened.backendOn(ports, { nodeTimeout: NODE_TIMEOUT }));
    await Promise.all(backends.map((b) => b.init(never)));
    const services = backends.map((backend) =>
      opened.service({ backends: { default: backend }, operationTimeout: 1_000 }),
    );
    const key = `chaos:${randomUUID()}`;
    const deadline = Date.now() + 3_000;
    let inside = 0;
    let overlaps = 0;
    let done = 0;
    const tokens: bigint[] = [];
    const untyped: unknown[] = [];
    const chaos = (async () => {
      while (Date.now() < deadline) {
        const count = 1 + Math.floor(Math.random() * 2);
        const victims = [...ports].sort(() => Math.random() - 0.5).slice(0, count);
        pause(...victims);
        await sleep(50 + Math.random() * 350);
        resumeAll();
        await sleep(20 + Math.random() * 100);
      }
    })();
    await Promise.all(
      services.map(async (locks) => {
        while (Date.now() < deadline) {
          try {
            await locks.using(
              key,
              async (lock) => {
                if (++inside !== 1) overlaps++;
                tokens.push(lock.fencingToken);
                await sleep(5);
                inside--;
              },
              { ttl: 800, waitTimeout: 1_000 },
            );
            done++;
          } catch (error) {
            if (!(error instanceof LockError)) untyped.push(error);
          }
        }
      }),
    );
    await chaos;
    expect(untyped).toEqual([]);
    expect(overlaps).toBe(0);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    expect(done).toBeGreaterThan(10);
    console.log(`chaos: ${done} locked sections in 3 s with 1–2 of 5 nodes hung at a time`);
  }, 20_000);

  describe('init while the node is hung: callers share one start, each with its own signal', () => {
    it('a caller that gives up is answered at once, and the start goes on for one still waiting', async () => {
      pause(ports[0]!);
      const backend = opened.backendOn([ports[0]!], { nodeTimeout: NODE_TIMEOUT });
      const gaveUp = AbortSignal.timeout(150);
      const first = timed(() => backend.init(gaveUp));
      let secondDone = false;
      const second = backend.init().then(() => {
        secondDone = true;
      });
      const { ms, error } = await first;
      expect(error).toBe(gaveUp.reason);
      expect(ms).toBeLessThan(1_000);
      expect(secondDone).toBe(false);
      resumeAll();
      await second;
      const key = `init-shared:${randomUUID()}`;
      expect(await backend.acquire(request(key, owner()))).toMatchObject({ acquired: true });
    });

    it('close() ends the start at once: its callers learn the backend closed', async () => {
      pause(ports[0]!);
      const backend = opened.backendOn([ports[0]!], { nodeTimeout: NODE_TIMEOUT });
      const starting = timed(() => backend.init());
      await sleep(100);
      await backend.close();
      const { ms, error } = await starting;
      expect(error).toBeInstanceOf(LockBackendClosedError);
      // Not the init timeout (10 s): close() stopped it.
      expect(ms).toBeLessThan(2_000);
    });
  });
});
