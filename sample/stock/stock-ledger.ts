import { Injectable } from '@nestjs/common';
import { SampleDatabase } from '../database/sample-database';

export interface StockLevel {
  readonly sku: string;
  readonly quantity: number;
  /** The fencing token of the last write that was accepted, as a decimal string. */
  readonly fencingToken: string;
}

interface StockRow {
  readonly sku: string;
  readonly quantity: number;
  readonly fencing_token: number | bigint;
}

/**
 * The resource the fencing token protects. A writer whose lock expired while it was paused (GC, a slow
 * disk) may still try to write after a newer holder has: the store itself refuses a token older than the
 * last one it accepted, so the late write cannot overwrite the newer count.
 */
@Injectable()
export class StockLedger {
  constructor(private readonly db: SampleDatabase) {}

  /** True if written; false if a write with a newer (or the same) token got there first. */
  async write(sku: string, quantity: number, fencingToken: bigint): Promise<boolean> {
    const changed = await this.db.change(
      `INSERT INTO stock (sku, quantity, fencing_token) VALUES (?, ?, ?)
       ON CONFLICT (sku) DO UPDATE SET quantity = excluded.quantity, fencing_token = excluded.fencing_token
       WHERE stock.fencing_token < excluded.fencing_token`,
      [sku, quantity, fencingToken],
    );
    return changed === 1;
  }

  async find(sku: string): Promise<StockLevel | undefined> {
    const [row] = await this.db.query<StockRow>('SELECT sku, quantity, fencing_token FROM stock WHERE sku = ?', [sku]);
    return row && { sku: row.sku, quantity: row.quantity, fencingToken: String(row.fencing_token) };
  }
}
