import {
  Body,
  Controller,
  Get,
  type INestApplication,
  Injectable,
  Param,
  type PipeTransform,
  Post,
  Sse,
  UseFilters,
  UseGuards,
  UsePipes,
} from '@nestjs/common';
import { interval, map, type Observable } from 'rxjs';
import request from 'supertest';
import {
  DistributedLockModule,
  Locked,
  LockContext,
  LockExceptionFilter,
  LockGuard,
  type LockBackend,
  LockService,
  MemoryLockBackend,
  requestKey,
} from '../../lib';
import { BendableBackend, deferred } from '../support/memory-fixture';
import { ADAPTERS, eventually, startHttpApp } from './http-app';

type Deferred = ReturnType<typeof deferred<void>>;
const gates = new Map<string, Deferred>();
const entered = new Map<string, Deferred>();
/** The handler for `id` waits until the test opens its gate; the test can wait until it has entered. */
async function work(id: string): Promise<void> {
  entered.get(id)?.resolve();
  await gates.get(id)?.promise;
}
function hold(id: string): { entered: Promise<void>; open: () => void } {
  const gate = deferred<void>();
  const inside = deferred<void>();
  gates.set(id, gate);
  entered.set(id, inside);
  return { entered: inside.promise, open: () => gate.resolve() };
}

let pipeRuns = 0;
/** Stands for body validation: counts how often it ran, refuses a body without `amount`. */
class CountingValidation implements PipeTransform {
  transform(value: unknown): unknown {
    if (typeof value === 'object' && value !== null && !('amount' in value)) return value;
    pipeRuns++;
    return value;
  }
}

@Controller('orders')
class OrdersController {
  @Post(':id/pay')
  @Locked('order:{params.id}')
  @UsePipes(CountingValidation)
  async pay(@Param('id') id: string, @Body() body: { amount: number }): Promise<object> {
    await work(id);
    return { id, amount: body.amount, token: LockContext.current()!.fencingToken.toString() };
  }

  @Post(':id/ship')
  @Locked('ship:{params.id}', { request: { busyStatus: 423, retryAfter: 7 } })
  async ship(@Param('id') id: string): Promise<object> {
    await work(`ship-${id}`);
    return { shipped: id };
  }

  @Post(':id/refresh')
  @Locked('refresh:{params.id}', { onLocked: 'skip' })
  async refresh(@Param('id') id: string): Promise<object> {
    await work(`refresh-${id}`);
    return { refreshed: id };
  }

  @Post('tenant')
  @Locked(
    requestKey(
      (context) =>
        `tenant:${String(context.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-tenant'])}`,
    ),
  )
  async tenant(): Promise<object> {
    return { key: LockContext.current()!.key };
  }

  @Post('by-header')
  @Locked('header:{headers.X-Tenant}:{body.sku}')
  async byHeader(): Promise<object> {
    return { key: LockContext.current()!.key };
  }

  @Post(':id/guarded')
  @UseGuards(LockGuard)
  @Locked('guarded:{params.id}')
  @UsePipes(CountingValidation)
  async guarded(@Param('id') id: string, @Body() body: { amount: number }): Promise<object> {
    await work(`guarded-${id}`);
    return { id, amount: body.amount };
  }

  @Sse('feed/:id')
  @Locked('feed:{params.id}')
  feed(@Param('id') id: string): Observable<{ data: string }> {
    return interval(5).pipe(map((n) => ({ data: `${id}:${n}` })));
  }
}

@Injectable()
class Unused {}

