import { ConflictException } from '@nestjs/common';

/** A payment of an order that is paid already: the lock was free, but the order says no. */
export class OrderAlreadyPaidException extends ConflictException {
  constructor(orderId: string) {
    super({ statusCode: 409, code: 'ORDER_ALREADY_PAID', message: `Order ${orderId} is paid already.` });
  }
}
