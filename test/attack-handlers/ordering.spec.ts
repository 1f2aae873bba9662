import {
  Body,
  type CallHandler,
  Controller,
  type ExecutionContext,
  Get,
  Injectable,
  type INestApplication,
  Module,
  type NestInterceptor,
  Param,
  type PipeTransform,
  Post,
  UseGuards,
  UsePipes,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { from, type Observable, timeout } from 'rxjs';
import request from 'supertest';
import { DistributedLockModule, Locked, LockGuard, LockService, MemoryLockBackend } from '../../lib';
import { deferred } from '../support/memory-fixture';
import { ADAPTERS, eventually, startHttpApp } from '../http/http-app';

let running = 0;
let maxRunning = 0;
let workGate = deferred<void>();
let pipeGate: ReturnType<typeof deferred<void>> | undefined;

async function work(): Promise<void> {
  running++;
  maxRunning = Math.max(maxRunning, running);
  try {
    await workGate.promise;
  } finally {
    running--;
  }
}

/** An async pipe (a lookup, async validation): the first request's waits for the test. */
class SlowPipe implements PipeTransform {
  async transform(value: unknown): Promise<unknown> {
    const gate = pipeGate;
    pipeGate = undefined;
    if (gate) await gate.promise;
    return value;
  }
}

@Injectable()
class Timeout50 implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(timeout(50));
  }
}

/** A global timeout registered by a module imported before the lock module: outside the LockInterceptor. */
@Module({ providers: [{ provide: APP_INTERCEPTOR, useClass: Timeout50 }] })
class TimeoutModule {}

@Controller('ord')
class OrderingController {
  @Post(':id/pay')
  @Locked('opay:{params.id}')
  @UsePipes(SlowPipe)
  async pay(@Param('id') id: string, @Body() _body: object): Promise<object> {
    await work();
    return { id };
  }
}

@Controller('obs')
class ObservableController {
  @Post(':id/pay')
  @Locked('obs:{params.id}')
  pay(@Param('id') id: string): Observable<object> {
    // A common shape: the service returns a Promise, the handler hands Nest an Observable of it.
    return from(work().then(() => ({ id })));
  }

  @Get(':id/default')
  @Locked('def:{params.id}')
  byDefault(): string {
    return 'ok';
  }

  @Get(':id/override')
  @Locked('ovr:{params.id}', { request: { retryAfter: 2 } })
  override(): string {
    return 'ok';
  }

  @Post(':id/fallback')
  @Locked('fb:{params.id}', { onLocked: () => ({ queued: true }) })
  fallback(): object {
    return { ran: true };
  }

  @Post(':id/fallback-guarded')
  @UseGuards(LockGuard)
  @Locked('fbg:{params.id}', { onLocked: () => ({ queued: true }) })
  fallbackGuarded(): object {
    return { ran: true };
  }
}

beforeEach(() => {
  running = 0;
  maxRunning = 0;
  workGate = deferred<void>();
});

