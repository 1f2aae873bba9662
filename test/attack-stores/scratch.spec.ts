import Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { RedisProcesses } from '../redis/support/redis-processes';
import { sleep } from '../redis/support/redis-env';

const never = new AbortController().signal;
const owner = (): string => randomUUID().replace(/-/g, '');

describe('scratch', () => {
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

  it('A: dead waiter first in line', async () => {
    const backend = new RedlockBackend({ clients: [connect(ports[0]!)] });
    const locks = new LockService({ backends: { default: backend } });
    const key = `dead:${randomUUID()}`;
    const holder = await locks.acquire(key, { ttl: 10_000 });
    // A dead waiter: keeps a place and never comes back.
    const out = await backend.acquire({
      key,
      owner: owner(),
      ttl: 10_000,
      keepPlace: true,
      onLost: () => {},
      signal: never,
    });
    console.log('dead waiter', out);
    const waiter = locks.acquire(key, { ttl: 10_000, waitTimeout: 10_000 });
    await sleep(2_500);
    const t0 = Date.now();
    await holder.release();
    const l = await waiter;
    console.log('A: next waiter got it after', Date.now() - t0, 'ms');
    await l.release();
    await locks.close();
    await backend.close();
  }, 30_000);

  it('B: multi-key overlap', async () => {
    const mk = () => {
      const backend = new RedlockBackend({ clients: [connect(ports[1]!)] });
      return { backend, locks: new LockService({ backends: { default: backend } }) };
    };
    const a = mk();
    const b = mk();
    const prefix = randomUUID();
    let done = [0, 0];
    let fails = [0, 0];
    const deadline = Date.now() + 3_000;
    await Promise.all(
      [a, b].map(async ({ locks }, i) => {
        while (Date.now() < deadline) {
          const keys = i === 0 ? [`${prefix}:k1`, `${prefix}:k2`] : [`${prefix}:k2`, `${prefix}:k1`];
          try {
            await locks.using(keys, async () => sleep(2), { ttl: 5_000, waitTimeout: 1_000 });
            done[i]!++;
          } catch (e) {
            fails[i]!++;
          }
        }
      }),
    );
    console.log('B done', done, 'fails', fails);
    for (const x of [a, b]) {
      await x.locks.close();
      await x.backend.close();
    }
  }, 30_000);

  it('G: one hung node, wake-ups with a 60 s polling pause', async () => {
    const workers = 6;
    const opened = Array.from({ length: workers }, () => {
      const cs = ports.map(connect);
      return new RedlockBackend({ clients: cs });
    });
    await Promise.all(opened.map((b) => b.init(never)));
    servers.pause(ports[4]!);
    const services = opened.map((backend) => new LockService({ backends: { default: backend } }));
    const key = `hung:${randomUUID()}`;
    const waits: number[] = [];
    let inside = 0;
    let overlaps = 0;
    const t0 = Date.now();
    try {
      await Promise.all(
        services.map(async (locks) => {
          for (let round = 0; round < 5; round++) {
            const at = Date.now();
            await locks.using(
              key,
              async () => {
                waits.push(Date.now() - at);
                if (++inside !== 1) overlaps++;
                await sleep(1);
                inside--;
              },
              { ttl: 10_000, waitTimeout: 15_000, retry: { delay: 60_000, maxDelay: 60_000 } },
            );
          }
        }),
      );
    } catch (e) {
      console.log('G error', e);
    }
    console.log('G elapsed', Date.now() - t0, 'overlaps', overlaps, 'max wait', Math.max(...waits), waits.length);
    servers.resume(ports[4]!);
    await Promise.all(services.map((s) => s.close()));
    await Promise.all(opened.map((b) => b.close()));
  }, 60_000);
});
