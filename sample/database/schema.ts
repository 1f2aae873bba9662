/**
 * The sample's tables. Fencing tokens are INTEGER (SQLite's is 64-bit) and bound as bigint, so the
 * comparison `token < ?` is numeric, never text.
 */
export const SCHEMA: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS orders (
     id TEXT PRIMARY KEY,
     paid_at INTEGER,
     paid_with_token INTEGER
   )`,
  // One row per charge: the proof that an order was charged once, not just marked paid once.
  `CREATE TABLE IF NOT EXISTS payments (
     order_id TEXT NOT NULL,
     fencing_token INTEGER NOT NULL,
     instance TEXT NOT NULL,
     at INTEGER NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS stock (
     sku TEXT PRIMARY KEY,
     quantity INTEGER NOT NULL,
     fencing_token INTEGER NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS job_runs (
     job TEXT NOT NULL,
     instance TEXT NOT NULL,
     fencing_token INTEGER NOT NULL,
     at INTEGER NOT NULL
   )`,
];