describe.each(ADAPTERS)('attack: ordering and unsubscription on %s', (adapter) => {
  it('a global timeout outside the LockInterceptor fires during an async pipe: the lock goes, then the handler runs unlocked beside the next one', async () => {
    const app = await startHttpApp(adapter, {
      imports: [
        TimeoutModule,
        DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, shutdownTimeout: 0 }),
      ],
      controllers: [OrderingController],
    });
    const locks = app.get(LockService);
    try {
      pipeGate = deferred<void>();
      const firstPipe = pipeGate;
      const first = await request(app.getHttpServer()).post('/ord/1/pay').send({});
      expect(first.status).toBe(500); // timed out while its pipe ran; its handler has not run yet
      const second = request(app.getHttpServer())
        .post('/ord/1/pay')
        .send({})
        .then((r) => r);
      await new Promise((r) => setTimeout(r, 100));
      firstPipe.resolve(); // the first request's pipe finishes: its handler runs now
      await new Promise((r) => setTimeout(r, 100));
      const concurrent = maxRunning;
      workGate.resolve();
      await second;
      expect(concurrent).toBe(1);
      await eventually(async () => !(await locks.isLocked('opay:1')));
    } finally {
      workGate.resolve();
      await app.close();
    }
  });

  describe('one app', () => {
    let app: INestApplication;
    let locks: LockService;
    beforeAll(async () => {
      app = await startHttpApp(adapter, {
        imports: [
          DistributedLockModule.forRoot({
            backends: { default: new MemoryLockBackend() },
            shutdownTimeout: 0,
            request: { busyStatus: 423, retryAfter: 9 },
          }),
        ],
        controllers: [ObservableController],
      });
      locks = app.get(LockService);
    });
    afterAll(() => app.close());

    // KNOWN LIMITATION (README, Request handlers): an Observable handler's lock ends with its subscription, and
    // Nest unsubscribes when the client leaves; from(promise) does not stop the promise. Return the Promise
    // itself, or an Observable whose teardown stops the work. Kept as a failing test so a fix shows up.
    it.failing(
      'KNOWN LIMITATION: a handler returning from(promise) loses its lock when the client leaves',
      async () => {
        const aborted = request(app.getHttpServer())
          .post('/obs/1/pay')
          .timeout(100)
          .catch((e: unknown) => e);
        await eventually(() => running === 1);
        await aborted;
        await new Promise((r) => setTimeout(r, 100));
        const held = await locks.isLocked('obs:1');
        const second = request(app.getHttpServer())
          .post('/obs/1/pay')
          .then((r) => r.status);
        await new Promise((r) => setTimeout(r, 100));
        const concurrent = maxRunning;
        workGate.resolve();
        await second;
        expect({ held, concurrent }).toEqual({ held: true, concurrent: 1 });
      },
    );

    it('module request defaults apply, and a handler overrides only what it sets', async () => {
      const a = await locks.acquire(['def:1', 'ovr:1']);
      try {
        const byDefault = await request(app.getHttpServer()).get('/obs/1/default');
        expect(byDefault.status).toBe(423);
        expect(byDefault.headers['retry-after']).toBe('9');
        const overridden = await request(app.getHttpServer()).get('/obs/1/override');
        expect(overridden.status).toBe(423);
        expect(overridden.headers['retry-after']).toBe('2');
      } finally {
        await a.release();
      }
    });

    it('onLocked as a function answers with its fallback through the interceptor, but LockGuard ignores it and answers 423', async () => {
      const a = await locks.acquire(['fb:1', 'fbg:1']);
      try {
        const plain = await request(app.getHttpServer()).post('/obs/1/fallback');
        const guarded = await request(app.getHttpServer()).post('/obs/1/fallback-guarded');
        expect(plain.body).toEqual({ queued: true });
        expect({ status: guarded.status, body: guarded.body }).toEqual({ status: plain.status, body: plain.body });
      } finally {
        await a.release();
      }
    });
  });

  it('module request options are not validated: busyStatus 200 boots, and a busy resource is answered 200', async () => {
    let app: INestApplication | undefined;
    let status: number | undefined;
    try {
      app = await startHttpApp(adapter, {
        imports: [
          DistributedLockModule.forRoot({
            backends: { default: new MemoryLockBackend() },
            shutdownTimeout: 0,
            request: { busyStatus: 200 as never },
          }),
        ],
        controllers: [ObservableController],
      });
      const locks = app.get(LockService);
      const a = await locks.acquire('def:5');
      status = (await request(app.getHttpServer()).get('/obs/5/default')).status;
      await a.release();
    } catch {
      status = undefined; // refused at bootstrap: the safe outcome
    } finally {
      await app?.close();
    }
    expect(status).toBeUndefined();
  });

  it('two apps in one process, same controller class: each holds request keys on its own store', async () => {
    const storeA = new MemoryLockBackend();
    const storeB = new MemoryLockBackend();
    const appA = await startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: storeA }, shutdownTimeout: 0 })],
      controllers: [ObservableController],
    });
    const appB = await startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: storeB }, shutdownTimeout: 0 })],
      controllers: [ObservableController],
    });
    try {
      const paying = request(appA.getHttpServer())
        .post('/obs/8/pay')
        .then((r) => r);
      await eventually(() => running === 1);
      expect(await appA.get(LockService).isLocked('obs:8')).toBe(true);
      expect(await appB.get(LockService).isLocked('obs:8')).toBe(false);
      const inB = request(appB.getHttpServer())
        .post('/obs/8/pay')
        .then((r) => r);
      await eventually(() => running === 2);
      expect(await appB.get(LockService).isLocked('obs:8')).toBe(true);
      workGate.resolve();
      expect((await paying).status).toBe(201);
      expect((await inB).status).toBe(201);
    } finally {
      workGate.resolve();
      await appA.close();
      await appB.close();
    }
  });
});
