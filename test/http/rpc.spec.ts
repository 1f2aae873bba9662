import { Controller, type INestMicroservice } from '@nestjs/common';
import { ClientProxyFactory, MessagePattern, Payload, type ClientProxy, Transport } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { createServer } from 'node:net';
import { firstValueFrom } from 'rxjs';
import { DistributedLockModule, LockContext, Locked, LockService, MemoryLockBackend } from '../../lib';
import { deferred } from '../support/memory-fixture';
import { eventually } from './http-app';

const gate = { open: deferred<void>(), entered: deferred<void>() };

@Controller()
class PaymentsHandler {
  @MessagePattern('pay')
  @Locked('order:{data.id}')
  async pay(@Payload() data: { id: string }): Promise<object> {
    gate.entered.resolve();
    await gate.open.promise;
    return { paid: data.id, token: LockContext.current()!.fencingToken.toString() };
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe('a locked TCP microservice message handler', () => {
  let service: INestMicroservice;
  let client: ClientProxy;

  beforeAll(async () => {
    const port = await freePort();
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [PaymentsHandler],
    }).compile();
    service = moduleRef.createNestMicroservice({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port },
      logger: false,
    });
    await service.listen();
    client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
    await client.connect();
  });
  afterAll(async () => {
    await client.close();
    await service.close();
  });

  it('takes the lock from the message data; a concurrent message gets an RpcException with the lock code', async () => {
    const first = firstValueFrom(client.send('pay', { id: '7' }));
    await gate.entered.promise;
    const second = await firstValueFrom(client.send('pay', { id: '7' })).catch((e: unknown) => e);
    expect(second).toMatchObject({ code: 'LOCK_UNAVAILABLE', resource: 'order:7' });
    gate.open.resolve();
    expect(await first).toMatchObject({ paid: '7' });
    const locks = service.get(LockService);
    await eventually(async () => !(await locks.isLocked('order:7')));
  });

  it('a message without the key field is refused naming the placeholder, and nothing runs', async () => {
    const refused = await firstValueFrom(client.send('pay', { other: 1 })).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'LOCK_BAD_KEY', message: expect.stringMatching(/\{data\.id\}/) });
  });
});
