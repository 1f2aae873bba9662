import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { LockService } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { client, redisPorts } from './support/redis-env';

/** A holder process killed with SIGKILL never releases: its key must come free by the ttl alone. */
describe('Redlock: a holder killed with SIGKILL', () => {
  it('frees the key after its ttl (measured, at most ttl + 10 %)', async () => {
    const [port] = redisPorts(1);
    const ttl = 1_000;
    const key = `killed:${randomUUID()}`;
    const child = spawn(
      process.execPath,
      [join(__dirname, 'support', 'holder-child.js'), String(port), key, String(ttl)],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.once('exit', (code) => reject(new Error(`holder exited with ${code} before taking the lock: ${out}`)));
      });
      // Counted from the moment the grant is known here, which is after it happened: the bound is generous.
      const grantedAt = Date.now();
      expect(line).toMatch(/^held \d+$/);
      child.kill('SIGKILL');

      const redis = client(port!);
      const backend = new RedlockBackend({ clients: [redis] });
      const locks = new LockService({ backends: { default: backend } });
      try {
        expect(await locks.isLocked(key)).toBe(true);
        // A waiter with a polling pause far beyond the ttl: it must be woken at expiry by the store's hint.
        const next = await locks.acquire(key, { waitTimeout: 5 * ttl, retry: { delay: 10 * ttl, maxDelay: 10 * ttl } });
        const freedAfter = Date.now() - grantedAt;
        expect(freedAfter).toBeLessThanOrEqual(ttl * 1.1);
        expect(next.fencingToken).toBeGreaterThan(BigInt(line.split(' ')[1]!));
        await next.release();
      } finally {
        await locks.close();
        await backend.close();
        await redis.quit();
      }
    } finally {
      child.kill('SIGKILL');
    }
  }, 30_000);
});
