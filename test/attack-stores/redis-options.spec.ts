import Redis from 'ioredis';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { LockBackendError, LockConfigurationError } from '../../lib';
import { RedlockBackend, type RedlockBackendOptions } from '../../lib/backends/redis';
import { redisPorts } from '../redis/support/redis-env';
import { never, Opened, sleep, TcpLink } from './redis-attack-support';

/**
 * Bad RedlockBackend options fail in the constructor with a LockConfigurationError naming the option, before any
 * connection is made; what only a connection can tell (two clients that reach the same server) fails init.
 */
describe('attack: RedlockBackend options', () => {
  const opened = new Opened();
  /** A server that counts connections: the constructor must open none. */
  let listener: Server;
  let connections = 0;
  let listenerPort = 0;
  /** A client that never connects on its own. */
  const idle = (port = listenerPort): Redis => {
    const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
    redis.on('error', () => undefined);
    return redis;
  };
  const rejects = (options: unknown, option: string): void => {
    let error: unknown;
    try {
      new RedlockBackend(options as RedlockBackendOptions);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as LockConfigurationError).option).toBe(option);
  };

  beforeAll(async () => {
    listener = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    listenerPort = (listener.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await opened.closeAll();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  });

  const badDurations: unknown[] = [0, -1, NaN, Infinity, -Infinity, 1.5, '500', null, 2 ** 31, 2 ** 53, 10n];
  describe.each(['nodeTimeout', 'handoffTimeout', 'placeTtl'])('%s', (option) => {
    it.each(badDurations.map((value) => [String(value), value]))('rejects %s', (_, value) => {
      rejects({ clients: [idle()], [option]: value }, option);
    });

    it('accepts 1 and 2^31 − 1 (the longest timer Node runs as asked)', () => {
      expect(() => new RedlockBackend({ clients: [idle()], [option]: 1 })).not.toThrow();
      expect(() => new RedlockBackend({ clients: [idle()], [option]: 2 ** 31 - 1 })).not.toThrow();
    });
  });

  it('rejects options that are not an object, and unknown options by name', () => {
    rejects(undefined, 'options');
    rejects(null, 'options');
    rejects('redis://127.0.0.1', 'options');
    rejects({ client: [idle()] }, 'client');
    rejects({ clients: [idle()], ttl: 1_000 }, 'ttl');
  });

  it('rejects zero nodes', () => {
    rejects({}, 'clients');
    rejects({ clients: [] }, 'clients');
    rejects({ nodes: [] }, 'clients');
    rejects({ clients: [], nodes: [] }, 'clients');
  });

  it('rejects clients that are not ioredis clients, and a client not given in a list', () => {
    rejects({ clients: idle() }, 'clients');
    rejects({ clients: [{}] }, 'clients[0]');
    rejects({ clients: [null] }, 'clients[0]');
    rejects({ clients: ['redis://127.0.0.1:6379'] }, 'clients[0]');
    rejects({ clients: [Redis] }, 'clients[0]');
    // node-redis v4: evalSha, not evalsha; no status string.
    const nodeRedis = { evalSha: () => undefined, duplicate: () => undefined, isOpen: false };
    rejects({ clients: [idle(), nodeRedis] }, 'clients[1]');
    rejects({ nodes: 'redis://127.0.0.1:6379' }, 'nodes');
    rejects({ nodes: [42] }, 'nodes[0]');
    rejects({ nodes: [null] }, 'nodes[0]');
  });

  it('rejects the same server listed twice: one client twice, two clients, a client and a node, two nodes', () => {
    const a = idle();
    rejects({ clients: [a, a] }, 'clients');
    rejects({ clients: [idle(), idle()] }, 'clients');
    rejects({ clients: [idle()], nodes: [{ host: '127.0.0.1', port: listenerPort }] }, 'nodes');
    rejects({ nodes: [{ host: '127.0.0.1', port: listenerPort }, `redis://127.0.0.1:${listenerPort}`] }, 'nodes');
    rejects({ nodes: [{ port: 6390 }, 'redis://localhost:6390'] }, 'nodes');
    // Different servers are fine, and so are several masters of one host.
    expect(() => new RedlockBackend({ clients: [idle(listenerPort), idle(listenerPort + 1)] })).not.toThrow();
  });

  it('opens no connection until init, whatever the options', async () => {
    const before = connections;
    const clients = [idle()];
    const backend = new RedlockBackend({
      clients,
      nodes: [{ host: '127.0.0.1', port: listenerPort + 7 }, `redis://127.0.0.1:${listenerPort + 8}`],
      nodeTimeout: 100,
    });
    await sleep(50);
    expect(connections).toBe(before);
    expect(clients[0]!.status).toBe('wait');
    await backend.close();
    expect(connections).toBe(before);
  });

  it('init fails with LockConfigurationError when two clients reach the same server by different addresses', async () => {
    const [port] = redisPorts(1);
    // Two addresses of one server: itself, and a proxy in front of it. Counted twice, that one server would make
    // a quorum of 2 of 3 on its own.
    const alias = await TcpLink.open(port!);
    try {
      const backend = opened.backend({
        clients: [opened.client(port!), opened.client(alias.port), opened.client(redisPorts(2)[1]!)],
      });
      const error = await backend.init(never).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockConfigurationError);
      expect((error as Error).message).toContain(`127.0.0.1:${port}`);
      expect((error as Error).message).toContain(`127.0.0.1:${alias.port}`);
    } finally {
      await alias.close();
    }
  });

  it('two nodes need both (quorum 2): one unreachable fails init with a LockBackendError naming it', async () => {
    const [port] = redisPorts(1);
    const dead = listenerPort + 9;
    const backend = opened.backend({
      clients: [opened.client(port!), opened.client(dead, { retryStrategy: () => null })],
      nodeTimeout: 200,
    });
    const error = await backend.init(never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockBackendError);
    expect((error as LockBackendError).nodeFailures.map((f) => f.node)).toEqual([`127.0.0.1:${dead}`]);
  });
});
