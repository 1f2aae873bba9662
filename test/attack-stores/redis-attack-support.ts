import Redis, { type RedisOptions } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { LockService, type LockServiceConfig } from '../../lib';
import type { AcquireRequest } from '../../lib/backends/lock-backend';
import { RedlockBackend, type RedlockBackendOptions } from '../../lib/backends/redis';
import { sleep } from '../redis/support/redis-env';
import type { RedisProcesses } from '../redis/support/redis-processes';

export { sleep };

export const never: AbortSignal = new AbortController().signal;
setMaxListeners(0, never);

/** An owner token like the core's: 128 random bits, hex. */
export const owner = (): string => randomBytes(16).toString('hex');

export const request = (key: string, who: string, keepPlace = false, ttl = 10_000): AcquireRequest => ({
  key,
  owner: who,
  ttl,
  keepPlace,
  onLost: () => undefined,
  signal: never,
});

/** Polls `done` every 10 ms for up to `ms`; throws naming `what` if it never became true. */
export async function waitUntil(what: string, done: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await sleep(10);
  }
}

/** ms `work` took, and what it gave (or the error it threw). */
export async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const startedAt = performance.now();
  try {
    const value = await work();
    return { ms: performance.now() - startedAt, value };
  } catch (error) {
    return { ms: performance.now() - startedAt, error };
  }
}

export const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

/**
 * Everything one test file opens — clients, backends, services — closed again in `closeAll`, so that a failing
 * test does not leave connections reconnecting for the rest of the run.
 */
export class Opened {
  private readonly clients: Redis[] = [];
  private readonly backends: RedlockBackend[] = [];
  private readonly services: LockService[] = [];

  /** A client that gives up on a dead node quickly and reconnects fast when it is back. */
  client(port: number, extra: RedisOptions = {}): Redis {
    const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 50, ...extra });
    redis.on('error', () => undefined);
    this.clients.push(redis);
    return redis;
  }

  backend(options: RedlockBackendOptions): RedlockBackend {
    const backend = new RedlockBackend(options);
    this.backends.push(backend);
    return backend;
  }

  /** A backend on new clients of `ports`. */
  backendOn(ports: readonly number[], options: Omit<RedlockBackendOptions, 'clients'> = {}): RedlockBackend {
    return this.backend({ ...options, clients: ports.map((port) => this.client(port)) });
  }

  /** A service that lets go of what it still holds at once when closed (no shutdownTimeout grace by default). */
  service(config: LockServiceConfig): LockService {
    const service = new LockService({ shutdownTimeout: 0, ...config });
    this.services.push(service);
    return service;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.services.splice(0).map((s) => s.close()));
    await Promise.allSettled(this.backends.splice(0).map((b) => b.close()));
    // QUIT where connected (disconnect() leaves a 2 s timer of ioredis behind, which keeps jest from exiting),
    // but not for long: a client behind a held link or on a paused node never gets the answer.
    await Promise.allSettled(this.clients.splice(0).map(quitSoon));
  }
}

async function quitSoon(client: Redis): Promise<void> {
  if (client.status !== 'ready') return client.disconnect();
  const timer = setTimeout(() => client.disconnect(), 200);
  try {
    await client.quit();
  } catch {
    client.disconnect();
  } finally {
    clearTimeout(timer);
  }
}

export { TcpLink } from '../support/tcp-link';

/**
 * Collects unhandled promise rejections for the length of a test file: nothing this library does may produce
 * one. (Jest would otherwise not fail the test that caused it.)
 */
export function unhandledRejections(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown): void => void seen.push(reason);
  process.on('unhandledRejection', onRejection);
  return { seen, stop: () => void process.off('unhandledRejection', onRejection) };
}

/**
 * The hooks a suite on its own redis-server processes needs after its tests: nodes a test paused are resumed
 * and its clients closed after each test; the servers stopped after the file, which must have caused no
 * unhandled rejection.
 */
export function cleanUpAfterTests(
  servers: RedisProcesses,
  opened: Opened,
  paused: Set<number>,
  rejections: ReturnType<typeof unhandledRejections>,
): void {
  afterEach(async () => {
    for (const p of paused) servers.resume(p);
    paused.clear();
    await opened.closeAll();
  });
  afterAll(async () => {
    rejections.stop();
    await servers.stopAll();
    expect(rejections.seen).toEqual([]);
  });
}
