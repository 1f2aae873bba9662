import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { LockService, systemClock } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { zookeeperConnect } from './zookeeper-test-support';

const SESSION_TIMEOUT = 2_000;

describe('ZooKeeper: a holder process killed with SIGKILL', () => {
  it('frees its lock by itself once its session times out — no ttl involved', async () => {
    const connect = zookeeperConnect();
    const rootPath = `/zk-crash-${randomUUID()}`;
    const key = 'crash';
    const holder = spawn(
      process.execPath,
      [join(__dirname, 'fixtures/lock-holder.js'), connect, rootPath, key, String(SESSION_TIMEOUT)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const backend = new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: SESSION_TIMEOUT });
    const locks = new LockService({ backends: { default: backend }, clock: systemClock });
    try {
      await backend.init(AbortSignal.timeout(15_000));
      const said = await new Promise<string>((resolve, reject) => {
        holder.stdout!.once('data', (data: Buffer) => resolve(data.toString().trim()));
        holder.once('exit', (code) => reject(new Error(`the holder process exited early (${code})`)));
      });
      expect(said).toBe('held');
      expect(await locks.tryAcquire(key)).toBeNull();

      const killedAt = Date.now();
      holder.kill('SIGKILL');
      const lock = await locks.acquire(key, { waitTimeout: 15_000 });
      const freeAfter = Date.now() - killedAt;
      console.log(`lock free ${freeAfter} ms after SIGKILL (session timeout ${SESSION_TIMEOUT} ms)`);
      // The server expires a silent session between 2/3 of its timeout (last ping) and the timeout plus a tick.
      expect(freeAfter).toBeGreaterThanOrEqual(SESSION_TIMEOUT / 2);
      expect(freeAfter).toBeLessThanOrEqual(SESSION_TIMEOUT * 1.5 + 500);
      await lock.release();
    } finally {
      holder.kill('SIGKILL');
      await locks.close();
      await backend.close();
    }
  });
});
