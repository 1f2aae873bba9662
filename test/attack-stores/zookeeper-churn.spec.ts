import { randomUUID } from 'node:crypto';
import { LockService, systemClock } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { zookeeperConnect } from '../zookeeper/zookeeper-test-support';

/**
 * Lock parents reaped as soon as they are empty (emptyParentDelay 1 ms) while four apps keep taking the key:
 * each contender's create may find its parent gone. Every acquisition must still succeed (no LockBackendError),
 * with no overlap.
 */
describe('ZooKeeper: lock parents deleted and re-created under contention', () => {
  it('every acquisition succeeds, none overlap', async () => {
    const connect = zookeeperConnect();
    const rootPath = `/att2-churn-${randomUUID()}`;
    const backends = Array.from(
      { length: 4 },
      () =>
        new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000, emptyParentDelay: 1 }),
    );
    await Promise.all(backends.map((b) => b.init(AbortSignal.timeout(15_000))));
    const services = backends.map((b) => new LockService({ backends: { default: b }, clock: systemClock }));
    let inside = 0;
    let overlaps = 0;
    const failures: string[] = [];
    try {
      await Promise.all(
        services.map(async (locks) => {
          for (let i = 0; i < 60; i++) {
            try {
              await locks.using(
                'churn',
                async () => {
                  inside++;
                  if (inside > 1) overlaps++;
                  await new Promise((resolve) => setImmediate(resolve));
                  inside--;
                },
                { waitTimeout: 10_000 },
              );
            } catch (error) {
              failures.push(String(error).slice(0, 200));
            }
          }
        }),
      );
    } finally {
      for (const locks of services) await locks.close();
      for (const b of backends) await b.close();
    }
    expect({ overlaps, failures: failures.slice(0, 3), failed: failures.length }).toEqual({
      overlaps: 0,
      failures: [],
      failed: 0,
    });
  }, 60_000);
});
