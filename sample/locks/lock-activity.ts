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
 * What this instance's LockService has been doing, from its events$: the locks it holds now and the last
 * events. A view for humans and dashboards — never use it to decide who may work; the lock does that.
 */
@Injectable()
export class LockActivity implements OnModuleDestroy {
  private readonly held = new Map<string, HeldLockView>();
  private readonly recent: LockEventView[] = [];
  private readonly subscription: Subscription;

  constructor(locks: LockService) {
    this.subscription = locks.events$.subscribe((event) => this.record(event));
  }

  onModuleDestroy(): void {
    this.subscription.unsubscribe();
  }

  heldLocks(): HeldLockView[] {
    return [...this.held.values()];
  }

  recentEvents(): LockEventView[] {
    return [...this.recent];
  }

  private record(event: LockEvent): void {
    this.recent.push(describeEvent(event));
    if (this.recent.length > RECENT_EVENTS) this.recent.shift();
    if (event.type === 'acquired') {
      event.keys.forEach((key, i) =>
        this.held.set(key, {
          key,
          backend: event.backend,
          fencingToken: String(event.fencingTokens[i]),
          since: new Date(event.at).toISOString(),
        }),
      );
    } else if (event.type === 'released' || event.type === 'lost') {
      for (const key of event.keys) this.held.delete(key);
    }
  }
}
