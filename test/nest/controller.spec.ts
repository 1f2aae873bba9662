import { Body, Controller, type INestApplication, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { DistributedLockModule, LockContext, Locked, MemoryLockBackend } from '../../lib';
import { deferred } from '../support/memory-fixture';

const gate = { current: deferred(), entered: deferred() };

@Controller('orders')
class OrdersController {
  // Route, param decorators and pipes keep working on the locked handler.
  @Post(':id/pay')
  @Locked('order:{0}')
  async pay(@Param('id', ParseIntPipe) id: number, @Body() body: { note?: string }): Promise<object> {
    gate.entered.resolve();
    await gate.current.promise;
    return { id, idType: typeof id, note: body.note ?? null, token: LockContext.current()!.fencingToken.toString() };
  }
}

describe('@Locked on a controller handler', () => {
  let app: INestApplication;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [OrdersController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.init();
  });
  afterAll(() => app.close());

  it('runs the handler under the lock with its pipes and body, and refuses a concurrent call on the key', async () => {
    gate.current = deferred();
    gate.entered = deferred();
    const first = request(app.getHttpServer())
      .post('/orders/7/pay')
      .send({ note: 'first' })
      .then((r) => r);
    await gate.entered.promise;
    // Busy: 409 with a body naming the resource and a Retry-After, with no exception filter to write.
    const second = await request(app.getHttpServer()).post('/orders/7/pay').send({});
    expect(second.status).toBe(409);
    expect(second.body).toMatchObject({ statusCode: 409, code: 'LOCK_UNAVAILABLE', resource: 'order:7' });
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    gate.current.resolve();
    const response = await first;
    expect(response.status).toBe(201);
    expect(response.body).toMatchObject({ id: 7, idType: 'number', note: 'first' });
    expect(BigInt(response.body.token)).toBeGreaterThan(0n);
  });

  it('still validates with the pipe before taking the lock', async () => {
    gate.current = deferred();
    gate.current.resolve();
    const response = await request(app.getHttpServer()).post('/orders/x/pay').send({});
    expect(response.status).toBe(400);
  });
});
