/**
 * The waiters of one key, in arrival order. An owner that joins keeps its place across its polls; an owner
 * that only listens (it tries once and waits, without a place) is woken with whoever is first.
 */
export class WaitQueue {
  /** Owners with a place in line, first come first. Insertion order of a Set is the line. */
  private readonly places = new Set<string>();
  /** Who is waiting for a wake-up right now, by owner. */
  private readonly listeners = new Map<string, () => void>();

  get isEmpty(): boolean {
    return this.places.size === 0 && this.listeners.size === 0;
  }

  /** Adds `owner` at the end of the line unless it has a place already. */
  join(owner: string): true {
    this.places.add(owner);
    return true;
  }

  /** Takes `owner` out of the line; true if it was in it. */
  leave(owner: string): boolean {
    return this.places.delete(owner);
  }

  /** The owner at the head of the line, if any. */
  get first(): string | undefined {
    for (const first of this.places) return first;
    return undefined;
  }

  /** No one is in line, or `owner` is at its head. */
  isFirst(owner: string): boolean {
    const first = this.first;
    return first === undefined || first === owner;
  }

  isListening(owner: string): boolean {
    return this.listeners.has(owner);
  }

  listen(owner: string, wake: () => void): void {
    this.listeners.get(owner)?.();
    this.listeners.set(owner, wake);
  }

  stopListening(owner: string, wake: () => void): void {
    if (this.listeners.get(owner) === wake) this.listeners.delete(owner);
  }

  /** Wakes the head of the line if it is listening, and everyone who waits without a place. */
  wakeFirst(): void {
    const head = this.first;
    for (const [owner, wake] of [...this.listeners]) {
      if (owner === head || !this.places.has(owner)) wake();
    }
  }

  wakeAll(): void {
    for (const wake of [...this.listeners.values()]) wake();
  }
}
