import { Injectable, Logger } from '@nestjs/common';
import { LockService } from '../../lib';
import { StockLedger } from './stock-ledger';

export interface RecountResult {
  readonly sku: string;
  readonly quantity: number;
  readonly fencingToken: string;
  /** False when the ledger refused the write: a newer holder had written already. */
  readonly written: boolean;
}

/** Recounts a SKU's stock under its lock and writes the count fenced by the lock's token. */
@Injectable()
export class StockRecountWorker {
  private readonly logger = new Logger(StockRecountWorker.name);

  constructor(
    private readonly locks: LockService,
    private readonly ledger: StockLedger,
  ) {}

  recount(sku: string): Promise<RecountResult> {
    return this.locks.using(
      `stock:${sku}`,
      async (lock) => {
        const quantity = await this.countShelves(sku);
        // Checked before the write, but only the fenced write is safe: the lock may still be lost right after.
        lock.signal.throwIfAborted();
        const written = await this.ledger.write(sku, quantity, lock.fencingToken);
        if (!written)
          this.logger.warn(`stock ${sku}: a newer recount wrote first; ours (token ${lock.fencingToken}) was refused`);
        return { sku, quantity, fencingToken: lock.fencingToken.toString(), written };
      },
      // A recount may wait a little for another one of the same SKU to finish.
      { waitTimeout: 5_000 },
    );
  }

  /** Stands in for counting a warehouse shelf: slow, and its answer changes over time. */
  private async countShelves(_sku: string): Promise<number> {
    await new Promise((resolve) => setTimeout(resolve, 200));
    return Math.floor(Math.random() * 100);
  }
}
