import { Injectable } from '@nestjs/common';
import { SampleDatabase } from '../database/sample-database';

export interface Order {
  readonly id: string;
  /** Epoch ms, or null while unpaid. */
  readonly paidAt: number | null;
  readonly paidWithToken: string | null;
}

interface OrderRow {
  readonly id: string;
  readonly paid_at: number | null;
  readonly paid_with_token: number | bigint | null;
}

@Injectable()
export class OrdersRepository {
  constructor(private readonly db: SampleDatabase) {}

  /** Every order id exists, unpaid until paid: the sample needs no setup step. */
  async findOrCreate(id: string): Promise<Order> {
    await this.db.change('INSERT OR IGNORE INTO orders (id) VALUES (?)', [id]);
    const [row] = await this.db.query<OrderRow>('SELECT id, paid_at, paid_with_token FROM orders WHERE id = ?', [id]);
    return toOrder(row!);
  }

  /** False if the order was paid meanwhile: the WHERE refuses a second payment even without the lock. */
  async markPaid(id: string, at: number, fencingToken: bigint): Promise<boolean> {
    const changed = await this.db.change(
      'UPDATE orders SET paid_at = ?, paid_with_token = ? WHERE id = ? AND paid_at IS NULL',
      [at, fencingToken, id],
    );
    return changed === 1;
  }
}

function toOrder(row: OrderRow): Order {
  return {
    id: row.id,
    paidAt: row.paid_at,
    paidWithToken: row.paid_with_token === null ? null : String(row.paid_with_token),
  };
}
