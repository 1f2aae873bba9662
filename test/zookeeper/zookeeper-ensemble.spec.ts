import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { LockService, systemClock } from '../../lib';
import type { ConnectionChange } from '../../lib/backends/lock-backend';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { fourLetters, requireEnv, sleep } from './zookeeper-test-support';

/** One member of the test ensemble: where it listens, its pid, how to start it again. */
interface Member {
  readonly address: string;
  readonly port: number;
  readonly dir: string;
}

describe('ZooKeeper ensemble: failover and a frozen server', () => {
  const ensemble = requireEnv('ZOOKEEPER_ENSEMBLE');
  const ensembleDir = requireEnv('ZOOKEEPER_ENSEMBLE_DIR');
  const members: Member[] = ensemble.split(',').map((address, i) => ({
    address,
    port: Number(address.split(':')[1]),
    dir: join(ensembleDir, `zk${i + 1}`),
  }));
  const pidOf = (member: Member): number => Number(readFileSync(join(member.dir, 'pid'), 'utf8').trim());
  const modeOf = (member: Member): string => /Mode: (\w+)/.exec(fourLetters(member.port, 'srvr'))?.[1] ?? 'down';
  const waitServing = async (member: Member, seconds = 60): Promise<void> => {
    for (let i = 0; i < seconds * 5; i++) {
      if (['leader', 'follower'].includes(modeOf(member))) return;
      await sleep(200);
    }
    throw new Error(`ensemble member ${member.address} is not serving after ${seconds} s`);
  };
  const opened: Array<{ close(): Promise<void> }> = [];
  const backendOn = async (connectionString: string, sessionTimeout: number, rootPath: string) => {
    const backend = new ZooKeeperLockBackend({ connectionString, rootPath, sessionTimeout });
    opened.push(backend);
    await backend.init(AbortSignal.timeout(30_000));
    const locks = new LockService({ backends: { default: backend }, clock: systemClock });
    opened.push(locks);
    return { backend, locks };
  };

  beforeAll(async () => {
    for (const member of members) await waitServing(member);
  }, 120_000);
  afterAll(async () => {
    for (const member of members) spawnSync('kill', ['-CONT', String(pidOf(member))]);
    for (const closable of opened.reverse()) await closable.close();
  }, 60_000);

  it('reports the lock lost when its server is frozen past the session timeout, and recovers after', async () => {
    const follower = members.find((m) => modeOf(m) === 'follower')!;
    const others = members
      .filter((m) => m !== follower)
      .map((m) => m.address)
      .join(',');
    const rootPath = `/zk-freeze-${randomUUID()}`;
    const sessionTimeout = 2_000;
    // The holder reaches the ensemble only through the follower that will freeze.
    const holder = await backendOn(follower.address, sessionTimeout, rootPath);
    const rival = await backendOn(others, 10_000, rootPath);
    const changes: ConnectionChange['state'][] = [];
    holder.backend.watchConnection((change) => changes.push(change.state));
    const lock = await holder.locks.acquire('frozen');
    expect(await rival.locks.tryAcquire('frozen')).toBeNull();

    const pid = pidOf(follower);
    const frozenAt = Date.now();
    spawnSync('kill', ['-STOP', String(pid)]);
    try {
      // Lost on the client's own clock while the server is still frozen: nobody told it, it worked it out.
      for (let i = 0; i < 100 && !lock.signal.aborted; i++) await sleep(50);
      const lostAfter = Date.now() - frozenAt;
      expect(lock.signal.aborted).toBe(true);
      expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
      expect(lostAfter).toBeLessThanOrEqual(sessionTimeout + 500);
      expect(changes).toEqual(['suspended', 'lost']);
      // The leader expires the silent session too, so the rest of the ensemble can take the lock.
      const taken = await rival.locks.acquire('frozen', { waitTimeout: 15_000 });
      console.log(
        `frozen server: lost reported after ${lostAfter} ms, rival took over after ${Date.now() - frozenAt} ms`,
      );
      await taken.release();
    } finally {
      spawnSync('kill', ['-CONT', String(pid)]);
    }
    // Later locks run on a new session once the server is back.
    await waitServing(follower);
    const again = await holder.locks.acquire('after-freeze', { waitTimeout: 20_000 });
    expect(again.isHeld).toBe(true);
    await again.release();
  }, 60_000);

  it('keeps locking through the loss of the leader', async () => {
    const leader = members.find((m) => modeOf(m) === 'leader')!;
    const rootPath = `/zk-failover-${randomUUID()}`;
    // A session long enough to outlive the election of a new leader.
    const a = await backendOn(ensemble, 8_000, rootPath);
    const b = await backendOn(ensemble, 8_000, rootPath);
    const held = await a.locks.acquire('kept');
    spawnSync('kill', ['-KILL', String(pidOf(leader))]);
    try {
      // Mutual exclusion and hand-over go on with two of three servers.
      expect(await b.locks.tryAcquire('kept').catch(() => null)).toBeNull();
      let inside = 0;
      let overlaps = 0;
      const worker = async (locks: LockService): Promise<void> => {
        for (let round = 0; round < 10; round++) {
          await locks.using(
            'failover',
            async () => {
              if (++inside !== 1) overlaps++;
              await sleep(2);
              inside--;
            },
            { waitTimeout: 30_000 },
          );
        }
      };
      await Promise.all([worker(a.locks), worker(b.locks), worker(a.locks), worker(b.locks)]);
      expect(overlaps).toBe(0);
      expect(held.isHeld).toBe(true);
      expect(held.signal.aborted).toBe(false);
      await held.release();
      const next = await b.locks.acquire('kept', { waitTimeout: 10_000 });
      expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
      await next.release();
    } finally {
      spawnSync('bash', [join(leader.dir, 'start.sh')]);
      await waitServing(leader);
    }
  }, 120_000);
});
