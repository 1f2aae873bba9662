import { Injectable } from '@nestjs/common';
import { LockContext, Locked } from '../../lib';
import { PaymentGateway } from './payment-gateway';

export interface PaymentReceipt {
  readonly orderId: string;
  readonly fencingToken: bigint;
}

@Injectable()
export class OrdersService {
  constructor(private readonly gateway: PaymentGateway) {}

  /**
   * One payment per order at a time, across every instance sharing the lock store. waitTimeout 0: a second
   * payment for the same order fails at once (HTTP 409 + Retry-After) rather than charging twice later.
   */
  @Locked('order:{0}', { waitTimeout: 0 })
  async pay(orderId: string): Promise<PaymentReceipt> {
    // The lock is not a parameter: LockContext finds the one this call chain runs under.
    const fencingToken = LockContext.current()!.fencingToken;
    await this.gateway.charge(orderId, fencingToken);
    return { orderId, fencingToken };
  }
}
