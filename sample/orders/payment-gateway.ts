import { Injectable } from '@nestjs/common';

/**
 * Stands in for the slow external call a lock protects (a card charge). It takes the fencing token so the
 * "remote" side could refuse a write from a holder whose lock has since passed to someone else.
 * Tests replace this provider to decide exactly when the work ends, so they need no sleeps.
 */
@Injectable()
export class PaymentGateway {
  /** Long enough that two quick curls overlap; set SAMPLE_WORK_MS to try other timings. */
  private readonly workMs = Number(process.env.SAMPLE_WORK_MS ?? 1_000);

  async charge(_orderId: string, _fencingToken: bigint): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.workMs));
  }
}
