import { randomFillSync } from 'node:crypto';

const TOKEN_BYTES = 16;
/** Random bytes are drawn from the CSPRNG in blocks: one call per 256 tokens instead of one per token. */
const pool = Buffer.alloc(TOKEN_BYTES * 256);
let offset = pool.length;

/** 128 random bits from node:crypto, hex: the only proof of ownership a backend accepts for release and extend. */
export function newOwnerToken(): string {
  if (offset === pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const token = pool.toString('hex', offset, offset + TOKEN_BYTES);
  offset += TOKEN_BYTES;
  return token;
}
