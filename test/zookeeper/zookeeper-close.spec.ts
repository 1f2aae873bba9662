import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { FlakyLink, sleep, within, zookeeperConnect } from './zookeeper-test-support';

describe('ZooKeeperLockBackend.close() with work in flight', () => {
  it('ends an init still connecting at once, instead of leaving it to its connectTimeout', async () => {
    // The server is reached through a link that passes nothing: the session never comes.
    const link = await FlakyLink.open(zookeeperConnect());
    link.hold();
    const backend = new ZooKeeperLockBackend({ connectionString: link.address, connectTimeout: 20_000 });
    try {
      const init = backend.init(new AbortController().signal).then(
        () => undefined,
        (error: unknown) => error as Error,
      );
      await sleep(200);
      const started = Date.now();
      await backend.close();
      const error = await within(3_000, init);
      expect(error).toMatchObject({ code: 'LOCK_BACKEND', message: expect.stringMatching(/closed/) });
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await backend.close();
      link.pass();
      await link.close();
    }
  }, 30_000);
});
