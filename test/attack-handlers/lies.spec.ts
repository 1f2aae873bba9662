import {
  BadRequestException,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  Injectable,
  type INestApplication,
  Logger,
  Param,
  type PipeTransform,
  Post,
  Query,
  UseGuards,
  UsePipes,
} from '@nestjs/common';
import { Agent, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Observable, of } from 'rxjs';
import request from 'supertest';
import {
  DistributedLockModule,
  type LockBackend,
  LockContext,
  Locked,
  LockGuard,
  LockService,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend } from '../support/memory-fixture';
import { ADAPTERS, startHttpApp } from '../http/http-app';

@Injectable()
class InventoryService {
  @Locked('inventory:{0.sku}')
  async reserve(item: { sku?: string }): Promise<string> {
    return `reserved ${item.sku}`;
  }

  @Locked('audit', { onLocked: 'skip' })
  async audit(): Promise<string> {
    return 'audited';
  }
}

@Injectable()
class FakeAuth implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string>; user?: object }>();
    if (req.headers.authorization !== 'Bearer ok') return false;
    req.user = { id: 'u1' };
    return true;
  }
}

/** Stands for body validation that refuses the request after the lock was taken. */
class Refuse implements PipeTransform {
  transform(): never {
    throw new BadRequestException('invalid');
  }
}

@Controller('lies')
class LiesController {
  constructor(private readonly inventory: InventoryService) {}

  @Post(':id/reserve')
  @Locked('order:{params.id}')
  async reserve(): Promise<string> {
    // A server-side bug: the service is called with an item that has no sku.
    return this.inventory.reserve({});
  }

  @Post(':id/reserve-arg')
  @Locked('order-arg:{0}')
  async reserveArg(@Param('id') _id: string): Promise<string> {
    return this.inventory.reserve({});
  }

  @Post('by-body')
  @Locked('order:{body.orderId}')
  byBody(): string {
    return 'ok';
  }

  @Get('q')
  @Locked('q:{query.id}')
  byQuery(@Query('id') id: unknown): object {
    return { id };
  }

  @Post(':id/fractional')
  @Locked('frac:{params.id}', { request: { retryAfter: 2 } })
  fractional(): string {
    return 'ok';
  }

  @Post(':id/refuse')
  @Locked('refuse:{params.id}')
  @UsePipes(Refuse)
  refuse(@Param('id') id: string): string {
    return id;
  }

  @Post(':id/nested-skip')
  @Locked('nested:{params.id}')
  async nestedSkip(): Promise<object> {
    return { audit: (await this.inventory.audit()) ?? 'skipped' };
  }

  @Post(':id/again')
  @Locked('again:{0}', { onLocked: 'skip' })
  async again(@Param('id') id: string, inner?: boolean): Promise<object> {
    if (inner) return { inner: true };
    // A second call of the same method, for another (busy) key: skipped, but the request itself was not.
    const nested = await this.again('busy', true);
    return { id, nested: nested ?? 'skipped' };
  }

  @Get('plain')
  plain(): object {
    return { locked: LockContext.current() !== undefined };
  }

  @Get(':id/locked')
  @Locked('ka:{params.id}')
  locked(): object {
    return { locked: LockContext.current() !== undefined };
  }

  @Get(':id/fail-open-stream')
  @Locked('fos:{0}', { request: { onBackendError: 'fail-open' } })
  failOpenStream(@Param('id') id: string): Observable<object> {
    return of({ id, locked: LockContext.current() !== undefined });
  }

  @Get(':id/fail-open')
  @Locked('fo:{params.id}', { request: { onBackendError: 'fail-open' } })
  async failOpen(@Param('id') id: string): Promise<object> {
    return { id, locked: LockContext.current() !== undefined };
  }
}

@Controller('guarded')
@UseGuards(LockGuard)
class GuardFirstController {
  @Post(':id')
  @UseGuards(FakeAuth)
  @Locked('refund:{user.id}:{params.id}')
  refund(@Param('id') id: string): string {
    return id;
  }
}

