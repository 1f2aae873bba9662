import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AcquireRequest, type LockEvent, LockService, MemoryLockBackend } from '../../lib';
import { AppModule } from '../../sample/app.module';
import { ReportJob } from '../../sample/jobs/report.job';
import { PaymentGateway } from '../../sample/orders/payment-gateway';
import { StockLedger } from '../../sample/stock/stock-ledger';

/**
 * The sample over HTTP. Its PaymentGateway is replaced by a gate the test opens by hand, so "the work is still
 * running" is a fact the test controls, not a timing guess: no sleeps anywhere.
 */
class GatedPayments implements Pick<PaymentGateway, 'charge'> {
  private readonly slots = new Map<string, { entered: Deferred<bigint>; done: Deferred<void> }>();

  charge(orderId: string, fencingToken: bigint): Promise<void> {
    const slot = this.slot(orderId);
    slot.entered.resolve(fencingToken);
    return slot.done.promise;
  }

  /** Resolves with the fencing token once the payment of `orderId` is under way, i.e. its lock is held. */
  entered(orderId: string): Promise<bigint> {
    return this.slot(orderId).entered.promise;
  }

  /** Lets the running payment of `orderId` finish; the next payment of that order gets a fresh gate. */
  finish(orderId: string): void {
    this.slot(orderId).done.resolve();
    this.slots.delete(orderId);
  }

