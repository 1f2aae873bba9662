import { randomUUID } from 'node:crypto';
import { LockService, systemClock, type Lock } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { FlakyLink, sleep, zookeeperConnect } from '../zookeeper/zookeeper-test-support';

/**
 * Three apps, each reaching ZooKeeper through its own flaky link (held — a frozen or partitioned peer — or cut),
 * contend for one key with the default policies (onSuspended 'wait'). A checker looks every 5 ms: never two
 * holders whose lock.signal has not aborted.
 */
describe('ZooKeeper under link chaos, through LockService', () => {
  it('never two holders at once whose signal has not aborted; tokens rise with every grant', async () => {
    const connect = zookeeperConnect();
    const rootPath = `/att2-chaos-${randomUUID()}`;
    const SESSION = 2_000;
    const apps: { link: FlakyLink; backend: ZooKeeperLockBackend; locks: LockService }[] = [];
    for (let i = 0; i < 3; i++) {
      const link = await FlakyLink.open(connect);
      const backend = new ZooKeeperLockBackend({ connectionString: link.address, rootPath, sessionTimeout: SESSION });
      await backend.init(AbortSignal.timeout(15_000));
      apps.push({ link, backend, locks: new LockService({ backends: { default: backend }, clock: systemClock }) });
    }
    const holding = new Map<number, Lock>();
    const overlaps: string[] = [];
    let grants = 0;
    const tokens: bigint[] = [];
    const until = Date.now() + 20_000;
    const checker = setInterval(() => {
      const live = [...holding.entries()].filter(([, lock]) => !lock.signal.aborted);
      if (live.length > 1) overlaps.push(`${new Date().toISOString()} ${live.map(([i]) => i).join('+')}`);
    }, 5);
    const worker = async (i: number): Promise<void> => {
      const { locks } = apps[i]!;
      while (Date.now() < until) {
        let lock: Lock | undefined;
        try {
          lock = await locks.acquire('chaos', { waitTimeout: 3_000, ttl: 5_000 });
        } catch {
          await sleep(20);
          continue;
        }
        grants++;
        tokens.push(lock.fencingToken as bigint);
        holding.set(i, lock);
        await sleep(20 + Math.floor(Math.random() * 200));
        holding.delete(i);
        await lock.release().catch(() => undefined);
      }
    };
    const chaos = async (): Promise<void> => {
      while (Date.now() < until) {
        const { link } = apps[Math.floor(Math.random() * apps.length)]!;
        const what = Math.random();
        if (what < 0.5) {
          link.hold();
          await sleep(500 + Math.floor(Math.random() * 3_000));
          link.pass();
        } else {
          link.cut();
        }
        await sleep(300 + Math.floor(Math.random() * 800));
      }
    };
    try {
      await Promise.all([worker(0), worker(1), worker(2), chaos()]);
    } finally {
      clearInterval(checker);
      for (const { link } of apps) link.pass();
      for (const { locks, backend, link } of apps) {
        await locks.close().catch(() => undefined);
        await backend.close();
        await link.close();
      }
    }
    console.log(`chaos: ${grants} grants, overlaps: ${overlaps.length}`, overlaps.slice(0, 5));
    expect(grants).toBeGreaterThan(10);
    expect(overlaps).toEqual([]);
    // Fencing tokens rise with every grant, across sessions lost and renewed.
    const falls = tokens.filter((t, i) => i > 0 && t <= tokens[i - 1]!);
    expect(falls).toEqual([]);
  }, 60_000);
});
