import { Body, Controller, Get, HttpCode, Inject, Param, Post } from '@nestjs/common';
import { LockContext, Locked } from '../../lib';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { OrderAlreadyPaidException } from './order-already-paid.exception';
import { type Order, OrdersRepository } from './orders.repository';
import { PaymentGateway } from './payment-gateway';
import { type PaymentRequest, PaymentRequestPipe } from './payment-request.pipe';

export interface PaymentReceipt {
  readonly orderId: string;
  readonly paidAt: number;
  /** A decimal string: JSON has no bigint. */
  readonly fencingToken: string;
  readonly instance: string;
}

@Controller('orders')
export class OrdersController {
  constructor(
    private readonly orders: OrdersRepository,
    private readonly gateway: PaymentGateway,
    @Inject(SAMPLE_CONFIG) private readonly config: SampleConfig,
  ) {}

  @Get(':id')
  find(@Param('id') id: string): Promise<Order> {
    return this.orders.findOrCreate(id);
  }

  /**
   * One payment per order at a time, across every instance sharing the lock store. The key reads the route,
   * so the library's interceptor takes the lock before the body pipe runs. Busy → 409 with Retry-After,
   * from the library; waitTimeout 0: a concurrent payment is refused at once rather than charged later.
   */
  @Post(':id/pay')
  @HttpCode(200)
  @Locked('order:{params.id}', { waitTimeout: 0 })
  async pay(@Param('id') id: string, @Body(PaymentRequestPipe) _payment: PaymentRequest): Promise<PaymentReceipt> {
    // The lock is not a parameter: LockContext finds the one this request runs under.
    const fencingToken = LockContext.current()!.fencingToken;
    // The lock stops two payments at once; the order's state stops a second one after the first.
    if ((await this.orders.findOrCreate(id)).paidAt !== null) throw new OrderAlreadyPaidException(id);
    await this.gateway.charge(id, fencingToken);
    const paidAt = Date.now();
    if (!(await this.orders.markPaid(id, paidAt, fencingToken))) throw new OrderAlreadyPaidException(id);
    return { orderId: id, paidAt, fencingToken: fencingToken.toString(), instance: this.config.instance };
  }
}
