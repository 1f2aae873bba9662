import { randomBytes } from 'node:crypto';

/** 128 random bits: the only proof of ownership a backend accepts for release and extend. */
export function newOwnerToken(): string {
  return randomBytes(16).toString('hex');
}
