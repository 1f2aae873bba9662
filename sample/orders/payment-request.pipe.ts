import { BadRequestException, Injectable, type PipeTransform } from '@nestjs/common';

export interface PaymentRequest {
  readonly card: string;
}

/**
 * Validates the payment body. It runs after the order's lock is taken (the key reads the route, not the
 * body), so a second payment of a busy order is refused before its body is even looked at.
 */
@Injectable()
export class PaymentRequestPipe implements PipeTransform<unknown, PaymentRequest> {
  transform(body: unknown): PaymentRequest {
    const card = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).card : undefined;
    if (typeof card !== 'string' || !/^\d{12,19}$/.test(card)) {
      throw new BadRequestException('The body must be {"card": "<12 to 19 digits>"}.');
    }
    return { card };
  }
}
