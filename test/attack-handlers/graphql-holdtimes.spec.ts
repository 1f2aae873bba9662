import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, type INestApplication, Param, Post } from '@nestjs/common';
import { Args, GraphQLModule, Parent, Query, ResolveField, Resolver } from '@nestjs/graphql';
import request from 'supertest';
import { DistributedLockModule, LockContext, Locked, LockService, MemoryLockBackend } from '../../lib';
import { startHttpApp } from '../http/http-app';

@Resolver('Order')
class OrderResolver {
  @Query('order')
  order(@Args('id') id: string): object {
    return { id };
  }

  // A field resolver keyed by its GraphQL args: Nest runs no interceptors on field resolvers by default.
  @ResolveField('status')
  @Locked('status:{args.fresh}')
  async status(@Parent() order: { id: string }, @Args('fresh') fresh: string): Promise<string> {
    return `${order.id}:${fresh}:${LockContext.current() ? 'locked' : 'unlocked'}`;
  }
}

@Resolver('Order')
class OrderByArgumentResolver {
  @Query('order')
  order(@Args('id') id: string): object {
    return { id };
  }

  // The same field keyed by its arguments (after Nest resolved them): the method takes the lock itself.
  @ResolveField('status')
  @Locked('status:{1}')
  async status(@Parent() order: { id: string }, @Args('fresh') fresh: string): Promise<string> {
    return `${order.id}:${fresh}:${LockContext.current() ? 'locked' : 'unlocked'}`;
  }
}

const typeDefs = 'type Order { id: String! status(fresh: String!): String! } type Query { order(id: String!): Order! }';

describe('attack: a locked GraphQL field resolver', () => {
  const start = (resolver: new () => object) =>
    startHttpApp('express', {
      imports: [
        DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } }),
        GraphQLModule.forRoot<ApolloDriverConfig>({
          driver: ApolloDriver,
          typeDefs,
          context: ({ req }: { req: unknown }) => ({ req }),
        }),
      ],
      providers: [resolver],
    });

  it('a request key on a @ResolveField (where no interceptor runs) is refused at bootstrap, pointing to argument keys', async () => {
    await expect(start(OrderResolver)).rejects.toThrow(/OrderResolver\.status.*field resolver.*\{0\}, \{1\}/);
  });

  it('an argument key on a @ResolveField runs the field locked', async () => {
    const app: INestApplication = await start(OrderByArgumentResolver);
    const response = await request(app.getHttpServer())
      .post('/graphql')
      .send({ query: '{ order(id: "1") { id status(fresh: "x") } }' });
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data?.order?.status).toBe('1:x:locked');
    await app.close();
  });
});

let holdMs = 0;
@Controller('ht')
class HoldTimesController {
  @Post(':id')
  @Locked('ht:{0}', { waitTimeout: 3_000 })
  async run(@Param('id') _id: string): Promise<string> {
    await new Promise((r) => setTimeout(r, holdMs));
    return 'ok';
  }
}

describe('attack: Retry-After estimate on a handler keyed by its arguments', () => {
  it('the "hold time" recorded includes the wait for the lock: a 20 ms handler that waited 2.5 s answers Retry-After: 3', async () => {
    const app = await startHttpApp('express', {
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      controllers: [HoldTimesController],
    });
    const locks = app.get(LockService);
    try {
      holdMs = 20;
      // Someone else holds the key for 2.5 s; this request waits for it, then holds it for 20 ms.
      const other = await locks.acquire('ht:1');
      setTimeout(() => void other.release(), 2_500);
      expect((await request(app.getHttpServer()).post('/ht/1')).status).toBe(201);
      // Now a busy answer: its Retry-After should reflect the 20 ms hold (1 s), not the 2.5 s wait.
      const busy = await locks.acquire('ht:2');
      const blocked = await request(app.getHttpServer()).post('/ht/2');
      await busy.release();
      expect(blocked.status).toBe(409);
      expect(blocked.headers['retry-after']).toBe('1');
    } finally {
      await app.close();
    }
  }, 15_000);
});