  private slot(orderId: string): { entered: Deferred<bigint>; done: Deferred<void> } {
    let slot = this.slots.get(orderId);
    if (!slot) this.slots.set(orderId, (slot = { entered: deferred(), done: deferred() }));
    return slot;
  }
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

// The sample's in-process store: this test watches MemoryLockBackend's grants (the default is SQLite).
// The orders and the ledger still go to a SQLite file: a fresh one per run.
const dataDir = mkdtempSync(join(tmpdir(), 'sample-e2e-'));
process.env.LOCK_BACKEND = 'memory';
process.env.SAMPLE_DB_FILE = join(dataDir, 'sample.sqlite');

const CARD = { card: '4242424242424242' };

describe('sample app over HTTP', () => {
  const gate = new GatedPayments();
  /** What the store was asked: every key it granted, and the loss callback each grant came with. */
  const granted = new Map<string, AcquireRequest['onLost']>();
  /** Keys the app holds according to its own events: acquired and not yet released or lost. */
  const heldByEvents = new Map<string, number>();
  let eventsCompleted = false;
  let app: INestApplication | undefined;

  const server = () => app!.getHttpServer();
  const post = (orderId: string, body: object = CARD) => request(server()).post(`/orders/${orderId}/pay`).send(body);
  /** Starts a payment; supertest only sends when awaited, so turn it into a running promise at once. */
  const startPay = (orderId: string) => post(orderId).then((res) => res);
  /** A payment that completes: start it, wait until its work runs, let the work finish. */
  const payNow = async (orderId: string) => {
    const response = startPay(orderId);
    await gate.entered(orderId);
    gate.finish(orderId);
    return response;
  };
  const lockStatus = async (key: string) =>
    (
      await request(server())
        .get(`/locks/${encodeURIComponent(key)}`)
        .expect(200)
    ).body;
  const storedKeyOf = (key: string) => [...granted.keys()].find((stored) => stored.endsWith(key));

  beforeAll(async () => {
    const acquire = MemoryLockBackend.prototype.acquire;
    jest.spyOn(MemoryLockBackend.prototype, 'acquire').mockImplementation(async function (
      this: MemoryLockBackend,
      req,
    ) {
      const outcome = await acquire.call(this, req);
      if (outcome.acquired) granted.set(req.key, req.onLost);
      return outcome;
    });
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideProvider(PaymentGateway)
      .useValue(gate)
      .compile();
    app = moduleRef.createNestApplication({ logger: false });
    app.get(LockService).events$.subscribe({
      next: (event: LockEvent) => {
        const delta = event.type === 'acquired' ? 1 : event.type === 'released' || event.type === 'lost' ? -1 : 0;
        for (const key of delta === 0 ? [] : event.keys) heldByEvents.set(key, (heldByEvents.get(key) ?? 0) + delta);
      },
      complete: () => (eventsCompleted = true),
    });
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    jest.restoreAllMocks();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('pays an order under its lock and returns the fencing token as a decimal string', async () => {
    const response = startPay('1');
    const tokenSeenByWork = await gate.entered('1');
    expect(await lockStatus('order:1')).toEqual({ key: 'order:1', locked: true });
    gate.finish('1');

    const res = await response;
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ orderId: '1', fencingToken: tokenSeenByWork.toString() });
    expect(await lockStatus('order:1')).toEqual({ key: 'order:1', locked: false });
    expect((await request(server()).get('/orders/1').expect(200)).body).toEqual({
      id: '1',
      paidAt: res.body.paidAt,
      paidWithToken: tokenSeenByWork.toString(),
    });
  });

  it('answers 409 with Retry-After to a second payment while the first runs, and 409 once the order is paid', async () => {
    const first = startPay('7');
    await gate.entered('7');

    const second = await post('7');
    expect(second.status).toBe(409);
    expect(second.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    expect(second.body).toMatchObject({ statusCode: 409, code: 'LOCK_UNAVAILABLE', resource: 'order:7' });

    gate.finish('7');
    expect((await first).status).toBe(200);
    // The lock is free now, but the order refuses a second payment.
    const third = await post('7');
    expect(third.status).toBe(409);
    expect(third.body).toMatchObject({ code: 'ORDER_ALREADY_PAID' });
  });

  it('takes the lock before the body is validated: a bad body for a busy order gets 409, for a free one 400', async () => {
    const first = startPay('9');
    await gate.entered('9');
    expect((await post('9', { card: 'nope' })).status).toBe(409);
    gate.finish('9');
    expect((await first).status).toBe(200);
    expect((await post('10', { card: 'nope' })).status).toBe(400);
  });

  it('shows the locks this instance holds and its recent events, tokens as strings', async () => {
    const response = startPay('12');
    const token = await gate.entered('12');
    const during = (await request(server()).get('/locks').expect(200)).body;
    expect(during.held).toContainEqual(expect.objectContaining({ key: 'order:12', fencingToken: token.toString() }));
    gate.finish('12');
    await response;

    const after = (await request(server()).get('/locks').expect(200)).body;
    expect(after.held).not.toContainEqual(expect.objectContaining({ key: 'order:12' }));
    const types = after.recent
      .filter((e: { keys: string[] }) => e.keys.includes('order:12'))
      .map((e: { type: string }) => e.type);
    expect(types).toEqual(['acquired', 'released']);
  });

  it('does not let a running payment of one order block another order', async () => {
    const first = startPay('21');
    await gate.entered('21');

    const second = startPay('22');
    // If order 22 were blocked it would answer 409 without ever starting its work.
    await Promise.race([
      gate.entered('22'),
      second.then((res) => Promise.reject(new Error(`order 22 answered ${res.status} before its work started`))),
    ]);
    gate.finish('22');
    gate.finish('21');
    expect([(await first).status, (await second).status]).toEqual([200, 200]);
  });

  it('gives each recount a greater fencing token, and the ledger refuses a write with an older one', async () => {
    const tokens: bigint[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await request(server()).post('/stock/apple/recount').expect(201);
      expect(res.body).toMatchObject({ sku: 'apple', written: true });
      tokens.push(BigInt(res.body.fencingToken));
    }
    expect(tokens[1]! > tokens[0]!).toBe(true);
    expect(tokens[2]! > tokens[1]!).toBe(true);

    const latest = (await request(server()).get('/stock/apple').expect(200)).body;
    // A holder whose lock passed on, writing late with the token it had.
    expect(await app!.get(StockLedger).write('apple', -1, tokens[1]!)).toBe(false);
    expect((await request(server()).get('/stock/apple').expect(200)).body).toEqual(latest);
  });

  it('answers 503 when the lock is lost while the payment runs', async () => {
    const response = startPay('40');
    await gate.entered('40');
    // What a backend does when it learns the lock is gone (session expired, key deleted behind our back).
    granted.get(storedKeyOf('order:40')!)!('simulated loss in the store');
    gate.finish('40');

    const res = await response;
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ statusCode: 503, code: 'LOCK_LOST', resource: 'order:40' });
    expect(res.headers['retry-after']).toBeUndefined();
  });

  it('runs the report job once and skips a second run while minHold keeps its key', async () => {
    const job = app!.get(ReportJob);
    const first = await job.run();
    expect(first).toEqual({ instance: expect.any(String), fencingToken: expect.any(BigInt), at: expect.any(Number) });
    expect(await lockStatus('jobs:report')).toMatchObject({ locked: true });
    expect(await job.run()).toBeUndefined();
    const runs = (await request(server()).get('/jobs/report/runs').expect(200)).body;
    expect(runs).toEqual([
      { instance: first!.instance, fencingToken: first!.fencingToken.toString(), at: expect.any(String) },
    ]);
  });

  it('answers 400, saying what was wrong, for a key the request made invalid', async () => {
    const response = await request(server()).get(`/locks/${'k'.repeat(1_025)}`);
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ code: 'LOCK_BAD_KEY' });
    expect(response.body.message).toMatch(/at most 1024 characters/);
  });

  // Last: it closes the app the tests above share (the sample's backend is created once, with the module).
  it('releases every lock the app holds when it closes', async () => {
    const locks = app!.get(LockService);
    await payNow('50');
    // A holder that never lets go: only the shutdown can release it.
    const stuck = await locks.acquire('order:51');
    expect((await post('51')).status).toBe(409);

    const close = MemoryLockBackend.prototype.close;
    let heldWhenBackendClosed: Record<string, boolean> | undefined;
    jest.spyOn(MemoryLockBackend.prototype, 'close').mockImplementation(async function (this: MemoryLockBackend) {
      // Looked at just before the store is closed (and its memory dropped): the app must have freed the keys.
      const orderKeys = [...granted.keys()].filter((stored) => stored.includes('order:'));
      const held = await Promise.all(orderKeys.map(async (k) => [k, await this.isLocked(k)] as const));
      heldWhenBackendClosed = Object.fromEntries(held);
      return close.call(this);
    });

    await app!.close();
    app = undefined;

    expect(heldWhenBackendClosed).toBeDefined();
    expect(Object.keys(heldWhenBackendClosed!)).toEqual(
      expect.arrayContaining([storedKeyOf('order:50'), storedKeyOf('order:51')]),
    );
    expect(Object.entries(heldWhenBackendClosed!).filter(([, held]) => held)).toEqual([]);
    expect(stuck.isHeld).toBe(false);
    // Every acquisition was matched by a release or a loss (minHold keys included: their release is reported too).
    expect([...heldByEvents].filter(([, count]) => count !== 0)).toEqual([]);
    expect(eventsCompleted).toBe(true);
  });
});
