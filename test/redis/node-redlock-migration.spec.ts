import { randomUUID } from 'node:crypto';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { client, redisPorts, sleep } from './support/redis-env';

/** The part of redlock@4's API this test uses (the package ships no types). */
interface NodeRedlockLock {
  unlock(): Promise<unknown>;
}
interface NodeRedlock {
  lock(resource: string, ttl: number): Promise<NodeRedlockLock>;
  on(event: 'clientError', listener: (error: unknown) => void): void;
}
type NodeRedlockClass = new (clients: unknown[], options: Record<string, number>) => NodeRedlock;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Redlock = require('redlock') as NodeRedlockClass;

/**
 * During a migration, a service still on node-redlock (resource R) and one on this backend (key R, no
 * keyPrefix) run side by side on the same Redis nodes: the lock key holds the owner token as a plain string
 * with a PX expiry in both, so each sees the other's lock as busy.
 */
describe('Redlock backend beside node-redlock 4.2.0 on the same nodes', () => {
  it('excludes node-redlock holders of the same resource, and is excluded by them', async () => {
    const ports = redisPorts(5);
    const ours = ports.map(client);
    const theirs = ports.map(client);
    const backend = new RedlockBackend({ clients: ours });
    const locks = new LockService({ backends: { default: backend } });
    const peer = new Redlock(theirs, { retryCount: 400, retryDelay: 5, retryJitter: 5 });
    peer.on('clientError', () => undefined);
    const resource = `migration:${randomUUID()}`;
    let inside = 0;
    let overlaps = 0;
    const held = { ours: 0, theirs: 0 };
    const work = async (who: keyof typeof held): Promise<void> => {
      if (++inside !== 1) overlaps++;
      held[who]++;
      await sleep(1);
      inside--;
    };
    try {
      await Promise.all([
        ...Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 10; i++)
            await locks.using(resource, () => work('ours'), { ttl: 5_000, waitTimeout: 20_000 });
        }),
        ...Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 10; i++) {
            const lock = await peer.lock(resource, 5_000);
            try {
              await work('theirs');
            } finally {
              await lock.unlock();
            }
          }
        }),
      ]);
      expect(overlaps).toBe(0);
      expect(held).toEqual({ ours: 40, theirs: 40 });

      // Each sees the other's lock.
      const theirLock = await peer.lock(resource, 5_000);
      expect(await locks.tryAcquire(resource)).toBeNull();
      await theirLock.unlock();
      const ourLock = await locks.acquire(resource);
      await expect(new Redlock(theirs, { retryCount: 0 }).lock(resource, 5_000)).rejects.toThrow();
      await ourLock.release();
    } finally {
      await locks.close();
      await backend.close();
      await Promise.all([...ours, ...theirs].map((c) => c.quit()));
    }
  }, 60_000);
});
