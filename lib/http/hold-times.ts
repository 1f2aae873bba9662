/** How many recent hold times the estimate looks at. */
const WINDOW = 32;

/**
 * The hold times a locked handler showed lately, for Retry-After: a client told to come back after the median
 * hold finds the resource free most of the time. The holder's remaining ttl is no estimate: auto-extension
 * keeps topping it up, so it would send clients away 10–30 times too long.
 */
export class HoldTimes {
  private readonly recent: number[] = [];

  record(ms: number): void {
    this.recent.push(ms);
    if (this.recent.length > WINDOW) this.recent.shift();
  }

  /** Whole seconds until a retry is likely to succeed: the median hold rounded up, at least 1. */
  retryAfterSeconds(): number {
    if (this.recent.length === 0) return 1;
    const sorted = [...this.recent].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    return Math.max(1, Math.ceil(median / 1000));
  }
}
