/**
 * A result whose lock must outlive the call that produced it — a file still streaming to the client after the
 * handler returned it. The scoped form (using, @Locked) hands `value` back at once and releases the lock only
 * when `until` settles.
 */
export class HeldUntil<T = unknown> {
  constructor(
    readonly value: T,
    readonly until: Promise<unknown>,
  ) {}
}