describe.each(ADAPTERS)('attack: lies on %s', (adapter) => {
  let app: INestApplication;
  let locks: LockService;
  let backend: BendableBackend;

  beforeAll(async () => {
    backend = new BendableBackend(new MemoryLockBackend());
    app = await startHttpApp(adapter, {
      imports: [
        DistributedLockModule.forRoot({ backends: { default: backend as LockBackend }, keyPrefix: 'secret-app:' }),
      ],
      controllers: [LiesController, GuardFirstController],
      providers: [InventoryService],
    });
    locks = app.get(LockService);
  });
  afterAll(() => app.close());
  afterEach(() => {
    backend.interfere = () => undefined;
    jest.restoreAllMocks();
  });
  const server = () => app.getHttpServer();

  it('a bad key inside a nested service call (a server bug) is answered 400 LOCK_BAD_KEY, with the internal message', async () => {
    const seen = [];
    for (const path of ['/lies/1/reserve', '/lies/1/reserve-arg']) {
      const response = await request(server()).post(path);
      seen.push({ path, status: response.status, body: JSON.stringify(response.body) });
    }
    const safe = expect.not.stringMatching(/InventoryService|inventory:\{0\.sku\}/);
    expect(seen).toEqual([
      { path: '/lies/1/reserve', status: 500, body: safe },
      { path: '/lies/1/reserve-arg', status: 500, body: safe },
    ]);
  });

  it("the 400 for a missing request value names the controller's class and method (the prefix strip fails on templates with ':')", async () => {
    const response = await request(server()).post('/lies/by-body').send({});
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('LOCK_BAD_KEY');
    expect(response.body.message).toMatch(/\{body\.orderId\}/);
    expect(response.body.message).not.toMatch(/LiesController|@Locked/);
  });

  it('query values that are arrays or empty are a 400 naming the placeholder; nothing is locked', async () => {
    const array = await request(server()).get('/lies/q?id=1&id=2');
    expect(array.status).toBe(400);
    expect(array.body.message).toMatch(/\{query\.id\} is an array/);
    const empty = await request(server()).get('/lies/q?id=');
    expect(empty.status).toBe(400);
    const ok = await request(server()).get('/lies/q?id=7');
    expect(ok.body).toEqual({ id: '7' });
  });

  it('retryAfter: 1.5 (HTTP wants whole seconds) is refused at bootstrap, naming the handler', async () => {
    @Controller('fractional')
    class FractionalController {
      @Post(':id')
      @Locked('frac:{params.id}', { request: { retryAfter: 1.5 } })
      fractional(): string {
        return 'ok';
      }
    }
    const booting = startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [FractionalController],
    });
    await expect(booting).rejects.toThrow(
      /FractionalController\.fractional: request option "retryAfter" must be a whole number/,
    );
    const blocker = await locks.acquire('frac:1');
    try {
      const response = await request(server()).post('/lies/1/fractional');
      expect(response.status).toBe(409);
      expect(response.headers['retry-after']).toBe('2');
    } finally {
      await blocker.release();
    }
  });

  it('a busy answer names the key without the keyPrefix', async () => {
    const blocker = await locks.acquire('frac:2');
    try {
      const response = await request(server()).post('/lies/2/fractional');
      expect(JSON.stringify(response.body)).not.toMatch(/secret-app/);
    } finally {
      await blocker.release();
    }
  });

  it('a pipe refusing the body after the request lock was taken: the 400 is the pipe’s, and the key is free', async () => {
    const response = await request(server()).post('/lies/1/refuse');
    expect(response.status).toBe(400);
    expect(response.body.message).toBe('invalid');
    expect(await locks.isLocked('refuse:1')).toBe(false);
  });

  it('a nested @Locked call that skips does not turn the request into a 202', async () => {
    const blocker = await locks.acquire('audit');
    try {
      const response = await request(server()).post('/lies/1/nested-skip');
      expect(response.status).toBe(201);
      expect(response.body).toEqual({ audit: 'skipped' });
    } finally {
      await blocker.release();
    }
  });

  it('a second call of the handler method inside the handler, skipped, does not mark the request skipped', async () => {
    const blocker = await locks.acquire('again:busy');
    try {
      const response = await request(server()).post('/lies/1/again');
      expect(response.status).toBe(201);
      expect(response.body).toEqual({ id: '1', nested: 'skipped' });
    } finally {
      await blocker.release();
    }
  });

  it('no lock context leaks into the next request on the same keep-alive connection', async () => {
    const address = (server() as { address(): AddressInfo }).address?.() as AddressInfo | null;
    const listening = address ? server() : await app.listen(0, '127.0.0.1');
    const port = ((listening as { address(): AddressInfo }).address() as AddressInfo).port;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const fetchJson = (path: string) =>
      new Promise<unknown>((resolve, reject) => {
        get({ host: '127.0.0.1', port, path, agent }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(JSON.parse(text)));
        }).on('error', reject);
      });
    expect(await fetchJson('/lies/1/locked')).toEqual({ locked: true });
    expect(await fetchJson('/lies/plain')).toEqual({ locked: false });
    expect(await fetchJson('/lies/2/locked')).toEqual({ locked: true });
    expect(await fetchJson('/lies/plain')).toEqual({ locked: false });
    agent.destroy();
  });

  it('a non-locked handler never touches the lock service', async () => {
    const take = jest.spyOn(LockService.prototype, 'take');
    const response = await request(server()).get('/lies/plain');
    expect(response.body).toEqual({ locked: false });
    expect(take).not.toHaveBeenCalled();
  });

  it('fail-open with a request key runs the handler unlocked and logs a warning', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('down')) : undefined);
    const response = await request(server()).get('/lies/1/fail-open');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ id: '1', locked: false });
    expect(warn.mock.calls.map((c) => String(c[0])).join('\n')).toMatch(/without its lock/);
  });

  it('fail-open is ignored on a handler returning an Observable with an argument key: 503 instead of running', async () => {
    backend.interfere = (operation) => (operation === 'acquire' ? Promise.reject(new Error('down')) : undefined);
    const response = await request(server()).get('/lies/1/fail-open-stream');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ id: '1', locked: false });
  });

  it('a skipped handler keyed by its arguments names "LiesController.again" as the resource, not its key', async () => {
    const blocker = await locks.acquire('again:3');
    try {
      const response = await request(server()).post('/lies/3/again');
      expect(response.status).toBe(202);
      expect(response.body).toMatchObject({ code: 'LOCK_SKIPPED', resource: 'again:3' });
    } finally {
      await blocker.release();
    }
  });

  it('LockGuard on the controller runs before the auth guard on the method: an authenticated client gets 400 LOCK_BAD_KEY', async () => {
    const response = await request(server()).post('/guarded/5').set('authorization', 'Bearer ok');
    // Either the lock works (201) or the server owns its misconfiguration (5xx): never a 400 blaming the client.
    expect(response.status).not.toBe(400);
  });
});
