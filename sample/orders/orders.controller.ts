import { Controller, HttpCode, Param, Post } from '@nestjs/common';
import { OrdersService } from './orders.service';

@Controller('orders')
export class OrdersController {
  constructor(private readonly orders: OrdersService) {}

  /** Busy orders become 409 through LockExceptionFilter; this handler only sees the happy path. */
  @Post(':id/pay')
  @HttpCode(200)
  async pay(@Param('id') id: string): Promise<{ orderId: string; fencingToken: string }> {
    const receipt = await this.orders.pay(id);
    // JSON has no bigint: send the token as a decimal string so no digits are lost.
    return { orderId: receipt.orderId, fencingToken: receipt.fencingToken.toString() };
  }
}
