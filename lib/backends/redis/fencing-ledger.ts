/**
 * The fencing token of each lock this process holds on several nodes, until its release carries it to every
 * node: the release script raises each node's counter to it, so whichever majority grants the key next —
 * it shares at least one node with ours — counts on from above it. (One node needs no ledger: its counter
 * already is the token.) Entries of locks that were never released (lost, or the core walked away) are swept
 * once they have certainly expired.
 */
export class FencingLedger {
  private readonly entries = new Map<string, { token: bigint; expiresAt: number }>();
  private sweepAt = 0;

  record(id: string, token: bigint, ttl: number): void {
    const now = Date.now();
    this.entries.set(id, { token, expiresAt: now + ttl });
    if (this.entries.size > 1024 && now >= this.sweepAt) this.sweep(now);
  }

  extended(id: string, ttl: number): void {
    const entry = this.entries.get(id);
    if (entry) entry.expiresAt = Date.now() + ttl;
  }

  /** The token to raise the counters to on release ('' if unknown), forgetting it. */
  take(id: string): string {
    const entry = this.entries.get(id);
    if (!entry) return '';
    this.entries.delete(id);
    return entry.token.toString();
  }

  private sweep(now: number): void {
    for (const [id, entry] of this.entries) if (entry.expiresAt < now) this.entries.delete(id);
    this.sweepAt = now + 1_000;
  }
}
