import { Controller, Get, Inject, Param, UseFilters } from '@nestjs/common';
import { LockExceptionFilter, LockService } from '../../lib';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { type HeldLockView, LockActivity } from './lock-activity';
import type { LockEventView } from './lock-event-view';

@Controller('locks')
export class LocksController {
  constructor(
    private readonly locks: LockService,
    private readonly activity: LockActivity,
    @Inject(SAMPLE_CONFIG) private readonly config: SampleConfig,
  ) {}

  /** The locks this instance holds now and its recent lock events. */
  @Get()
  overview(): { instance: string; held: HeldLockView[]; recent: LockEventView[] } {
    return { instance: this.config.instance, held: this.activity.heldLocks(), recent: this.activity.recentEvents() };
  }

  /** Whether anyone (any instance) holds a key now, e.g. GET /locks/order:7 — a snapshot, for humans. */
  // Not a @Locked handler: LockExceptionFilter answers its lock errors (a key the client made invalid: 400).
  @Get(':key')
  @UseFilters(LockExceptionFilter)
  async status(@Param('key') key: string): Promise<{ key: string; locked: boolean }> {
    return { key, locked: await this.locks.isLocked(key) };
  }
}
