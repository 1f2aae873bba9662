import Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { RedisProcesses } from '../redis/support/redis-processes';
import { sleep } from '../redis/support/redis-env';

const never = new AbortController().signal;
const owner = (): string => randomUUID().replace(/-/g, '');

describe('scratch2', () => {
  const servers = new RedisProcesses();
  let ports: number[] = [];
  const clients: Redis[] = [];
  const connect = (port: number): Redis => {
    const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    r.on('error', () => undefined);
    clients.push(r);
    return r;
  };
  beforeAll(async () => {
    ports = await servers.start(5);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.disconnect()));
    await servers.stopAll();
  });

  it('G2: waitForRelease on a free key with one node hung', async () => {
    const backend = new RedlockBackend({ clients: ports.map(connect) });
    await backend.init(never);
    servers.pause(ports[2]!);
    const key = `free:${randomUUID()}`;
    const t0 = Date.now();
    await backend.waitForRelease({ key, owner: owner(), timeoutMs: 5_000, signal: never });
    console.log('G2 waited', Date.now() - t0);
    servers.resume(ports[2]!);
    await backend.close();
  }, 30_000);

  it('E: backend.close() while waiters wait', async () => {
    const backend = new RedlockBackend({ clients: [connect(ports[0]!)] });
    const locks = new LockService({ backends: { default: backend } });
    const other = new RedlockBackend({ clients: [connect(ports[0]!)] });
    const key = `close:${randomUUID()}`;
    const h = await other.acquire({
      key,
      owner: owner(),
      ttl: 20_000,
      keepPlace: false,
      onLost: () => {},
      signal: never,
    });
    expect(h.acquired).toBe(true);
    const waiters = [1, 2, 3].map(() =>
      locks.acquire(key, { waitTimeout: 8_000 }).then(
        () => 'got',
        (e: Error) => `${e.name}: ${e.message}`,
      ),
    );
    await sleep(300);
    const t0 = Date.now();
    await backend.close();
    const results = await Promise.all(waiters);
    console.log('E ended after', Date.now() - t0, results);
    console.log('E line', await clients.at(-1)!.zrange(`${key}\u0000line`, 0, -1));
    await locks.close();
    await other.close();
  }, 30_000);

  it('H: service close while waiters wait', async () => {
    const backend = new RedlockBackend({ clients: [connect(ports[0]!)] });
    const locks = new LockService({ backends: { default: backend } });
    const other = new RedlockBackend({ clients: [connect(ports[0]!)] });
    const key = `sclose:${randomUUID()}`;
    const h = await other.acquire({
      key,
      owner: owner(),
      ttl: 20_000,
      keepPlace: false,
      onLost: () => {},
      signal: never,
    });
    expect(h.acquired).toBe(true);
    const waiters = [1, 2, 3].map(() =>
      locks.acquire(key, { waitTimeout: 8_000 }).then(
        () => 'got',
        (e: Error) => `${e.name}: ${e.message}`,
      ),
    );
    await sleep(300);
    console.log('H line before', await clients.at(-1)!.zrange(`${key}\u0000line`, 0, -1));
    const t0 = Date.now();
    await locks.close();
    const results = await Promise.all(waiters);
    console.log('H ended after', Date.now() - t0, results);
    console.log('H line', await clients.at(-1)!.zrange(`${key}\u0000line`, 0, -1));
    await backend.close();
    await other.close();
  }, 30_000);

  it('P: pubsub connections killed while waiters wait', async () => {
    const backend = new RedlockBackend({ clients: [connect(ports[3]!)] });
    const locks = new LockService({ backends: { default: backend } });
    const admin = connect(ports[3]!);
    const key = `pubsub:${randomUUID()}`;
    const holder = await locks.acquire(key, { ttl: 20_000 });
    const t = Date.now();
    const waiter = locks.acquire(key, { waitTimeout: 15_000, retry: { delay: 60_000, maxDelay: 60_000 } });
    await sleep(300);
    console.log('killed', await admin.client('KILL', 'TYPE', 'pubsub'));
    await sleep(5);
    const t0 = Date.now();
    await holder.release();
    const l = await waiter;
    console.log('P woken after', Date.now() - t0, 'total', Date.now() - t);
    await l.release();
    await locks.close();
    await backend.close();
  }, 30_000);
});
