import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Injectable,
  type NestInterceptor,
  Param,
  ParseIntPipe,
  Post,
  Sse,
  StreamableFile,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { Readable } from 'node:stream';
import { NEVER, type Observable, timeout } from 'rxjs';
import request from 'supertest';
import { DistributedLockModule, Locked, LockGuard, LockService, MemoryLockBackend } from '../../lib';
import { deferred } from '../support/memory-fixture';
import { ADAPTERS, eventually, startHttpApp } from '../http/http-app';

type Deferred = ReturnType<typeof deferred<void>>;
const gates = new Map<string, Deferred>();
const entered = new Map<string, Deferred>();
const running = new Map<string, number>();
const maxRunning = new Map<string, number>();

/** Work for `id` that waits until the test opens its gate; counts how many run at once per resource. */
async function work(id: string, resource = id): Promise<void> {
  const now = (running.get(resource) ?? 0) + 1;
  running.set(resource, now);
  maxRunning.set(resource, Math.max(maxRunning.get(resource) ?? 0, now));
  entered.get(id)?.resolve();
  try {
    await gates.get(id)?.promise;
  } finally {
    running.set(resource, running.get(resource)! - 1);
  }
}
function hold(id: string): { entered: Promise<void>; open: () => void } {
  const gate = deferred<void>();
  const inside = deferred<void>();
  gates.set(id, gate);
  entered.set(id, inside);
  return { entered: inside.promise, open: () => gate.resolve() };
}

/** A common timeout interceptor, applied on the handler: it sits inside the global LockInterceptor. */
@Injectable()
class Timeout50 implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(timeout(50));
  }
}

@Injectable()
class DenyGuard implements CanActivate {
  canActivate(): boolean {
    return false;
  }
}

let streamGate = deferred<void>();

@Controller('atk')
class AttackController {
  @Post(':id/slow')
  @Locked('slow:{params.id}')
  @UseInterceptors(Timeout50)
  async slow(@Param('id') id: string): Promise<object> {
    await work(`slow-${id}`, `slow:${id}`);
    return { ok: id };
  }

  @Post(':id/slow-arg')
  @Locked('slowarg:{0}')
  @UseInterceptors(Timeout50)
  async slowArg(@Param('id') id: string): Promise<object> {
    await work(`slowarg-${id}`, `slowarg:${id}`);
    return { ok: id };
  }

  @Post(':id/guard-deny')
  @UseGuards(LockGuard, DenyGuard)
  @Locked('gdeny:{params.id}', { waitTimeout: 3_000, ttl: 500 })
  guardDeny(): string {
    return 'never';
  }

  @Post(':id/int')
  @Locked('int:{params.id}')
  async byInt(@Param('id', ParseIntPipe) id: number): Promise<object> {
    await work(`int-${id}-${Math.random()}`, `order#${id}`);
    return { id };
  }

  @Get(':id/file')
  @Locked('file:{params.id}')
  file(): StreamableFile {
    const body = new Readable({ read() {} });
    body.push('first chunk;');
    void streamGate.promise.then(() => {
      body.push('last chunk');
      body.push(null);
    });
    return new StreamableFile(body);
  }

  @Get(':id/never')
  @Locked('never:{params.id}')
  never(): Observable<unknown> {
    return NEVER;
  }

  @Sse(':id/feed-wait')
  @Locked('feedw:{params.id}', { waitTimeout: 2_000 })
  feedWait(): Observable<{ data: string }> {
    return NEVER;
  }

  @Sse(':id/feed')
  @Locked('feed:{params.id}')
  feed(): Observable<{ data: string }> {
    return NEVER;
  }
}

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => process.off('unhandledRejection', onUnhandled));

