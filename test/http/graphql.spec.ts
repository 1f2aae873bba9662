import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import type { INestApplication } from '@nestjs/common';
import { Args, GraphQLModule, Mutation, Query, Resolver } from '@nestjs/graphql';
import request from 'supertest';
import { DistributedLockModule, LockContext, Locked, LockService, MemoryLockBackend } from '../../lib';
import { deferred } from '../support/memory-fixture';
import { eventually, startHttpApp } from './http-app';

const gate = { open: deferred<void>(), entered: deferred<void>() };

@Resolver()
class OrdersResolver {
  @Query(() => String)
  health(): string {
    return 'ok';
  }

  @Mutation(() => String)
  @Locked('order:{args.id}')
  async payOrder(@Args('id') id: string): Promise<string> {
    gate.entered.resolve();
    await gate.open.promise;
    return `paid ${id} with token ${LockContext.current()!.fencingToken}`;
  }
}

const typeDefs = 'type Query { health: String! } type Mutation { payOrder(id: String!): String! }';

describe('a locked GraphQL resolver', () => {
  let app: INestApplication;

  beforeAll(async () => {
    app = await startHttpApp('express', {
      imports: [
        DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } }),
        GraphQLModule.forRoot<ApolloDriverConfig>({
          driver: ApolloDriver,
          typeDefs,
          context: ({ req }: { req: unknown }) => ({ req }),
        }),
      ],
      providers: [OrdersResolver],
    });
  });
  afterAll(() => app.close());

  const pay = (id: string) =>
    request(app.getHttpServer())
      .post('/graphql')
      .send({ query: `mutation { payOrder(id: "${id}") }` })
      .then((r) => r);

  it('takes the lock from the args; a concurrent call gets a GraphQL error with the lock code', async () => {
    const first = pay('7');
    await gate.entered.promise;
    const second = await pay('7');
    expect(second.body.errors?.[0]).toMatchObject({
      message: expect.stringContaining('"order:7"'),
      extensions: { code: 'LOCK_UNAVAILABLE', resource: 'order:7' },
    });
    gate.open.resolve();
    expect((await first).body.data.payOrder).toMatch(/^paid 7 with token \d+$/);
    const locks = app.get(LockService);
    await eventually(async () => !(await locks.isLocked('order:7')));
  });
});