describe.each(ADAPTERS)('locked request handlers on %s', (adapter) => {
  let app: INestApplication;
  let memory: MemoryLockBackend;
  let backend: BendableBackend;
  let locks: LockService;

  beforeAll(async () => {
    memory = new MemoryLockBackend();
    backend = new BendableBackend(memory);
    app = await startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: backend as LockBackend }, shutdownTimeout: 0 })],
      controllers: [OrdersController],
      providers: [Unused],
    });
    locks = app.get(LockService);
  });
  afterAll(() => app.close());
  afterEach(() => {
    backend.interfere = () => undefined;
  });

  const server = () => app.getHttpServer();

  it('holds the request key around the handler; a concurrent request gets 409 naming the resource, with Retry-After', async () => {
    // Teach the estimate: a payment takes about 300 ms.
    const warm = hold('w1');
    const warming = request(server())
      .post('/orders/w1/pay')
      .send({ amount: 1 })
      .then((r) => r);
    await warm.entered;
    await new Promise((resolve) => setTimeout(resolve, 300));
    warm.open();
    expect((await warming).status).toBe(201);

    const first = hold('7');
    const paying = request(server())
      .post('/orders/7/pay')
      .send({ amount: 5 })
      .then((r) => r);
    await first.entered;
    expect(await locks.isLocked('order:7')).toBe(true);
    const pipeRunsBefore = pipeRuns;
    const second = await request(server()).post('/orders/7/pay').send({ amount: 5 });
    expect(second.status).toBe(409);
    expect(second.body).toEqual({
      statusCode: 409,
      code: 'LOCK_UNAVAILABLE',
      message: expect.stringContaining('"order:7"'),
      resource: 'order:7',
    });
    // From the hold times seen, not from the 30 s ttl the watchdog keeps topping up.
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(second.headers['retry-after'])).toBeLessThanOrEqual(2);
    // The lock was taken before pipes: the refused request never reached body validation.
    expect(pipeRuns).toBe(pipeRunsBefore);
    first.open();
    const response = await paying;
    expect(response.status).toBe(201);
    expect(response.body).toMatchObject({ id: '7', amount: 5 });
    await eventually(async () => !(await locks.isLocked('order:7')));
  });

  it('answers 423 with the configured Retry-After when the handler asks for it', async () => {
    const first = hold('ship-1');
    const shipping = request(server())
      .post('/orders/1/ship')
      .then((r) => r);
    await first.entered;
    const second = await request(server()).post('/orders/1/ship');
    expect(second.status).toBe(423);
    expect(second.headers['retry-after']).toBe('7');
    first.open();
    expect((await shipping).status).toBe(201);
  });

  it("answers 202 saying the call was skipped with onLocked: 'skip' — not an empty 200", async () => {
    const first = hold('refresh-1');
    const refreshing = request(server())
      .post('/orders/1/refresh')
      .then((r) => r);
    await first.entered;
    const second = await request(server()).post('/orders/1/refresh');
    expect(second.status).toBe(202);
    expect(second.body).toMatchObject({ code: 'LOCK_SKIPPED', resource: 'refresh:1' });
    first.open();
    expect((await refreshing).status).toBe(201);
  });

  it('reads headers (any case) and the body; a missing value is a 400 naming the placeholder, and nothing is locked', async () => {
    const ok = await request(server()).post('/orders/by-header').set('x-tenant', 'acme').send({ sku: 'A-1' });
    expect(ok.status).toBe(201);
    expect(ok.body).toEqual({ key: 'header:acme:A-1' });
    const missing = await request(server()).post('/orders/by-header').set('x-tenant', 'acme').send({});
    expect(missing.status).toBe(400);
    expect(missing.body.message).toMatch(/\{body\.sku\} is undefined/);
    expect(await locks.isLocked('header:acme:undefined')).toBe(false);
    const fn = await request(server()).post('/orders/tenant').set('x-tenant', 'globex');
    expect(fn.body).toEqual({ key: 'tenant:globex' });
  });

  it('answers 503 when the lock store is down, and runs nothing', async () => {
    backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('store down')) : undefined);
    const response = await request(server()).post('/orders/9/pay').send({ amount: 1 });
    expect(response.status).toBe(503);
    expect(response.body).toMatchObject({ code: 'LOCK_BACKEND' });
    expect(JSON.stringify(response.body)).not.toMatch(/store down/);
  });

  it('keeps the lock until the handler ends when the client goes away mid-request, then releases it', async () => {
    const first = hold('42');
    const aborted = request(server())
      .post('/orders/42/pay')
      .send({ amount: 1 })
      .timeout(50)
      .catch((e: unknown) => e);
    await first.entered;
    await aborted;
    // The client is gone but the handler still runs: the key must stay held (else two payments could run).
    expect(await locks.isLocked('order:42')).toBe(true);
    first.open();
    await eventually(async () => !(await locks.isLocked('order:42')));
  });

  it('releases the lock of a streaming (SSE) response when the client disconnects', async () => {
    const seen: string[] = [];
    const watching = locks.events$.subscribe((event) => {
      if (event.keys.includes('feed:1')) seen.push(event.type);
    });
    await request(server())
      .get('/orders/feed/1')
      .buffer(false)
      .parse((res, callback) => {
        // Leave after the first event: the stream was running under the lock by then.
        res.once('data', () => (res as unknown as { destroy(): void }).destroy());
        res.on('error', () => callback(null, null));
        res.on('close', () => callback(null, null));
      })
      .catch(() => undefined);
    await eventually(() => seen.includes('released'), 5_000, 'stream released');
    watching.unsubscribe();
    expect(seen).toEqual(['acquired', 'released']);
    expect(await locks.isLocked('feed:1')).toBe(false);
  });

  it('LockGuard refuses a busy resource before pipes and the body are processed, and holds the lock through the handler', async () => {
    const first = hold('guarded-3');
    const taking = request(server())
      .post('/orders/3/guarded')
      .send({ amount: 2 })
      .then((r) => r);
    await first.entered;
    const before = pipeRuns;
    const second = await request(server()).post('/orders/3/guarded').send({ amount: 2 });
    expect(second.status).toBe(409);
    expect(pipeRuns).toBe(before);
    expect(await locks.isLocked('guarded:3')).toBe(true);
    first.open();
    expect((await taking).body).toEqual({ id: '3', amount: 2 });
    await eventually(async () => !(await locks.isLocked('guarded:3')));
  });
});

