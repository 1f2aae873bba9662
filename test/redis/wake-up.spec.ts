import { randomUUID } from 'node:crypto';
import { LockService, type LockEvent } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { client, redisPorts, sleep } from './support/redis-env';

/**
 * Waiting without polling: the polling pause is set far beyond the whole run, so only the release's own
 * announcement can wake a waiter in time. Under contention the lock goes to a waiter, not back to the worker
 * that just released it. (Latency figures are the benchmark's job; the bounds here are generous.)
 */
describe.each([1, 5])('Redlock on %i node(s): wake-ups under contention', (nodes) => {
  it('hands the lock from worker to worker through release announcements', async () => {
    const ports = redisPorts(nodes);
    const workers = 6;
    const rounds = 8;
    const opened = Array.from({ length: workers }, () => {
      const clients = ports.map(client);
      return { clients, backend: new RedlockBackend({ clients }) };
    });
    const services = opened.map(({ backend }) => new LockService({ backends: { default: backend } }));
    const key = `wake:${randomUUID()}`;
    const order: number[] = [];
    const waits: number[] = [];
    let inside = 0;
    let overlaps = 0;
    let lost = 0;
    for (const s of services) s.events$.subscribe((e: LockEvent) => (e.type === 'lost' ? lost++ : undefined));
    try {
      await Promise.all(opened.map(({ backend }) => backend.init(new AbortController().signal)));
      const startedAt = Date.now();
      await Promise.all(
        services.map(async (locks, worker) => {
          for (let round = 0; round < rounds; round++) {
            const calledAt = Date.now();
            await locks.using(
              key,
              async () => {
                waits.push(Date.now() - calledAt);
                if (++inside !== 1) overlaps++;
                order.push(worker);
                await sleep(1);
                inside--;
              },
              // A polling pause of 60 s: without announcements this run could not finish within the test timeout.
              { ttl: 10_000, waitTimeout: 30_000, retry: { delay: 60_000, maxDelay: 60_000 } },
            );
          }
        }),
      );
      const elapsed = Date.now() - startedAt;
      expect(overlaps).toBe(0);
      expect(lost).toBe(0);
      expect(order).toHaveLength(workers * rounds);
      expect(elapsed).toBeLessThan(10_000);
      expect(Math.max(...waits)).toBeLessThan(5_000);
      // The releaser comes straight back, but the lock passes down the line.
      const retakes = order.filter((w, i) => i > 0 && order[i - 1] === w).length;
      expect(retakes / (order.length - 1)).toBeLessThan(0.25);
    } finally {
      await Promise.all(services.map((s) => s.close()));
      await Promise.all(opened.map(({ backend }) => backend.close()));
      await Promise.all(opened.flatMap(({ clients }) => clients.map((c) => c.quit())));
    }
  }, 30_000);
});
