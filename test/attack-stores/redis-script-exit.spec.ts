import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { redisPorts } from '../redis/support/redis-env';

/**
 * A plain Node script that acquires, releases and closes must exit by itself: no connection, subscription or
 * timer of the backend may keep it alive — nor may it exit while a caller still awaits a lock.
 */
describe('attack: a plain script on the Redis backend exits by itself', () => {
  beforeAll(() => {
    redisPorts(3);
  });

  it.each([
    ["the user's clients and a backend instance; the user closes the service and quits the clients", 'clients'],
    ['nodes the backend connects itself, made by a factory; the user closes the service', 'factory'],
    ['nodes the backend connects itself, as an instance; the user closes the service and the backend', 'instance'],
    ['a wait for a busy key in between', 'waiter'],
  ])(
    '%s',
    (_, scenario) => {
      const startedAt = Date.now();
      const child = spawnSync(process.execPath, [join(__dirname, 'redis-script-child.js'), scenario], {
        env: process.env,
        encoding: 'utf8',
        timeout: 15_000,
      });
      const ms = Date.now() - startedAt;
      expect(child.stdout).toContain('done');
      expect(child.stdout).not.toContain('before the end');
      if (scenario === 'waiter') expect(child.stdout).toContain('waited');
      expect(child.signal).toBeNull(); // not killed by the 15 s timeout: it ended by itself
      expect(child.status).toBe(0);
      expect(ms).toBeLessThan(10_000);
    },
    20_000,
  );
});
