/**
 * ZooKeeperLockBackend against a real server (ZOOKEEPER_CONNECT, started by test/services/zookeeper.sh):
 * - the ZooKeeper requests one uncontended acquire+release costs (target 3: create, getChildren, delete),
 *   counted on the client, by operation;
 * - the latency of that cycle, through the backend alone and through LockService;
 * - the hand-off under contention: from the moment a holder starts its release until the next contender
 *   (woken by the watch on its predecessor) holds the lock (target p50 ≤ 2 ms).
 * Each contender runs on its own backend, i.e. its own ZooKeeper session, as separate app instances would.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createClient, type Client } from 'node-zookeeper-client';
import { LockService, systemClock } from '../../../lib';
import { ZooKeeperLockBackend } from '../../../lib/backends/zookeeper';
import {
  BenchSkip,
  formatUs,
  median,
  percentile,
  type BatchInfo,
  type BenchCase,
  type Scenario,
  type SummaryLine,
} from '../harness';

const REQUESTS_TARGET = 3;
const HANDOFF_P50_TARGET_MS = 2;
const CONTENDERS = 4;
const COUNTED = ['create', 'getChildren', 'remove', 'exists', 'getData', 'mkdirp'] as const;

const ROW = {
  raw: 'backend.acquire + release (3 requests)',
  service: 'LockService acquire() + release()',
  contended: `${CONTENDERS} contenders, one key, each on its own session`,
} as const;

/** A connected client whose request methods count their calls, handed to the backend as the user's client. */
async function countingClient(connect: string): Promise<{ client: Client; counts: Map<string, number> }> {
  const client = createClient(connect, { sessionTimeout: 10_000 });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchSkip(`no ZooKeeper answers at ${connect}`)), 10_000);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
  const counts = new Map<string, number>();
  const methods = client as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of COUNTED) {
    const original = methods[name]!.bind(client);
    methods[name] = (...args: unknown[]) => {
      counts.set(name, (counts.get(name) ?? 0) + 1);
      return original(...args);
    };
  }
  return { client, counts };
}

export const zookeeperScenario: Scenario = {
  name: 'zookeeper',
  title: 'ZooKeeperLockBackend on a real ZooKeeper 3.8 server (loopback)',
  tags: ['store', 'zookeeper'],
  async setup() {
    const connect = process.env.ZOOKEEPER_CONNECT;
    if (!connect) throw new BenchSkip('ZOOKEEPER_CONNECT is not set (start test/services/zookeeper.sh)');
    const rootPath = `/bench-${randomUUID()}`;
    const { client, counts } = await countingClient(connect);
    const counted = new ZooKeeperLockBackend({ client, rootPath });
    const contenders = Array.from(
      { length: CONTENDERS },
      () => new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 }),
    );
    const backends = [counted, ...contenders];
    await Promise.all(backends.map((b) => b.init(AbortSignal.timeout(10_000))));
    const service = new LockService({ backends: { default: counted }, clock: systemClock });
    const services = contenders.map((b) => new LockService({ backends: { default: b }, clock: systemClock }));
    const call = { signal: new AbortController().signal };

    // Requests per cycle, counted over a fixed number of cycles (heartbeats never run: it is never idle). The
    // first lock on a key also creates its parent (a failed create, then mkdirp): cycle 0 is left out.
    const cycles = 200;
    for (let i = -1; i < cycles; i++) {
      if (i === 0) counts.clear();
      const owner = randomUUID().replace(/-/g, '');
      const outcome = await counted.acquire({
        key: 'count',
        owner,
        ttl: 1_000,
        keepPlace: false,
        onLost: () => undefined,
        signal: call.signal,
      });
      if (!outcome.acquired) throw new Error('an uncontended acquire failed');
      await counted.release({ key: 'count', owner }, call);
    }
    const perCycle = new Map([...counts].map(([name, n]) => [name, n / cycles]));
    const requestsPerCycle = [...perCycle.values()].reduce((a, b) => a + b, 0);

    /** Hand-offs of the timed runs: next holder's grant minus the previous holder's release start, in ms. */
    const handoffs: number[] = [];
    let lastReleaseAt = NaN;
    let inside = 0;
    let timed = false;

    const cases: BenchCase[] = [
      {
        name: ROW.raw,
        op: async () => {
          const owner = randomUUID().replace(/-/g, '');
          const lease = { key: 'raw', owner };
          const outcome = await counted.acquire({
            ...lease,
            ttl: 1_000,
            keepPlace: false,
            onLost: () => undefined,
            signal: call.signal,
          });
          if (!outcome.acquired) throw new Error('an uncontended acquire failed');
          await counted.release(lease, call);
        },
      },
      {
        name: ROW.service,
        op: async () => {
          const lock = await service.acquire('service');
          await lock.release();
        },
      },
      {
        name: ROW.contended,
        concurrency: CONTENDERS,
        onBatch: (batch: BatchInfo) => {
          timed = batch.timed;
          lastReleaseAt = NaN;
        },
        op: async (worker) => {
          const lock = await services[worker]!.acquire('hot', { waitTimeout: 30_000 });
          const grantedAt = performance.now();
          if (++inside !== 1) throw new Error('two holders at once');
          if (timed && !Number.isNaN(lastReleaseAt)) handoffs.push(grantedAt - lastReleaseAt);
          await new Promise<void>((resolve) => setImmediate(resolve));
          inside--;
          lastReleaseAt = performance.now();
          await lock.release();
        },
      },
    ];

    return {
      baseline: ROW.raw,
      cases,
      summarize(): readonly SummaryLine[] {
        const breakdown = [...perCycle].map(([name, n]) => `${name} ${n.toFixed(2)}`).join(', ');
        const lines: SummaryLine[] = [
          {
            text: `ZooKeeper requests per uncontended cycle: ${requestsPerCycle.toFixed(2)} (${breakdown}; target ${REQUESTS_TARGET})`,
            ok: requestsPerCycle <= REQUESTS_TARGET,
          },
        ];
        if (handoffs.length > 0) {
          const p50 = median(handoffs);
          lines.push({
            text:
              `contended hand-off (release start → next holder granted): p50 ${formatUs(p50 * 1000)} µs, ` +
              `p99 ${formatUs(percentile(handoffs, 0.99) * 1000)} µs over ${handoffs.length} hand-offs ` +
              `(target p50 ≤ ${HANDOFF_P50_TARGET_MS} ms)`,
            ok: p50 <= HANDOFF_P50_TARGET_MS,
          });
        }
        return lines;
      },
      async dispose() {
        await Promise.all([service, ...services].map((s) => s.close()));
        await Promise.all(backends.map((b) => b.close()));
        client.close();
      },
    };
  },
};
