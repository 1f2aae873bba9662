import { Inject, Injectable } from '@nestjs/common';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { SampleDatabase } from '../database/sample-database';

/**
 * Stands in for the slow external call a lock protects (a card charge), and keeps the provider's side of it:
 * a row in `payments` per charge, which is how the tests count charges rather than trust the order's status.
 * It takes the fencing token so the "remote" side could refuse a charge from a holder whose lock has passed
 * on. Tests may replace this provider to decide exactly when the work ends, so they need no sleeps.
 */
@Injectable()
export class PaymentGateway {
  /** Long enough that two quick curls overlap; set SAMPLE_WORK_MS to try other timings. */
  private readonly workMs = Number(process.env.SAMPLE_WORK_MS ?? 1_000);

  constructor(
    private readonly db: SampleDatabase,
    @Inject(SAMPLE_CONFIG) private readonly config: SampleConfig,
  ) {}

  async charge(orderId: string, fencingToken: bigint): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.workMs));
    await this.db.change('INSERT INTO payments (order_id, fencing_token, instance, at) VALUES (?, ?, ?, ?)', [
      orderId,
      fencingToken,
      this.config.instance,
      Date.now(),
    ]);
  }
}
