import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import Redis from 'ioredis';
import { LockService, type Lock } from '../../lib';
import { redisPorts } from '../redis/support/redis-env';
import { TcpLink } from '../support/tcp-link';
import { Opened, waitUntil } from './redis-attack-support';

/**
 * Attack on the write batcher (write-batcher.ts): script calls made in one tick while replies are outstanding
 * are corked on the user's own socket and uncorked on process.nextTick. Nothing may be held for good, reordered,
 * leaked or left hanging, and the user's shared client must keep working.
 */
/**
 * Each key locked and released with the user's own INCRs on the shared client before, between and after, in
 * the same ticks: the INCRs must be answered in the order sent, nothing may stay corked, no key may be left.
 */
async function lockAmongUserCommands(redis: Redis, locks: LockService, keys: string[], counter: string): Promise<void> {
  const counts: Promise<number>[] = [];
  await Promise.all(
    keys.map(async (key) => {
      counts.push(redis.incr(counter));
      const handle = await locks.acquire(key, { ttl: 10_000 });
      counts.push(redis.incr(counter));
      await handle.release();
      counts.push(redis.incr(counter));
    }),
  );
  const answers = await Promise.all(counts);
  expect(answers).toEqual(answers.map((_, i) => i + 1));
  expect(redis.stream.writableCorked).toBe(0);
  expect(await redis.exists(...keys)).toBe(0);
}

