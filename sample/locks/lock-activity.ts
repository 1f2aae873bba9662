import { Injectable, type OnModuleDestroy } from '@nestjs/common';
import type { Subscription } from 'rxjs';
import { type LockEvent, LockService } from '../../lib';
import { describeEvent, type LockEventView } from './lock-event-view';

/** How many recent events GET /locks shows. */
const RECENT_EVENTS = 50;

export interface HeldLockView {
  readonly key: string;
  readonly backend: string;
  readonly fencingToken: string;
  readonly since: string;
}

/**
 * What this instance's LockService is doing: the locks it holds now (LockService.heldLocks()) and its last
 * events (from events$). A view for humans and dashboards — never use it to decide who may work; the lock does.
 */
@Injectable()
export class LockActivity implements OnModuleDestroy {
  private readonly recent: LockEventView[] = [];
  private readonly subscription: Subscription;

  constructor(private readonly locks: LockService) {
    this.subscription = locks.events$.subscribe((event) => this.record(event));
  }

  onModuleDestroy(): void {
    this.subscription.unsubscribe();
  }

  heldLocks(): HeldLockView[] {
    return this.locks.heldLocks().flatMap((lock) =>
      lock.keys.map((key, i) => ({
        key,
        backend: lock.backend,
        fencingToken: String(lock.fencingTokens[i]),
        since: new Date(lock.acquiredAt).toISOString(),
      })),
    );
  }

  recentEvents(): LockEventView[] {
    return [...this.recent];
  }

  private record(event: LockEvent): void {
    this.recent.push(describeEvent(event));
    if (this.recent.length > RECENT_EVENTS) this.recent.shift();
  }
}