describe('fail-open on the request path', () => {
  it("runs the handler without the lock when the store is down and onBackendError is 'fail-open'", async () => {
    @Controller('reports')
    class ReportsController {
      @Get(':id')
      @Locked('report:{params.id}', { request: { onBackendError: 'fail-open' } })
      async report(@Param('id') id: string): Promise<object> {
        return { id, locked: LockContext.current() !== undefined };
      }
    }
    const backend = new BendableBackend(new MemoryLockBackend());
    backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('down')) : undefined);
    const app = await startHttpApp('express', {
      imports: [DistributedLockModule.forRoot({ backends: { default: backend as LockBackend } })],
      controllers: [ReportsController],
    });
    const response = await request(app.getHttpServer()).get('/reports/5');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ id: '5', locked: false });
    await app.close();
  });
});

describe('LockExceptionFilter, for handlers that use LockService themselves', () => {
  it('answers a busy using() in a plain handler with 409 and the same body, and a bad key with 400', async () => {
    @Controller('plain')
    @UseFilters(LockExceptionFilter)
    class PlainController {
      constructor(private readonly locks: LockService) {}

      @Post(':id')
      async run(@Param('id') id: string): Promise<object> {
        return this.locks.using(`plain:${id}`, async () => ({ id }));
      }
    }
    const memory = new MemoryLockBackend();
    const app = await startHttpApp('express', {
      imports: [DistributedLockModule.forRoot({ backends: { default: memory } })],
      controllers: [PlainController],
    });
    const holder = await new LockService({ backends: { default: memory } }).acquire('plain:1');
    const busy = await request(app.getHttpServer()).post('/plain/1');
    expect(busy.status).toBe(409);
    expect(busy.body).toMatchObject({ code: 'LOCK_UNAVAILABLE', resource: 'plain:1' });
    expect(busy.headers['retry-after']).toBe('1');
    await holder.release();
    const bad = await request(app.getHttpServer()).post(`/plain/${'x'.repeat(2000)}`);
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'LOCK_BAD_KEY' });
    await app.close();
  });
});

describe('LockService.heldLocks()', () => {
  it('lists what this service holds now, and nothing once released', async () => {
    const locks = new LockService({ backends: { default: new MemoryLockBackend() } });
    const lock = await locks.acquire(['b', 'a']);
    expect(locks.heldLocks()).toEqual([
      {
        keys: ['a', 'b'],
        backend: 'default',
        fencingTokens: [lock.fencingTokenFor('a'), lock.fencingTokenFor('b')],
        acquiredAt: lock.acquiredAt,
        expiresAt: lock.expiresAt,
      },
    ]);
    await lock.release();
    expect(locks.heldLocks()).toEqual([]);
  });
});

describe('@Locked on a controller class', () => {
  it("locks every handler with the class's key, keeps a handler's own @Locked, and leaves helpers alone", async () => {
    @Controller('tenants')
    @Locked('tenant:{headers.x-tenant}')
    class TenantController {
      @Post('import')
      async import(): Promise<object> {
        await work('import');
        return { key: LockContext.current()!.key };
      }

      @Post('export')
      async export(): Promise<object> {
        return { key: LockContext.current()!.key };
      }

      @Post('audit/:id')
      @Locked('audit:{params.id}')
      async audit(): Promise<object> {
        return { key: LockContext.current()!.key };
      }

      helper(): boolean {
        return LockContext.current() === undefined;
      }
    }
    const app = await startHttpApp('express', {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [TenantController],
    });
    const server = app.getHttpServer();
    const importing = hold('import');
    const first = request(server)
      .post('/tenants/import')
      .set('x-tenant', 'acme')
      .then((r) => r);
    await importing.entered;
    // Another handler of the class, same tenant: the class key holds it off.
    const exporting = await request(server).post('/tenants/export').set('x-tenant', 'acme');
    expect(exporting.status).toBe(409);
    expect(exporting.body).toMatchObject({ resource: 'tenant:acme' });
    expect((await request(server).post('/tenants/export').set('x-tenant', 'globex')).body).toEqual({
      key: 'tenant:globex',
    });
    expect((await request(server).post('/tenants/audit/9').set('x-tenant', 'acme')).body).toEqual({ key: 'audit:9' });
    expect(app.get(TenantController).helper()).toBe(true);
    importing.open();
    expect((await first).body).toEqual({ key: 'tenant:acme' });
    await app.close();
  });
});