describe('attack: Redis write batching on a shared client', () => {
  const [port] = redisPorts(1);
  const opened = new Opened();
  const cleanup: Array<() => Promise<unknown> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await Promise.resolve(step()).catch(() => undefined);
    await opened.closeAll();
  });

  const keysOf = (n: number, tag: string): string[] =>
    Array.from({ length: n }, (_, i) => `${tag}:${randomUUID()}:${i}`);

  /** A service on `clients`, closed after the test (the clients are the caller's). */
  async function serviceOn(...clients: Redis[]): Promise<LockService> {
    const backend = opened.backend({ clients });
    const locks = opened.service({ backends: { default: backend } });
    await locks.init();
    return locks;
  }

  /** Settles with what `work` gave, or 'hung' if it has not settled after `ms` of real time. */
  function within<T>(work: Promise<T>, ms: number, realSetTimeout: typeof setTimeout): Promise<T | 'hung'> {
    return new Promise((resolve, reject) => {
      const timer = realSetTimeout(() => resolve('hung'), ms);
      work.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  it('two services sharing one client (two batchers on one socket): every lock granted and freed, socket uncorked', async () => {
    const redis = opened.client(port!);
    const a = await serviceOn(redis);
    const b = await serviceOn(redis);
    const keys = keysOf(600, 'two-batchers');
    const handles = await Promise.all(keys.map((key, i) => (i % 2 ? a : b).acquire(key, { ttl: 10_000 })));
    expect(handles.every((h) => h.isHeld)).toBe(true);
    expect(await redis.exists(...keys)).toBe(keys.length);
    await Promise.all(handles.map((h) => h.release()));
    expect(redis.stream.writableCorked).toBe(0);
    expect(await redis.exists(...keys)).toBe(0);
  });

  it('a client with enableAutoPipelining: locks and the user commands of the same ticks all answered, in order', async () => {
    const redis = opened.client(port!, { enableAutoPipelining: true });
    const locks = await serviceOn(redis);
    const counter = `auto-pipe-counter:${randomUUID()}`;
    const keys = keysOf(200, 'auto-pipe');
    await lockAmongUserCommands(redis, locks, keys, counter);
  });

  it('the user corks the socket themselves around their own writes in the same tick: nothing is held for good', async () => {
    const redis = opened.client(port!);
    const locks = await serviceOn(redis);
    const keys = keysOf(64, 'user-cork');
    const counter = `user-cork-counter:${randomUUID()}`;
    // The user's own batching: cork, a few commands, uncork later in the tick (their nextTick, not ours).
    const user = async (): Promise<number[]> => {
      const replies: Promise<number>[] = [];
      for (let round = 0; round < 20; round++) {
        redis.stream.cork();
        for (let i = 0; i < 5; i++) replies.push(redis.incr(counter));
        process.nextTick(() => redis.stream.uncork());
        await Promise.resolve();
      }
      return Promise.all(replies);
    };
    const [handles, counts] = await Promise.all([
      Promise.all(keys.map((key) => locks.acquire(key, { ttl: 10_000 }))),
      user(),
    ]);
    expect(counts).toEqual(counts.map((_, i) => i + 1));
    expect(handles.every((h) => h.isHeld)).toBe(true);
    await Promise.all(handles.map((h) => h.release()));
    expect(redis.stream.writableCorked).toBe(0);
    expect(await redis.exists(...keys)).toBe(0);
  });

  it('SCRIPT FLUSH under a burst: every EVALSHA falls back to EVAL, every lock granted and freed', async () => {
    const redis = opened.client(port!);
    const locks = await serviceOn(redis);
    const admin = opened.client(port!);
    const keys = keysOf(96, 'flushed');
    await admin.script('FLUSH');
    const handles = await Promise.all(keys.map((key) => locks.acquire(key, { ttl: 10_000 })));
    expect(handles.every((h) => h.isHeld)).toBe(true);
    await admin.script('FLUSH');
    await Promise.all(handles.map((h) => h.release()));
    expect(redis.stream.writableCorked).toBe(0);
    expect(await redis.exists(...keys)).toBe(0);
  });

  it('10 000 acquires at once on one connection: all granted and freed, the socket left uncorked', async () => {
    const redis = opened.client(port!);
    // 10 000 calls on one connection take longer than the default nodeTimeout with or without batching.
    const locks = opened.service({ backends: { default: opened.backend({ clients: [redis], nodeTimeout: 30_000 }) } });
    await locks.init();
    const keys = keysOf(10_000, 'burst');
    const handles = await Promise.all(keys.map((key) => locks.acquire(key, { ttl: 30_000, waitTimeout: 15_000 })));
    expect(handles.every((h) => h.isHeld)).toBe(true);
    expect(redis.stream.writableCorked).toBe(0);
    let present = 0;
    for (let i = 0; i < keys.length; i += 1000) present += await redis.exists(...keys.slice(i, i + 1000));
    expect(present).toBe(keys.length);
    await Promise.all(handles.map((h) => h.release()));
    present = 0;
    for (let i = 0; i < keys.length; i += 1000) present += await redis.exists(...keys.slice(i, i + 1000));
    expect(present).toBe(0);
    expect(redis.stream.writableCorked).toBe(0);
  }, 60_000);

  it('a client in subscriber mode passed by mistake: calls fail and settle, the subscription still works', async () => {
    const sub = opened.client(port!);
    const pub = opened.client(port!);
    const channel = `batch-sub:${randomUUID()}`;
    const got: string[] = [];
    sub.on('message', (_c: string, message: string) => got.push(message));
    await sub.subscribe(channel);
    const backend = opened.backend({ clients: [sub] });
    const locks = opened.service({ backends: { default: backend } });
    const keys = keysOf(32, 'subscriber');
    const outcomes = await Promise.allSettled(
      keys.map((key) => locks.acquire(key, { ttl: 10_000, waitTimeout: 1_000 })),
    );
    expect(outcomes.every((o) => o.status === 'rejected')).toBe(true);
    expect(sub.stream.writableCorked).toBe(0);
    await pub.publish(channel, 'still here');
    await waitUntil('the subscriber got the message', () => got.includes('still here'));
    expect(await pub.exists(...keys)).toBe(0);
  });

  it('the user disconnects the shared client in the tick a batch is held: every call settles', async () => {
    const redis = opened.client(port!);
    const locks = await serviceOn(redis);
    const keys = keysOf(48, 'user-disconnect');
    // Replies outstanding so that the burst is corked.
    const pending = redis.ping();
    const outcomes = keys.map((key) =>
      locks.acquire(key, { ttl: 2_000, waitTimeout: 1_000 }).then(
        (h): Lock | Error => h,
        (e: unknown): Lock | Error => e as Error,
      ),
    );
    await Promise.resolve();
    redis.disconnect();
    await pending.catch(() => undefined);
    const settled = await Promise.all(outcomes);
    expect(settled).toHaveLength(keys.length);
  });

  it('a node whose link stalls while a batch is out: calls settle within their bounds, the others keep the quorum', async () => {
    const ports = redisPorts(3);
    const link = await TcpLink.open(ports[0]!);
    cleanup.push(() => link.close());
    const stalled = opened.client(link.port);
    const others = ports.slice(1).map((p) => opened.client(p));
    const backend = opened.backend({ clients: [stalled, ...others], nodeTimeout: 300 });
    const locks = opened.service({ backends: { default: backend } });
    await locks.init();
    const keys = keysOf(64, 'stalled');
    // Replies outstanding on the stalled node from the start: every call to it is corked, none answered.
    link.hold();
    const outstanding = stalled.ping().catch(() => undefined);
    const burst = keys.map((key) => locks.acquire(key, { ttl: 10_000, waitTimeout: 5_000 }));
    const handles = await Promise.all(burst);
    expect(handles.every((h) => h.isHeld)).toBe(true);
    await Promise.all(handles.map((h) => h.release()));
    link.pass();
    await outstanding;
    for (const c of others) expect(await c.exists(...keys)).toBe(0);
    await waitUntil('the stalled node has no key left', async () => (await stalled.exists(...keys)) === 0, 10_000);
    expect(stalled.stream.writableCorked).toBe(0);
  }, 30_000);

  it('a plain Node script taking 200 locks at once on its own client exits by itself when done', () => {
    const lib = join(__dirname, '../../lib');
    const code = `
      const { readFileSync } = require('node:fs');
      const swc = require('@swc/core');
      require.extensions['.ts'] = (module, filename) => {
        const { code } = swc.transformSync(readFileSync(filename, 'utf8'), { filename,
          jsc: { target: 'es2022', parser: { syntax: 'typescript', decorators: true },
                 transform: { legacyDecorator: true, decoratorMetadata: true } }, module: { type: 'commonjs' } });
        module._compile(code, filename);
      };
      const Redis = require('ioredis');
      const { LockService } = require(${JSON.stringify(join(lib, 'index.ts'))});
      const { RedlockBackend } = require(${JSON.stringify(join(lib, 'backends/redis/index.ts'))});
      (async () => {
        const redis = new Redis({ host: '127.0.0.1', port: ${port} });
        const locks = new LockService({ backends: { default: new RedlockBackend({ clients: [redis] }) } });
        const keys = Array.from({ length: 200 }, (_, i) => 'script-batch:' + process.pid + ':' + i);
        const handles = await Promise.all(keys.map((k) => locks.acquire(k, { ttl: 10000 })));
        await Promise.all(handles.map((h) => h.release()));
        await locks.close();
        await redis.quit();
        console.log('done');
      })();
    `;
    const child = spawnSync(process.execPath, ['-e', code], {
      cwd: join(__dirname, '../..'),
      env: process.env,
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(child.stderr).toBe('');
    expect(child.stdout).toContain('done');
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
  }, 20_000);

  it('over TLS (a TLS socket corked): locks and user commands of the same ticks all answered, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'batch-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const sockets: Array<{ destroy(): void }> = [];
    const server = createTlsServer(
      { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
      (inbound) => {
        const outbound = netConnect(port!, '127.0.0.1');
        sockets.push(inbound, outbound);
        inbound.pipe(outbound).pipe(inbound);
        const drop = (): void => {
          inbound.destroy();
          outbound.destroy();
        };
        inbound.on('error', drop).on('close', drop);
        outbound.on('error', drop).on('close', drop);
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const redis = opened.client((server.address() as AddressInfo).port, { tls: { rejectUnauthorized: false } });
    const locks = await serviceOn(redis);
    const counter = `tls-counter:${randomUUID()}`;
    const keys = keysOf(200, 'tls');
    await lockAmongUserCommands(redis, locks, keys, counter);
  });

  it('contended keys, two processes-worth of clients, connections killed mid-burst: never two holders, nothing left', async () => {
    const admin = opened.client(port!);
    const clients = [opened.client(port!), opened.client(port!)];
    const services = await Promise.all(clients.map((c) => serviceOn(c)));
    const keys = keysOf(4, 'contended');
    const inside = new Map<string, number>();
    let overlaps = 0;
    let entered = 0;
    let failed = 0;
    let killed = 0;
    const worker = async (w: number): Promise<void> => {
      const locks = services[w % 2]!;
      for (let round = 0; round < 15; round++) {
        const key = keys[(w + round) % keys.length]!;
        let inRound = false;
        try {
          await locks.using(
            key,
            async () => {
              inRound = true;
              entered++;
              const now = (inside.get(key) ?? 0) + 1;
              inside.set(key, now);
              if (now > 1) overlaps++;
              await new Promise<void>((resolve) => setImmediate(resolve));
              inside.set(key, inside.get(key)! - 1);
            },
            { ttl: 10_000, waitTimeout: 10_000 },
          );
        } catch {
          if (!inRound) failed++;
        }
      }
    };
    const killer = async (): Promise<void> => {
      for (let i = 0; i < 4; i++) {
        await waitUntil('some locks were taken', () => entered > i * 60, 10_000);
        const victim = clients[i % 2]!;
        const id = await (admin.client('LIST') as Promise<string>).then((list) => {
          const name = (victim.stream.localPort ?? 0).toString();
          return list
            .split('\n')
            .find((line) => line.includes(`:${name} `))
            ?.match(/id=(\d+)/)?.[1];
        });
        if (id) killed += Number(await admin.client('KILL', 'ID', id));
      }
    };
    await Promise.all([...Array.from({ length: 32 }, (_, w) => worker(w)), killer()]);
    expect(killed).toBeGreaterThan(0);
    expect(overlaps).toBe(0);
    expect(entered + failed).toBe(32 * 15);
    expect(entered).toBeGreaterThan(0);
    await waitUntil('no key is left held', async () => (await admin.exists(...keys)) === 0, 15_000);
    for (const c of clients) if (c.stream) expect(c.stream.writableCorked).toBe(0);
  }, 60_000);

  describe('with Jest fake timers (modern, the default: process.nextTick is faked too)', () => {
    afterEach(() => jest.useRealTimers());

    it("two locks taken at once, and the user's own commands after them, are answered", async () => {
      const realSetTimeout = setTimeout;
      const redis = opened.client(port!);
      const locks = await serviceOn(redis);
      // The user tests their own TTL logic with fake timers against a real Redis.
      jest.useFakeTimers();
      const [k1, k2] = keysOf(2, 'fake-timers');
      const both = Promise.all([locks.acquire(k1!, { ttl: 10_000 }), locks.acquire(k2!, { ttl: 10_000 })]);
      const handles = await within(both, 3_000, realSetTimeout);
      const ping = await within(redis.ping(), 3_000, realSetTimeout);
      const corked = redis.stream.writableCorked;
      jest.runAllTicks();
      jest.useRealTimers();
      if (handles !== 'hung') await Promise.all(handles.map((h) => h.release()));
      else await both.then((hs) => Promise.all(hs.map((h) => h.release())));
      expect(handles).not.toBe('hung');
      expect(ping).toBe('PONG');
      expect(corked).toBe(0);
    });
  });
});