describe.each(ADAPTERS)('attack: two holders and leaks on %s', (adapter) => {
  let app: INestApplication;
  let locks: LockService;

  beforeAll(async () => {
    app = await startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, shutdownTimeout: 0 })],
      controllers: [AttackController],
    });
    locks = app.get(LockService);
  });
  afterAll(() => app.close());
  const server = () => app.getHttpServer();

  it('a timeout interceptor on the handler answers the client, but the request key stays held while the Promise handler still runs', async () => {
    const first = hold('slow-1');
    const timedOut = await request(server()).post('/atk/1/slow');
    await first.entered;
    // The client got its answer (a timeout), but the handler is still running.
    expect(timedOut.status).toBe(500);
    expect(running.get('slow:1')).toBe(1);
    // Safe: the key is still held, a second request for the same order is refused.
    const stillHeld = await locks.isLocked('slow:1');
    const second = hold('slow-1');
    const secondResponse = request(server())
      .post('/atk/1/slow')
      .then((r) => r);
    await Promise.race([second.entered, new Promise((r) => setTimeout(r, 200))]);
    const concurrent = maxRunning.get('slow:1');
    first.open();
    second.open();
    await secondResponse;
    // Both the timed-out request's handler and the second one ran at once for order 1.
    expect({ stillHeld, concurrent }).toEqual({ stillHeld: true, concurrent: 1 });
  });

  it('argument keys with the same timeout interceptor: the method holds its own lock until it is done (control)', async () => {
    const first = hold('slowarg-1');
    const timedOut = await request(server()).post('/atk/1/slow-arg');
    await first.entered;
    expect(timedOut.status).toBe(500);
    expect(await locks.isLocked('slowarg:1')).toBe(true);
    first.open();
    await eventually(async () => !(await locks.isLocked('slowarg:1')));
  });

  it('LockGuard: a client that leaves while the guard waits, then a later guard refusing, leaves the key held for good', async () => {
    const blocker = await locks.acquire('gdeny:1');
    const aborted = request(server())
      .post('/atk/1/guard-deny')
      .timeout(100)
      .catch((e: unknown) => e);
    await aborted;
    await new Promise((r) => setTimeout(r, 50));
    // The holder leaves; the waiting guard is granted the key for a client that is gone, and DenyGuard refuses.
    await blocker.release();
    // Well past the 500 ms ttl: the watchdog keeps extending a lock nobody will ever release.
    await new Promise((r) => setTimeout(r, 1_500));
    const leaked = await locks.isLocked('gdeny:1');
    if (leaked) await locks.releaseAll();
    expect(leaked).toBe(false);
  });

  it('LockGuard, then a later guard refusing (client still there): the key is released with the response', async () => {
    const refused = await request(server()).post('/atk/2/guard-deny');
    expect(refused.status).toBe(403);
    await eventually(async () => !(await locks.isLocked('gdeny:2')), 1_000);
  });

  // KNOWN LIMITATION (README, Request handlers): request keys read the raw request, before pipes, so '07' and '7'
  // are two keys. Key by the piped argument ({0}) or normalise in requestKey(). Kept failing so a fix shows up.
  it.failing(
    'KNOWN LIMITATION: a request key reads the raw value: /7 and /07 are two locks for one order',
    async () => {
      const a = hold('int-7-x');
      gates.delete('int-7-x');
      // Hold every run of order 7 until the test says so.
      const gate = deferred<void>();
      const original = gates.get.bind(gates);
      gates.get = (key: string) => (key.startsWith('int-7-') ? gate : original(key));
      try {
        const one = request(server())
          .post('/atk/7/int')
          .then((r) => r);
        await eventually(() => running.get('order#7') === 1);
        const two = await Promise.race([
          request(server())
            .post('/atk/07/int')
            .then((r) => r.status),
          new Promise((r) => setTimeout(() => r('running'), 300)),
        ]);
        const concurrent = maxRunning.get('order#7');
        gate.resolve();
        await one;
        void a;
        expect(concurrent).toBe(1);
        expect(two).toBe(409);
      } finally {
        gates.get = original;
        gate.resolve();
      }
    },
  );

  it('a StreamableFile: the key is released while the file is still being streamed to the client', async () => {
    streamGate = deferred<void>();
    let releasedWhileStreaming: boolean | undefined;
    const response = request(server())
      .get('/atk/1/file')
      .buffer(true)
      .parse((res, callback) => {
        let text = '';
        res.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (releasedWhileStreaming === undefined) {
            // The first chunk is out, the rest is not produced yet.
            void locks.isLocked('file:1').then((held) => {
              releasedWhileStreaming = !held;
              streamGate.resolve();
            });
          }
        });
        res.on('end', () => callback(null, text));
      })
      .then((r) => r);
    const done = await response;
    expect(done.body).toBe('first chunk;last chunk');
    expect(releasedWhileStreaming).toBe(false);
  });

  it('an Observable that never completes on a plain route: the key is freed when the client leaves', async () => {
    const aborted = request(server())
      .get('/atk/1/never')
      .timeout(100)
      .catch((e: unknown) => e);
    await aborted;
    expect(await locks.isLocked('never:1')).toBe(true); // the stream still runs right after the abort
    let freed = true;
    try {
      await eventually(async () => !(await locks.isLocked('never:1')), 1_500);
    } catch {
      freed = false;
      await locks.releaseAll();
    }
    expect(freed).toBe(true);
  });

  it('an SSE handler whose key is busy answers 409 with Retry-After, without an unhandled rejection', async () => {
    const blocker = await locks.acquire('feed:9');
    const before = unhandled.length;
    try {
      const response = await request(server()).get('/atk/9/feed').timeout(2_000);
      expect(response.status).toBe(409);
      expect(response.headers['retry-after']).toMatch(/^\d+$/);
    } finally {
      await blocker.release();
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(unhandled.slice(before)).toEqual([]);
  });

  it('an SSE client that leaves before its lock is granted leaves no key behind', async () => {
    const blocker = await locks.acquire('feedw:10');
    const aborted = request(server())
      .get('/atk/10/feed-wait')
      .timeout(100)
      .catch((e: unknown) => e);
    await aborted;
    await blocker.release();
    await new Promise((r) => setTimeout(r, 100));
    expect(await locks.isLocked('feedw:10')).toBe(false);
  });
});
