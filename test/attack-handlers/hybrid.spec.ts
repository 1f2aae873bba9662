import { Controller, type INestApplication, Logger } from '@nestjs/common';
import { ClientProxyFactory, MessagePattern, Payload, type ClientProxy, Transport } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { createServer } from 'node:net';
import { firstValueFrom } from 'rxjs';
import { DistributedLockModule, LockContext, Locked, MemoryLockBackend } from '../../lib';

@Controller()
class ShippingHandler {
  @MessagePattern('ship')
  @Locked('ship:{data.id}')
  async ship(@Payload() data: { id: string }): Promise<object> {
    return { shipped: data.id, locked: LockContext.current() !== undefined };
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

describe.each([false, true])(
  'attack: a hybrid app (HTTP + connected TCP microservice, inheritAppConfig: %s)',
  (inherit) => {
    let app: INestApplication;
    let client: ClientProxy;

    beforeAll(async () => {
      const port = await freePort();
      const moduleRef = await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
        controllers: [ShippingHandler],
      }).compile();
      app = moduleRef.createNestApplication({ logger: false });
      // The documented way to add a transport to an HTTP app; inheritAppConfig defaults to false.
      app.connectMicroservice(
        { transport: Transport.TCP, options: { host: '127.0.0.1', port } },
        { inheritAppConfig: inherit },
      );
      await app.startAllMicroservices();
      await app.init();
      client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      await client.connect();
    });
    afterAll(async () => {
      await client.close();
      await app.close();
    });

    it(
      inherit
        ? 'with inheritAppConfig a request-keyed message handler runs locked (control)'
        : 'without inheritAppConfig (the default) a request-keyed message handler never runs unlocked, and the log says to set inheritAppConfig',
      async () => {
        const logged: string[] = [];
        const spy = jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown) => {
          logged.push(String(message));
        });
        try {
          const answer = await firstValueFrom(client.send('ship', { id: '1' })).catch((e: unknown) => e);
          if (inherit) expect(answer).toEqual({ shipped: '1', locked: true });
          else {
            expect(answer).not.toMatchObject({ shipped: '1' });
            expect(logged.join('\n')).toMatch(/inheritAppConfig: true/);
          }
        } finally {
          spy.mockRestore();
        }
      },
    );
  },
);
