import {
  type CallHandler,
  ConflictException,
  Controller,
  type ExecutionContext,
  Injectable,
  type INestApplication,
  type NestInterceptor,
  Param,
  Post,
  Res,
  UseInterceptors,
} from '@nestjs/common';
import { type Observable, retry } from 'rxjs';
import request from 'supertest';
import { DistributedLockModule, LockContext, Locked, LockService, MemoryLockBackend } from '../../lib';
import { ADAPTERS, eventually, startHttpApp } from '../http/http-app';

@Injectable()
class Stock {
  @Locked('stock:{0}')
  async take(sku: string): Promise<string> {
    return sku;
  }
}

@Controller('crash')
class CrashController {
  constructor(private readonly stock: Stock) {}

  // The natural way to pick your own answer: throw it from onLocked.
  @Post(':id/custom')
  @Locked('custom:{params.id}', {
    onLocked: () => {
      throw new ConflictException('order is being paid');
    },
  })
  custom(): string {
    return 'ok';
  }

  @Post(':id/custom-arg')
  @Locked('custom-arg:{0}', {
    onLocked: () => {
      throw new ConflictException('order is being paid');
    },
  })
  customArg(@Param('id') id: string): string {
    return id;
  }

  @Post(':id/bad-factory')
  @Locked('badf:{params.id}', {
    request: {
      busyException: () => {
        throw new Error('bug in my exception factory');
      },
    },
  })
  badFactory(): string {
    return 'ok';
  }

  // Streams a report; a nested locked call finds its key busy after the headers went out.
  @Post(':id/report')
  @Locked('report:{params.id}')
  async report(
    @Res({ passthrough: true }) res: { flushHeaders?: () => void; raw?: { flushHeaders(): void } },
  ): Promise<string> {
    (res.raw ?? res).flushHeaders!();
    return this.stock.take('busy-sku');
  }
}

// Jest intercepts unhandled rejections itself: it reports each one as an extra failure of the test that caused it
// (ConflictException, "bug in my exception factory", "Cannot set headers after they are sent to the client").

describe.each(ADAPTERS)('attack: crashes and hangs on %s', (adapter) => {
  let app: INestApplication;
  let locks: LockService;
  beforeAll(async () => {
    app = await startHttpApp(adapter, {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, shutdownTimeout: 0 })],
      controllers: [CrashController],
      providers: [Stock],
    });
    locks = app.get(LockService);
  });
  afterAll(() => app.close());

  /** The status, or the client's timeout message when no answer came within 1.5 s. */
  async function answerOf(path: string, busy: string): Promise<number | string> {
    const blocker = await locks.acquire(busy);
    try {
      const response = await request(app.getHttpServer()).post(path).timeout(1_500);
      return response.status;
    } catch (error) {
      return String((error as Error).message);
    } finally {
      await blocker.release();
    }
  }

  it('onLocked that throws its own exception (request key): the request hangs, the throw is an unhandled rejection', async () => {
    expect(await answerOf('/crash/1/custom', 'custom:1')).toBe(409);
  });

  it('onLocked that throws its own exception (argument key): answered with it', async () => {
    expect(await answerOf('/crash/1/custom-arg', 'custom-arg:1')).toBe(409);
  });

  it('a busyException factory that throws: the request hangs, the throw is an unhandled rejection', async () => {
    expect(await answerOf('/crash/1/bad-factory', 'badf:1')).toBe(500);
  });

  // Express only: Fastify's reply.header() does not throw once the headers are out.
  it(`a nested lock busy after the headers went out: the response still ends (Express: setting Retry-After throws, unhandled, and the request hangs)`, async () => {
    const answer = await answerOf('/crash/1/report', 'stock:busy-sku');
    // The status line is already out (200); what matters is that the response ends (Express: it never does,
    // and "Cannot set headers after they are sent" is thrown unhandled; Fastify's reply.header does not throw).
    expect(typeof answer).toBe('number');
    await eventually(async () => !(await locks.isLocked('report:1')));
  });
});

let attempts = 0;

@Injectable()
class RetryOnce implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(retry(1));
  }
}

@Controller('retry')
class RetryController {
  @Post(':id')
  @Locked('retry:{params.id}')
  @UseInterceptors(RetryOnce)
  async flaky(@Param('id') id: string): Promise<object> {
    attempts++;
    if (attempts === 1) throw new Error('transient');
    return { id, attempts, locked: LockContext.current() !== undefined };
  }
}

describe('attack: a retry interceptor on a request-keyed handler', () => {
  it('the retried call is no longer "the handler": it fails with a 400 saying it was called outside a request', async () => {
    const app = await startHttpApp('express', {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [RetryController],
    });
    try {
      attempts = 0;
      const response = await request(app.getHttpServer()).post('/retry/1');
      expect({ status: response.status, body: response.body }).toEqual({
        status: 201,
        body: { id: '1', attempts: 2, locked: true },
      });
    } finally {
      await app.close();
    }
  });
});
